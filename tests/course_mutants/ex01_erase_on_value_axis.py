"""Exercise 1, a typical wrong answer: the erase gated on the value axis, w⊙(v − S̄ᵀk), as KDA's β(v − S̄ᵀk)."""

import torch

DIAGNOSIS = "erase-on-value-axis"


def step(S, q, k, v, g, b, w, scale):
    S_bar = torch.exp(g)[..., :, None] * S
    r = torch.einsum("nhkv,nhk->nhv", S_bar, k)
    S_new = S_bar + k[..., :, None] * (w * (v - r))[..., None, :]
    return torch.einsum("nhkv,nhk->nhv", S_new, scale * q), S_new
