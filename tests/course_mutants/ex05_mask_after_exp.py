"""Exercise 5, a typical wrong answer: the mask applied after exp, whose gradient is 0·inf = nan."""

import torch

from gdn2.course.solutions.ex05_decay import local_cumsum  # noqa: F401

DIAGNOSIS = "mask-after-exp"


def pairwise_decay(G, strict):
    C = G.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool).tril(-1 if strict else 0)
    decay = torch.exp(G[..., :, None, :] - G[..., None, :, :])
    return torch.where(causal[:, :, None], decay, torch.zeros_like(decay))
