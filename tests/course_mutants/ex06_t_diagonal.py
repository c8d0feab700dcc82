"""Exercise 6, a typical wrong answer: T with its diagonal (an off-by-one in the causal mask)."""

import torch

from gdn2.course.solutions.ex06_intra import solve_unit_lower  # noqa: F401

DIAGNOSIS = "t-includes-diagonal"


def intra_t(k, b, G):
    C = k.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool).tril()
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    return torch.einsum("...rd,...sd,...rsd->...rs", b * k, k, torch.exp(diff))
