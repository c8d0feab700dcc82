"""Exercise 6, solution: the intra-chunk matrix T and A = (I + T)⁻¹ by forward substitution.

    T_rs = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd)  for r > s, else 0;   A_r = e_r − Σ_{s<r} T_rs A_s
"""

import torch
from jaxtyping import Float
from torch import Tensor


def intra_t(
    k: Float[Tensor, "*lead C K"], b: Float[Tensor, "*lead C K"], G: Float[Tensor, "*lead C K"]
) -> Float[Tensor, "*lead C C"]:
    """T with the pairwise exponents masked to −inf on and above the diagonal before exp."""
    C = k.shape[-2]
    below = torch.ones(C, C, dtype=torch.bool, device=k.device).tril(-1)
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~below[:, :, None], float("-inf"))
    return torch.einsum("...rd,...sd,...rsd->...rs", b * k, k, torch.exp(diff))


def solve_unit_lower(T: Float[Tensor, "*lead C C"]) -> Float[Tensor, "*lead C C"]:
    """(I + T)⁻¹ for strictly lower T, one row at a time from the rows already solved."""
    C = T.shape[-1]
    eye = torch.eye(C, dtype=T.dtype, device=T.device).expand(T.shape)
    rows = [eye[..., 0, :]]
    for r in range(1, C):
        solved = torch.stack(rows, dim=-2)                                      # rows 0..r-1, [..., r, C]
        rows.append(eye[..., r, :] - torch.einsum("...s,...sc->...c", T[..., r, :r], solved))
    return torch.stack(rows, dim=-2)
