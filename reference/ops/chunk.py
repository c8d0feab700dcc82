"""Chunkwise Gated DeltaNet-2 in WY form (paper eq. 18-25, appendix A; SPEC §3).

Inside a chunk of C tokens with start state S_0 and G_r = Σ_{i≤r} g_i:

    T = strict_lower[Σ_d b_rd k_rd k_sd exp(G_rd − G_sd)],  A = (I + T)⁻¹
    Y = A (γ⊙B⊙K),  U = A (W⊙V),  R = U − Y S_0
    O = (scale·γ⊙Q) S_0 + A_qk R,   S_C = Diag(γ_C) S_0 + (exp(G_C − G)⊙K)ᵀ R

The five stages below are the ones the docs derive and the Triton kernels implement, with the
same numbers and names: (1) local cumulative decay, (2) intra-chunk T and A by forward
substitution, (3) WY auxiliaries Y and U, (4) state passing, (5) output. Every exponential is a
pairwise exp(G_r − G_s) with r ≥ s, so it is ≤ 1 for g ≤ 0 and nothing overflows; exp(−G) is
never formed. GVA keeps a group axis: key-side tensors are [N, H, NC, C, K], value-side tensors
[N, H, G, NC, C, V], and the state [N, H, G, K, V]; T, A and Y are shared by a group.
"""

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from ._contract import compute_dtype, gate_from_raw, l2norm, split_sequences
from ._typing import shape_checked

__all__ = [
    "chunk_gdn2",
    "chunk_local_cumsum",
    "pairwise_decay",
    "chunk_intra_t",
    "solve_unit_lower",
    "chunk_wy",
    "chunk_state_passing",
    "chunk_output",
    "chunk_forward",
]


# ---- stage 1: local cumulative decay ------------------------------------------------------------
# --8<-- [start:chunk_local_cumsum]
def chunk_local_cumsum(g: Float[Tensor, "*lead NC C K"]) -> Float[Tensor, "*lead NC C K"]:
    """G_r = Σ_{i≤r} g_i inside each chunk (the state is carried across chunks separately)."""
    return g.cumsum(-2)
# --8<-- [end:chunk_local_cumsum]


# --8<-- [start:pairwise_decay]
def pairwise_decay(G: Float[Tensor, "*lead C K"], strict: bool) -> Float[Tensor, "*lead C C K"]:
    """exp(G_r − G_s) for r > s (strict) or r ≥ s, and 0 above: always ≤ 1, never exp(−G) alone.

    The exponent is masked *before* exp, so entries above the diagonal (where G_r − G_s ≥ 0 can be
    huge) never produce inf.
    """
    C = G.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)
    diff = G[..., :, None, :] - G[..., None, :, :]                     # [..., C, C, K]
    diff = torch.where(causal[:, :, None], diff, torch.full_like(diff, float("-inf")))
    return torch.exp(diff)
# --8<-- [end:pairwise_decay]


# ---- stage 2: intra-chunk T and A = (I + T)^-1 --------------------------------------------------
# --8<-- [start:chunk_intra_t]
def chunk_intra_t(
    k: Float[Tensor, "*lead C K"], b: Float[Tensor, "*lead C K"], G: Float[Tensor, "*lead C K"]
) -> Float[Tensor, "*lead C C"]:
    """T_rs = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd) for r > s, else 0 (the gated key interactions)."""
    decay = pairwise_decay(G, strict=True)                              # [..., C, C, K]
    return torch.einsum("...rd,...sd,...rsd->...rs", b * k, k, decay)
# --8<-- [end:chunk_intra_t]


# --8<-- [start:solve_unit_lower]
def solve_unit_lower(T: Float[Tensor, "*lead C C"]) -> Float[Tensor, "*lead C C"]:
    """A = (I + T)⁻¹ for strictly lower T, by forward substitution: A_r = e_r − Σ_{s<r} T_rs A_s."""
    C = T.shape[-1]
    eye = torch.eye(C, dtype=T.dtype, device=T.device).expand(T.shape)
    rows = [eye[..., 0, :]]
    for r in range(1, C):
        prev = torch.stack(rows, dim=-2)                                # [..., r, C]
        rows.append(eye[..., r, :] - torch.einsum("...s,...sc->...c", T[..., r, :r], prev))
    return torch.stack(rows, dim=-2)
