"""Exercise 10, solution: the gate-aware backward of the WY stage.

    A = (I + T)⁻¹,  Y = A Ē (Ē = γ⊙B⊙K),  U = A Z (Z = W⊙V)
    dA = dU Zᵀ + dY Ēᵀ,  dT = −strict_lower(Aᵀ dA Aᵀ),  dZ = Aᵀ dU,  dĒ = Aᵀ dY
"""

import torch
from jaxtyping import Float
from torch import Tensor


def wy_backward(
    T: Float[Tensor, "N H C C"],
    k: Float[Tensor, "N H C K"],
    b: Float[Tensor, "N H C K"],
    G: Float[Tensor, "N H C K"],
    v: Float[Tensor, "N H C V"],
    w: Float[Tensor, "N H C V"],
    dY: Float[Tensor, "N H C K"],
    dU: Float[Tensor, "N H C V"],
) -> tuple[
    Float[Tensor, "N H C C"],
    Float[Tensor, "N H C K"],
    Float[Tensor, "N H C K"],
    Float[Tensor, "N H C K"],
    Float[Tensor, "N H C V"],
    Float[Tensor, "N H C V"],
]:
    """(dT, dk, db, dG, dv, dw) of ⟨Y, dY⟩ + ⟨U, dU⟩."""
    C = T.shape[-1]
    eye = torch.eye(C, dtype=T.dtype, device=T.device).expand(T.shape)
    A = torch.linalg.solve_triangular(eye + T, eye, upper=False, unitriangular=True)
    At = A.transpose(-1, -2)
    gamma = torch.exp(G)
    E, Z = gamma * b * k, w * v
    dA = dU @ Z.transpose(-1, -2) + dY @ E.transpose(-1, -2)          # both sides of the shared inverse
    dT = -(At @ dA @ At).tril(-1)                                      # δA = −A δT A; T is strictly lower
    dZ, dE = At @ dU, At @ dY
    return dT, dE * gamma * b, dE * gamma * k, dE * E, dZ * w, dZ * v
