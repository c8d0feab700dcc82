"""Exercise 1, a typical wrong answer: the decay applied after the write instead of before the read."""

import torch

DIAGNOSIS = "decay-after-write"


def step(S, q, k, v, g, b, w, scale):
    r = torch.einsum("nhkv,nhk->nhv", S, b * k)
    S_new = torch.exp(g)[..., :, None] * (S + k[..., :, None] * (w * v - r)[..., None, :])
    return torch.einsum("nhkv,nhk->nhv", S_new, scale * q), S_new
