"""Exercise 3, a typical wrong answer: the inner-product term of the fast-weight loss with a plus sign."""

import torch

from gdn2.course.solutions.ex03_fast_weight import minimise  # noqa: F401

DIAGNOSIS = "inner-product-sign"


def fast_weight_loss(S, S_prev, k, v, g, b, w):
    S_bar = torch.exp(g)[..., None] * S_prev
    target = w * v - torch.einsum("nhkv,nhk->nhv", S_bar, b * k)
    return (S - S_bar).pow(2).sum((-2, -1)) + 2 * torch.einsum("nhkv,nhk,nhv->nh", S, k, target)
