"""Exercise 7, solution: the WY auxiliaries.

    Y = A Ē,  Ē = γ⊙B⊙K,  γ_r = exp(G_r)   (erase side);   U = A Z,  Z = W⊙V   (write side)
"""

import torch
from jaxtyping import Float
from torch import Tensor


def wy(
    A: Float[Tensor, "N H NC C C"],
    k: Float[Tensor, "N H NC C K"],
    b: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    v: Float[Tensor, "N H Gr NC C V"],
    w: Float[Tensor, "N H Gr NC C V"],
) -> tuple[Float[Tensor, "N H NC C K"], Float[Tensor, "N H Gr NC C V"]]:
    """Y and U through the one inverse A; A is shared by the Gr value heads of a key head."""
    Y = A @ (torch.exp(G) * b * k)
    U = A[:, :, None] @ (w * v)
    return Y, U
