"""Exercise 2, solution: the GDN-2 gates of KDA and Gated DeltaNet, and the erase-free output.

    KDA: b = β·1_K, w = β·1_V;   Gated DeltaNet: also g = log(α)·1_K
    b = 0: o_t = Σ_{s≤t} (scale Σ_d q_td k_sd exp(G_td − G_sd)) (w_s⊙v_s),  G_t = Σ_{i≤t} g_i
"""

import torch
from jaxtyping import Float
from torch import Tensor


def kda_gates(
    beta: Float[Tensor, "B T H"], K: int, V: int
) -> tuple[Float[Tensor, "B T H K"], Float[Tensor, "B T H V"]]:
    """KDA's (b, w): one β per head and token, repeated along each gate's axis."""
    return beta[..., None].expand(*beta.shape, K), beta[..., None].expand(*beta.shape, V)


def gated_deltanet_gates(
    alpha: Float[Tensor, "B T H"], beta: Float[Tensor, "B T H"], K: int, V: int
) -> tuple[Float[Tensor, "B T H K"], Float[Tensor, "B T H K"], Float[Tensor, "B T H V"]]:
    """Gated DeltaNet's (g, b, w): the log of its scalar decay on every key channel, and KDA's gates."""
    b, w = kda_gates(beta, K, V)
    return torch.log(alpha)[..., None].expand(*alpha.shape, K), b, w


def erase_free_output(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T H V"],
    g: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T H V"],
    scale: float,
) -> Float[Tensor, "B T H V"]:
    """The output of the recurrence with b = 0, in its parallel (masked-attention) form."""
    T = q.shape[1]
    G = g.cumsum(1)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()[:, :, None, None]      # s ≤ t
    diff = torch.where(causal, G[:, :, None] - G[:, None, :], float("-inf"))                  # [B, T, T, H, K]
    scores = scale * torch.einsum("bthd,bshd,btshd->btsh", q, k, torch.exp(diff))
    return torch.einsum("btsh,bshv->bthv", scores, w * v)
