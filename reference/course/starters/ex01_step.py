"""Exercise 1: one recurrent step of Gated DeltaNet-2 and its output.

    S̄_t = Diag(exp(g_t)) S_{t-1}          decay every key row of the state
    r_t = S̄_tᵀ (b_t ⊙ k_t)                 read along the erase direction e_t = b_t ⊙ k_t
    S_t = S̄_t + k_t (w_t ⊙ v_t − r_t)ᵀ     write the gated value minus what was read
    o_t = S_tᵀ (scale · q_t)               read the new state with the query

Grade it with ``gdn2 course grade DIR 1``.
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
    """One token for every sequence n and value head: return (o_t, S_t).

    S is the state before the token, key-major (S[n, h, d, :] is the row of key channel d).
    g is the log-decay (≤ 0) and b the erase gate, both on the key axis; w is the write gate on
    the value axis. Return new tensors: the caller keeps S.
    """
    raise NotImplementedError
