"""Exercise 3, solution: the fast-weight objective and its numerical minimiser.

    L_t(S) = ‖S − S̄_t‖²_F − 2⟨Sᵀk_t, z_t − S̄_tᵀe_t⟩,   e_t = b_t⊙k_t,  z_t = w_t⊙v_t
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
    """L_t(S) for every sequence and value head."""
    S_bar = torch.exp(g)[..., None] * S_prev
    target = w * v - torch.einsum("nhkv,nhk->nhv", S_bar, b * k)                 # z − S̄ᵀe
    return (S - S_bar).pow(2).sum((-2, -1)) - 2 * torch.einsum("nhkv,nhk,nhv->nh", S, k, target)


def minimise(
    S_prev: Float[Tensor, "N HV K V"],
    k: Float[Tensor, "N HV K"],
    v: Float[Tensor, "N HV V"],
    g: Float[Tensor, "N HV K"],
    b: Float[Tensor, "N HV K"],
    w: Float[Tensor, "N HV V"],
) -> Float[Tensor, "N HV K V"]:
    """Gradient descent on L_t from S̄. The Hessian is 2I, so a step of 1/2 is Newton's step: the first
    lands on the minimiser and the second finds a zero gradient."""
    S = (torch.exp(g)[..., None] * S_prev).requires_grad_()
    for _ in range(2):
        (grad,) = torch.autograd.grad(fast_weight_loss(S, S_prev, k, v, g, b, w).sum(), S)
        S = (S - 0.5 * grad).detach().requires_grad_()
    return S.detach()
