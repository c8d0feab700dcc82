"""Exercise 7: the WY auxiliaries, one inverse A = (I + T)⁻¹ for the erase and the write side.

    Y = A Ē,  Ē = γ⊙B⊙K,  γ_r = exp(G_r)   (erase side)
    U = A Z,  Z = W⊙V                      (write side)

Grade it with ``gdn2 course grade DIR 7``.
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
    """Return (Y, U) for every chunk.

    Key-side tensors have no group axis; the value side has Gr = HV/H value heads per key head.
    """
    raise NotImplementedError
