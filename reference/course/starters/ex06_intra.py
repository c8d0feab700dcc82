"""Exercise 6: the intra-chunk matrix T, and A = (I + T)⁻¹ by forward substitution.

    T_rs = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd)  for r > s, else 0
    A = (I + T)⁻¹:   A_r = e_r − Σ_{s<r} T_rs A_s   (row r of A from the rows s < r)

Grade it with ``gdn2 course grade DIR 6``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def intra_t(
    k: Float[Tensor, "*lead C K"], b: Float[Tensor, "*lead C K"], G: Float[Tensor, "*lead C K"]
) -> Float[Tensor, "*lead C C"]:
    """Return T (strictly lower triangular), finite for any G = local cumsum of g ≤ 0."""
    raise NotImplementedError


def solve_unit_lower(T: Float[Tensor, "*lead C C"]) -> Float[Tensor, "*lead C C"]:
    """Return (I + T)⁻¹ for a strictly lower T, by forward substitution (not torch.linalg)."""
    raise NotImplementedError
