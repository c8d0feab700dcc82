"""The gate-aware chunkwise backward (paper appendix B), written stage by stage.

Given dO and the final-state gradient dS_N, walk the chunks backwards for the start-state
gradients (the KDA state path), then form every local gradient of a chunk at once. The part that
is new in GDN-2 is the accumulation through the shared WY inverse with the gates inside the products:

    dA = dU Zᵀ + dY Ēᵀ   (Z = W⊙V, Ē = γ⊙B⊙K),   dT = −strict_lower(Aᵀ dA Aᵀ)

A scalar post-scale of dA would be wrong unless b and w are tied (b = w = β·1, KDA). The
cumulative-decay gradient dG is returned to g by a reverse cumulative sum inside each chunk. The
autograd Function that runs these stages is ``gdn2.ops.chunk.ChunkGDN2Function``.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from .chunk_fwd import pairwise_decay

__all__ = ["chunk_bwd_state", "chunk_bwd_local"]


# --8<-- [start:chunk_bwd_state]
def chunk_bwd_state(
    q_gamma: Float[Tensor, "N H NC C K"],
    k_tail: Float[Tensor, "N H NC C K"],
    gamma_C: Float[Tensor, "N H NC K"],
    Y: Float[Tensor, "N H NC C K"],
    A_qk: Float[Tensor, "N H NC C C"],
    do: Float[Tensor, "N H Gr NC C V"],
    dht: Float[Tensor, "N H Gr K V"],
) -> tuple[Float[Tensor, "N H Gr NC K V"], Float[Tensor, "N H Gr NC C V"], Float[Tensor, "N H Gr K V"]]:
    """Reverse state passing. For chunk n, with dS the gradient of its end state:

        dR  = A_qkᵀ dO + K_tail dS
        dS₀ = Q_γᵀ dO + Diag(γ_C) dS − Yᵀ dR      (the gradient of the chunk's start state)

    Returns the end-state gradient of every chunk, dR of every chunk, and dh0.
    """
    NC = q_gamma.shape[2]
    dS = dht
    ends: list[Tensor] = [dS] * NC
    dRs: list[Tensor] = [dS] * NC
    for n in reversed(range(NC)):
        ends[n] = dS
        dR = A_qk[:, :, None, n].transpose(-1, -2) @ do[:, :, :, n] + k_tail[:, :, None, n] @ dS
        dRs[n] = dR
        dS = (q_gamma[:, :, None, n].transpose(-1, -2) @ do[:, :, :, n]
              + gamma_C[:, :, None, n, :, None] * dS
              - Y[:, :, None, n].transpose(-1, -2) @ dR)
    return torch.stack(ends, dim=3), torch.stack(dRs, dim=3), dS
# --8<-- [end:chunk_bwd_state]


# --8<-- [start:pairwise_grads]
def _pairwise_grads(dM, x_r, x_s, decay):
    """Gradients of M_rs = Σ_d x_rd x'_sd exp(G_rd − G_sd) given dM: (dx_r, dx'_s, dG)."""
    P = dM[..., None] * x_r[..., :, None, :] * x_s[..., None, :, :] * decay   # [..., C, C, K]
    dx_r = torch.einsum("...rs,...sd,...rsd->...rd", dM, x_s, decay)
    dx_s = torch.einsum("...rs,...rd,...rsd->...sd", dM, x_r, decay)
    return dx_r, dx_s, P.sum(-2) - P.sum(-3)
# --8<-- [end:pairwise_grads]


# --8<-- [start:chunk_bwd_local]
def chunk_bwd_local(q, k, g, b, v, w, scale, G, A, Y, S0, R, dS_end, dR, do):
    """Every local gradient of every chunk, given the state-path gradients (vectorised over chunks).

    Returns (dq, dk, dg, db, dv, dw) on the chunked layout.
    """
    gamma = torch.exp(G).to(k.dtype)                                   # [N, H, NC, C, K]
    gamma_C = gamma[..., -1, :]                                        # [N, H, NC, K]
    decay_tail = torch.exp(G[..., -1:, :] - G).to(k.dtype)             # exp(G_C − G_r) ≤ 1
    k_tail = decay_tail * k
    Z = w * v                                                          # [N, H, Gr, NC, C, V]
    E = gamma * b * k                                                  # Ē, [N, H, NC, C, K]

    # --8<-- [start:bwd_output_state]
    # output path: O = Q_γ S_0 + A_qk R
    dq_gamma = (do @ S0.transpose(-1, -2)).sum(2)                      # [N, H, NC, C, K]
    dA_qk = (do @ R.transpose(-1, -2)).sum(2).tril()                   # [N, H, NC, C, C]
    # state path: S_C = Diag(γ_C) S_0 + K_tailᵀ R
    dk_tail = (R @ dS_end.transpose(-1, -2)).sum(2)                    # [N, H, NC, C, K]
    dgamma_C = (S0 * dS_end).sum(-1).sum(2)                            # [N, H, NC, K]
    # --8<-- [end:bwd_output_state]
    # --8<-- [start:bwd_wy]
    # WY path: R = U − Y S_0 with U = A Z, Y = A Ē; dA gathers both sides with their gates
    dY = -(dR @ S0.transpose(-1, -2)).sum(2)                           # [N, H, NC, C, K]
    dA = (dR @ Z.transpose(-1, -2)).sum(2) + dY @ E.transpose(-1, -2)  # dU Zᵀ + dY Ēᵀ
    At = A.transpose(-1, -2)
    dZ = At[:, :, None] @ dR                                           # Aᵀ dU
    dE = At @ dY                                                       # Aᵀ dY
    dT = -(At @ dA @ At).tril(-1)                                      # through A = (I + T)⁻¹
    # --8<-- [end:bwd_wy]

    # --8<-- [start:bwd_gates]
    dv, dw = dZ * w, dZ * v
    db = dE * gamma * k
    dk = dE * gamma * b + dk_tail * decay_tail
    dgamma = dE * b * k
    dq = dq_gamma * scale * gamma
    dgamma = dgamma + dq_gamma * scale * q
    dG = -dk_tail * k_tail
    dG[..., -1, :] += (dk_tail * k_tail).sum(-2)

    dq_p, dk_p, dG_p = _pairwise_grads(scale * dA_qk, q, k, pairwise_decay(G, strict=False).to(k.dtype))
    dq, dk, dG = dq + dq_p, dk + dk_p, dG + dG_p
    dbk, dk_s, dG_t = _pairwise_grads(dT, b * k, k, pairwise_decay(G, strict=True).to(k.dtype))
    db, dk, dG = db + dbk * k, dk + dbk * b + dk_s, dG + dG_t

    dG = dG + dgamma * gamma
    dG[..., -1, :] += dgamma_C * gamma_C
    dg = dG.flip(-2).cumsum(-2).flip(-2)                               # G = cumsum(g) within the chunk
    # --8<-- [end:bwd_gates]
    return dq, dk, dg, db, dv, dw
# --8<-- [end:chunk_bwd_local]