# --8<-- [end:solve_unit_lower]


# ---- stage 3: WY auxiliaries ----------------------------------------------------------------------
# --8<-- [start:chunk_wy]
def chunk_wy(
    A: Float[Tensor, "N H NC C C"],
    k: Float[Tensor, "N H NC C K"],
    b: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    v: Float[Tensor, "N H Gr NC C V"],
    w: Float[Tensor, "N H Gr NC C V"],
) -> tuple[Float[Tensor, "N H NC C K"], Float[Tensor, "N H Gr NC C V"]]:
    """Y = A Ē with Ē = γ⊙b⊙k (erase side), U = A Z with Z = w⊙v (write side): one shared inverse."""
    Y = A @ (torch.exp(G) * b * k)
    U = A[:, :, None] @ (w * v)
    return Y, U
# --8<-- [end:chunk_wy]


# ---- stage 4: state passing -----------------------------------------------------------------------
# --8<-- [start:chunk_state_passing]
def chunk_state_passing(
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    Y: Float[Tensor, "N H NC C K"],
    U: Float[Tensor, "N H Gr NC C V"],
    h0: Float[Tensor, "N H Gr K V"],
) -> tuple[Float[Tensor, "N H Gr NC K V"], Float[Tensor, "N H Gr NC C V"], Float[Tensor, "N H Gr K V"]]:
    """Walk the chunks in order: R = U − Y S_0, S_C = Diag(γ_C) S_0 + K_tailᵀ R.

    Returns the start state of every chunk, the residual writes R of every chunk, and the final state.
    """
    NC = k.shape[2]
    gamma_C = torch.exp(G[:, :, :, -1])                                 # [N, H, NC, K]
    k_tail = torch.exp(G[:, :, :, -1:] - G) * k                         # [N, H, NC, C, K], exponents ≤ 0
    S = h0
    starts, residuals = [], []
    for n in range(NC):
        starts.append(S)
        R = U[:, :, :, n] - Y[:, :, None, n] @ S                        # [N, H, Gr, C, V]
        residuals.append(R)
        S = gamma_C[:, :, None, n, :, None] * S + k_tail[:, :, None, n].transpose(-1, -2) @ R
    return torch.stack(starts, dim=3), torch.stack(residuals, dim=3), S
# --8<-- [end:chunk_state_passing]


# ---- stage 5: output ------------------------------------------------------------------------------
# --8<-- [start:chunk_output]
def chunk_output(
    q: Float[Tensor, "N H NC C K"],
    k: Float[Tensor, "N H NC C K"],
    G: Float[Tensor, "N H NC C K"],
    S0: Float[Tensor, "N H Gr NC K V"],
    R: Float[Tensor, "N H Gr NC C V"],
    scale: float,
) -> Float[Tensor, "N H Gr NC C V"]:
    """O = (scale·γ⊙Q) S_0 + A_qk R, with A_qk_rs = Σ_d scale·q_rd k_sd exp(G_rd − G_sd) for r ≥ s."""
    q_gamma = scale * torch.exp(G) * q                                  # [N, H, NC, C, K]
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, pairwise_decay(G, strict=False))
    return q_gamma[:, :, None] @ S0 + A_qk[:, :, None] @ R
# --8<-- [end:chunk_output]


# --8<-- [start:chunk_forward]
def chunk_forward(q, k, v, g, b, w, scale, h0):
    """All five stages on the chunked layout (key side [N, H, NC, C, K], value side [N, H, Gr, NC, C, V]).

    Returns (o, final_state, intermediates) where intermediates are the tensors the backward reuses.
    """
    G = chunk_local_cumsum(g)                                           # (1)
    A = solve_unit_lower(chunk_intra_t(k, b, G))                        # (2)
    Y, U = chunk_wy(A, k, b, G, v, w)                                   # (3)
    S0, R, ht = chunk_state_passing(k, G, Y, U, h0)                     # (4)
    o = chunk_output(q, k, G, S0, R, scale)                             # (5)
    return o, ht, (G, A, Y, U, S0, R)
