"""Exercise 4: when can the state blow up? The transition of one step, its eigenvalue, its norm.

    S_t = M_t S_{t-1} + k_t z_tᵀ,   M_t = (I − k_t e_tᵀ) Diag(exp g_t),   e_t = b_t⊙k_t

Grade it with ``gdn2 course grade DIR 4``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def transition(
    k: Float[Tensor, "N HV K"], g: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]
) -> Float[Tensor, "N HV K K"]:
    """Return M_t, the matrix that multiplies S_{t-1} in the update."""
    raise NotImplementedError


def erase_eigenvalue(
    k: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]
) -> Float[Tensor, "N HV"]:
    """Return the eigenvalue of I − k eᵀ whose eigenvector is k (the others are 1)."""
    raise NotImplementedError


def transition_norm(
    k: Float[Tensor, "N HV K"], g: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]
) -> Float[Tensor, "N HV"]:
    """Return ‖M_t‖₂, the most one step can multiply the size of the state by."""
    raise NotImplementedError
