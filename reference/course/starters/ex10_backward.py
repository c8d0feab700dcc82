"""Exercise 10: the gate-aware backward of the WY stage (T is an input of this stage).

    forward:   A = (I + T)⁻¹,   Y = A Ē,  Ē = γ⊙B⊙K,  γ = exp(G),   U = A Z,  Z = W⊙V
    backward:  given dY = ∂L/∂Y and dU = ∂L/∂U, return the gradients
               of L with respect to T, k, b, G, v and w

Start from δA = −A δT A (differentiate A (I + T) = I).
Grade it with ``gdn2 course grade DIR 10``.
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
    """Return (dT, dk, db, dG, dv, dw) by hand: it is graded under torch.no_grad().

    T is strictly lower triangular, and so must dT be.
    """
    raise NotImplementedError
