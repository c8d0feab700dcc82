"""Exercise 3: the update of exercise 1 minimises a fast-weight objective; show it numerically.

    L_t(S) = ‖S − S̄_t‖²_F − 2⟨Sᵀk_t, z_t − S̄_tᵀe_t⟩

with e_t = b_t⊙k_t, z_t = w_t⊙v_t and S̄_t = Diag(exp g_t) S_{t-1}.

Grade it with ``gdn2 course grade DIR 3``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def fast_weight_loss(
    S: Float[Tensor, "N HV K V"],
    S_prev: Float[Tensor, "N HV K V"],
    k: Float[Tensor, "N HV K"],
    v: Float[Tensor, "N HV V"],
    g: Float[Tensor, "N HV K"],
    b: Float[Tensor, "N HV K"],
    w: Float[Tensor, "N HV V"],
) -> Float[Tensor, "N HV"]:
    """Return L_t(S), one number per sequence and value head (differentiable in S)."""
    raise NotImplementedError


def minimise(
    S_prev: Float[Tensor, "N HV K V"],
    k: Float[Tensor, "N HV K"],
    v: Float[Tensor, "N HV V"],
    g: Float[Tensor, "N HV K"],
    b: Float[Tensor, "N HV K"],
    w: Float[Tensor, "N HV V"],
) -> Float[Tensor, "N HV K V"]:
    """Minimise your fast_weight_loss numerically (autograd, gradient steps); return the minimiser.

    Do not write the closed form S_t: the point is to find that the optimiser lands on it.
    """
    raise NotImplementedError
