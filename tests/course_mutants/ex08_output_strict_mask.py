"""Exercise 8, a typical wrong answer: the output's q·k scores with a strict causal mask (r > s)."""

import torch

from gdn2.course.solutions.ex08_chunk import state_passing  # noqa: F401

DIAGNOSIS = "causal-mask-off-by-one"


def chunk_output(q, k, G, S0, R, scale):
    C = q.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool).tril(-1)
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, torch.exp(diff))
    return (scale * torch.exp(G) * q)[:, :, None] @ S0 + A_qk[:, :, None] @ R
