"""Exercise 5, a typical wrong answer: exp(G_r)·exp(−G_s), which overflows once −G is large."""

import torch

from gdn2.course.solutions.ex05_decay import local_cumsum  # noqa: F401

DIAGNOSIS = "overflow"


def pairwise_decay(G, strict):
    C = G.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool).tril(-1 if strict else 0)
    return (torch.exp(G)[..., :, None, :] * torch.exp(-G)[..., None, :, :]) * causal[:, :, None]
