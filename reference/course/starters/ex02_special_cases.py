"""Exercise 2: tied gates recover KDA and Gated DeltaNet; without the erase (b = 0) the output is
masked attention.

    KDA:            b_t = β_t·1_K,  w_t = β_t·1_V
    Gated DeltaNet: as KDA, and g_t = log(α_t)·1_K
    b = 0:          o_t = Σ_{s≤t} (scale Σ_d q_td k_sd exp(G_td − G_sd)) (w_s ⊙ v_s)
                    with G_t = Σ_{i≤t} g_i

Grade it with ``gdn2 course grade DIR 2``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def kda_gates(
    beta: Float[Tensor, "B T H"], K: int, V: int
) -> tuple[Float[Tensor, "B T H K"], Float[Tensor, "B T H V"]]:
    """Return KDA's (b, w): one β per head and token, on every channel of each gate's axis."""
    raise NotImplementedError


def gated_deltanet_gates(
    alpha: Float[Tensor, "B T H"], beta: Float[Tensor, "B T H"], K: int, V: int
) -> tuple[Float[Tensor, "B T H K"], Float[Tensor, "B T H K"], Float[Tensor, "B T H V"]]:
    """Return Gated DeltaNet's (g, b, w): α in (0, 1] is its decay, one per head and token."""
    raise NotImplementedError


def erase_free_output(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T H V"],
    g: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T H V"],
    scale: float,
) -> Float[Tensor, "B T H V"]:
    """Return the output of the recurrence with b = 0, without a loop over tokens.

    Form every exponent G_td − G_sd first, set it to −inf where s > t, then take exp.
    """
    raise NotImplementedError
