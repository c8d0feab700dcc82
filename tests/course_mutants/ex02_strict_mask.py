"""Exercise 2, a typical wrong answer: the causal mask of the erase-free form leaves out the diagonal (s < t)."""

import torch

from gdn2.course.solutions.ex02_special_cases import gated_deltanet_gates, kda_gates  # noqa: F401

DIAGNOSIS = "causal-mask-off-by-one"


def erase_free_output(q, k, v, g, w, scale):
    T = q.shape[1]
    G = g.cumsum(1)
    causal = torch.ones(T, T, dtype=torch.bool).tril(-1)[:, :, None, None]
    diff = torch.where(causal, G[:, :, None] - G[:, None, :], float("-inf"))
    scores = scale * torch.einsum("bthd,bshd,btshd->btsh", q, k, torch.exp(diff))
    return torch.einsum("btsh,bshv->bthv", scores, w * v)
