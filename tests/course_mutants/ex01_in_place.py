"""Exercise 1, a typical wrong answer: the state decayed in place, which changes the caller's S_{t-1}."""

import torch

DIAGNOSIS = "in-place"


def step(S, q, k, v, g, b, w, scale):
    S.mul_(torch.exp(g)[..., :, None])
    r = torch.einsum("nhkv,nhk->nhv", S, b * k)
    S_new = S + k[..., :, None] * (w * v - r)[..., None, :]
    return torch.einsum("nhkv,nhk->nhv", S_new, scale * q), S_new
