"""Exercise 4, solution: the transition of one step, its eigenvalue along k, and its spectral norm.

    S_t = M_t S_{t-1} + k_t z_tᵀ,   M_t = (I − k_t e_tᵀ) Diag(exp g_t),   e_t = b_t⊙k_t
"""

import torch
from jaxtyping import Float
from torch import Tensor


def transition(
    k: Float[Tensor, "N HV K"], g: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]
) -> Float[Tensor, "N HV K K"]:
    """M = (I − k eᵀ) Diag(α): the decay acts first, so it is the right factor."""
    eye = torch.eye(k.shape[-1], dtype=k.dtype, device=k.device)
    return (eye - k[..., :, None] * (b * k)[..., None, :]) * torch.exp(g)[..., None, :]


def erase_eigenvalue(k: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]) -> Float[Tensor, "N HV"]:
    """(I − k eᵀ) k = (1 − eᵀk) k: the eigenvalue along k is 1 − Σ_d b_d k_d²."""
    return 1 - (b * k * k).sum(-1)


def transition_norm(
    k: Float[Tensor, "N HV K"], g: Float[Tensor, "N HV K"], b: Float[Tensor, "N HV K"]
) -> Float[Tensor, "N HV"]:
    """‖M‖₂, the largest singular value (not the largest |eigenvalue|: M is not symmetric)."""
    return torch.linalg.matrix_norm(transition(k, g, b), ord=2)
