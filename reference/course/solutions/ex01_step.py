"""Exercise 1, solution: one recurrent step of Gated DeltaNet-2 and its output.

    S̄_t = Diag(exp(g_t)) S_{t-1},  r_t = S̄_tᵀ(b_t⊙k_t),  S_t = S̄_t + k_t(w_t⊙v_t − r_t)ᵀ,  o_t = S_tᵀ(scale·q_t)
"""

import torch
from jaxtyping import Float
from torch import Tensor


def step(
    S: Float[Tensor, "N HV K V"],
    q: Float[Tensor, "N HV K"],
    k: Float[Tensor, "N HV K"],
    v: Float[Tensor, "N HV V"],
    g: Float[Tensor, "N HV K"],
    b: Float[Tensor, "N HV K"],
    w: Float[Tensor, "N HV V"],
    scale: float,
) -> tuple[Float[Tensor, "N HV V"], Float[Tensor, "N HV K V"]]:
    """One token for every sequence and value head: returns (o_t, S_t)."""
    S_bar = torch.exp(g)[..., :, None] * S                          # decay each key row first
    r = torch.einsum("nhkv,nhk->nhv", S_bar, b * k)                 # read along e = b⊙k
    S_new = S_bar + k[..., :, None] * (w * v - r)[..., None, :]     # write k (z − r)ᵀ
    o = torch.einsum("nhkv,nhk->nhv", S_new, scale * q)             # read out the new state
    return o, S_new
