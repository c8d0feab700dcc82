"""Exercise 8: state passing across chunks, and the output of each chunk.

    (4)  R = U − Y S_0,   S_C = Diag(γ_C) S_0 + K_tailᵀ R
         with K_tail = exp(G_C − G)⊙K and γ_C = exp(G_C)
    (5)  O = (scale·γ⊙Q) S_0 + A_qk R
         with A_qk_rs = scale Σ_d q_rd k_sd exp(G_rd − G_sd) for r ≥ s, else 0

Grade it with ``gdn2 course grade DIR 8``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def state_passing(
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    Y: Float[Tensor, "N H NC C K"],
    U: Float[Tensor, "N H Gr NC C V"],
    h0: Float[Tensor, "N H Gr K V"],
) -> tuple[
    Float[Tensor, "N H Gr NC K V"], Float[Tensor, "N H Gr NC C V"], Float[Tensor, "N H Gr K V"]
]:
    """Return (S0, R, ht): each chunk's start state, its residual writes R, and the final state."""
    raise NotImplementedError


def chunk_output(
    q: Float[Tensor, "N H NC C K"],
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    S0: Float[Tensor, "N H Gr NC K V"],
    R: Float[Tensor, "N H Gr NC C V"],
    scale: float,
) -> Float[Tensor, "N H Gr NC C V"]:
    """Return the output O of every chunk."""
    raise NotImplementedError