# --8<-- [end:chunk_forward]


# ---- layout: [B, T, heads, dim] <-> chunked, padded per sequence ----------------------------------
# --8<-- [start:to_chunks]
def to_chunks(x: Tensor, cu_seqlens: Tensor | None, C: int, H: int) -> Tensor:
    """[B, T, HX, D] -> [N, H, HX/H, NC, C, D], each sequence zero-padded to a multiple of C.

    Zero padding is exact: a padded token has k = 0, so it leaves the state untouched (g = 0 there).
    """
    seqs = split_sequences(x, cu_seqlens)
    NC = max(1, max((-(-s.shape[0] // C) for s in seqs), default=1))
    padded = x.new_zeros(len(seqs), NC * C, *x.shape[2:])
    for n, s in enumerate(seqs):
        padded[n, : s.shape[0]] = s
    N, HX, D = padded.shape[0], x.shape[2], x.shape[3]
    return padded.view(N, NC, C, H, HX // H, D).permute(0, 3, 4, 1, 2, 5)
# --8<-- [end:to_chunks]


def from_chunks(y: Tensor, cu_seqlens: Tensor | None, T: int) -> Tensor:
    """Inverse of :func:`to_chunks`: [N, H, Gr, NC, C, D] -> [B, T, H*Gr, D], padding dropped."""
    N, H, Gr, NC, C, D = y.shape
    flat = y.permute(0, 3, 4, 1, 2, 5).reshape(N, NC * C, H * Gr, D)
    if cu_seqlens is None:
        return flat[:, :T]
    bounds = cu_seqlens.tolist()
    return torch.cat([flat[n, : e - s] for n, (s, e) in enumerate(zip(bounds[:-1], bounds[1:]))])[None]


@shape_checked
def chunk_gdn2(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: float | None = None,
    initial_state: Float[Tensor, "N HV K V"] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Float[Tensor, " H"] | None = None,
    dt_bias: Float[Tensor, "..."] | None = None,
    chunk_size: int = 64,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Chunkwise Gated DeltaNet-2 (SPEC §3) with the hand-written gate-aware backward (SPEC §4).

    Same contract as :func:`gdn2.ops.recurrent_gdn2`; ``chunk_size`` is any positive integer and T
    need not be a multiple of it. Multiply-adds per chunk: C²·K (T and A_qk, lower halves) + C³/6
    (forward substitution) + C²·K/2 (Y) per key head, and C²·V (U and A_qk R, lower halves) + 3·C·K·V
    (Y S_0, Q_γ S_0, the state update) per value head; memory holds one state per chunk.
    """
    from .chunk_backward import ChunkGDN2Function  # the backward is built on these stages

    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dt = compute_dtype(q)
    scale = K ** -0.5 if scale is None else float(scale)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if A_log is not None:
        g = gate_from_raw(g, A_log, dt_bias)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    C = chunk_size
    key_side = [to_chunks(x.to(dt), cu_seqlens, C, H)[:, :, 0] for x in (q, k, g, b)]  # [N, H, NC, C, K]
    val_side = [to_chunks(x.to(dt), cu_seqlens, C, H) for x in (v, w)]                 # [N, H, Gr, NC, C, V]
    h0 = (torch.zeros(N, HV, K, V, dtype=dt, device=q.device) if initial_state is None
          else initial_state.to(dt)).view(N, H, HV // H, K, V)
    o, ht = ChunkGDN2Function.apply(*key_side, *val_side, h0, scale)
    o = from_chunks(o, cu_seqlens, T).to(q.dtype)
    return o, (ht.reshape(N, HV, K, V) if output_final_state else None)
