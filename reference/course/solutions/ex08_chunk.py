"""Exercise 8, solution: state passing across chunks, and the chunk output.

    (4)  R = U − Y S_0,   S_C = Diag(γ_C) S_0 + K_tailᵀ R,   K_tail = exp(G_C − G)⊙K
    (5)  O = (scale·γ⊙Q) S_0 + A_qk R,   A_qk_rs = scale Σ_d q_rd k_sd exp(G_rd − G_sd) for r ≥ s
"""

import torch
from jaxtyping import Float
from torch import Tensor


def state_passing(
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    Y: Float[Tensor, "N H NC C K"],
    U: Float[Tensor, "N H Gr NC C V"],
    h0: Float[Tensor, "N H Gr K V"],
) -> tuple[Float[Tensor, "N H Gr NC K V"], Float[Tensor, "N H Gr NC C V"], Float[Tensor, "N H Gr K V"]]:
    """The start state and residual writes of every chunk, and the final state."""
    gamma_C = torch.exp(G[:, :, :, -1])                                 # [N, H, NC, K]
    k_tail = torch.exp(G[:, :, :, -1:] - G) * k                         # exponents ≤ 0
    S, starts, residuals = h0, [], []
    for n in range(k.shape[2]):
        starts.append(S)
        R = U[:, :, :, n] - Y[:, :, None, n] @ S                        # [N, H, Gr, C, V]
        residuals.append(R)
        S = gamma_C[:, :, None, n, :, None] * S + k_tail[:, :, None, n].transpose(-1, -2) @ R
    return torch.stack(starts, dim=3), torch.stack(residuals, dim=3), S


def chunk_output(
    q: Float[Tensor, "N H NC C K"],
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    S0: Float[Tensor, "N H Gr NC K V"],
    R: Float[Tensor, "N H Gr NC C V"],
    scale: float,
) -> Float[Tensor, "N H Gr NC C V"]:
    """The start state read by the decayed query, plus the chunk's own writes through causal scores."""
    C = q.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    diff = (G[..., :, None, :] - G[..., None, :, :]).masked_fill(~causal[:, :, None], float("-inf"))
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, torch.exp(diff))
    return (scale * torch.exp(G) * q)[:, :, None] @ S0 + A_qk[:, :, None] @ R
