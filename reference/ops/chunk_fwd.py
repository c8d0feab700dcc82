"""The chunkwise forward of Gated DeltaNet-2 in WY form (paper eq. 18-25, appendix A), stage by stage.

Inside a chunk of C tokens with start state S_0 and G_r = Σ_{i≤r} g_i:

    T = strict_lower[Σ_d b_rd k_rd k_sd exp(G_rd − G_sd)],  A = (I + T)⁻¹
    Y = A (γ⊙B⊙K),  U = A (W⊙V),  R = U − Y S_0
    O = (scale·γ⊙Q) S_0 + A_qk R,   S_C = Diag(γ_C) S_0 + (exp(G_C − G)⊙K)ᵀ R

The five stages below are the ones the docs derive and the Triton kernels implement, with the same
numbers and names: (1) local cumulative decay, (2) intra-chunk T and A by forward substitution,
(3) WY auxiliaries Y and U, (4) state passing, (5) output. Every exponential is a pairwise
exp(G_r − G_s) with r ≥ s, so it is ≤ 1 for g ≤ 0 and nothing overflows; exp(−G) is never formed.
Three more functions compute stage (2) the way the kernels do (A_qk next to T, from 16×16 blocks,
with anchored exponents), each equal to the plain stage. GVA keeps a group axis: key-side tensors are
[N, H, NC, C, K], value-side tensors [N, H, G, NC, C, V], the state [N, H, G, K, V]; T, A and Y are
shared by a group. The operator on the [B, T, H, K] layout is ``gdn2.ops.chunk.chunk_gdn2``.
"""

import torch
from jaxtyping import Float
from torch import Tensor

from ._contract import split_sequences

__all__ = [
    "chunk_local_cumsum",
    "pairwise_decay",
    "chunk_intra_t",
    "solve_unit_lower",
    "chunk_wy",
    "chunk_state_passing",
    "chunk_output",
    "chunk_forward",
    "anchored_pairwise_decay",
    "chunk_intra",
    "solve_unit_lower_blocked",
    "to_chunks",
    "from_chunks",
]

#: log-decays below this are raised to it before the cumulative sum: exp(−800) is exactly 0 in float64
#: and float32, as exp(g) is for any g below it, so the recurrence's full reset is kept while G stays finite
G_FLOOR = -800.0


# ---- stage 1: local cumulative decay ------------------------------------------------------------
# --8<-- [start:chunk_local_cumsum]
def chunk_local_cumsum(g: Float[Tensor, "*lead NC C K"]) -> Float[Tensor, "*lead NC C K"]:
    """G_r = Σ_{i≤r} g_i inside each chunk (the state is carried across chunks separately), in float64.

    Summed in float64 so that a difference G_r − G_s keeps the inputs' precision however strongly the
    chunk decays before r and s; g below G_FLOOR (−inf included) counts as G_FLOOR, whose exp is 0.
    """
    return g.double().clamp_min(G_FLOOR).cumsum(-2)
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
    decay = pairwise_decay(G, strict=True).to(k.dtype)                  # [..., C, C, K]
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
    Y = A @ (torch.exp(G).to(k.dtype) * b * k)
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
    gamma_C = torch.exp(G[:, :, :, -1]).to(k.dtype)                     # [N, H, NC, K]
    k_tail = torch.exp(G[:, :, :, -1:] - G).to(k.dtype) * k             # [N, H, NC, C, K], exponents ≤ 0
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
    q_gamma = scale * torch.exp(G).to(q.dtype) * q                      # [N, H, NC, C, K]
    decay = pairwise_decay(G, strict=False).to(q.dtype)                 # [N, H, NC, C, C, K]
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, decay)
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


# ---- stage 2 as the kernels compute it ----------------------------------------------------------
# --8<-- [start:anchored_pairwise_decay]
def anchored_pairwise_decay(
    G: Float[Tensor, "*lead C K"], strict: bool, block: int = 16, exp_max: float = 60.0
) -> Float[Tensor, "*lead C C K"]:
    """exp(G_r − G_s) (r ≥ s, or r > s when strict) factored at an anchor a, as the intra kernels form it.

    a is the first row of r's block of ``block`` rows, so s ≤ a ≤ r when s lies in an earlier block:
    exp(G_r − G_a)·exp(G_a − G_s), both factors ≤ 1, each a matrix product's row or column factor. Inside
    r's block (a ≤ s ≤ r) the column factor exp(G_a − G_s) ≥ 1 is clamped at e^exp_max; where that
    changes it (G_a − G_s > exp_max, so also G_a − G_r > exp_max) the kernels form the factor exactly
    instead. Equal to :func:`pairwise_decay`; which path a pair takes depends on
    tokens up to r only, so the choice is causal.
    """
    C = G.shape[-2]
    a = torch.arange(C, device=G.device) // block * block                # anchor row of every row r
    Ga = G[..., a, :]                                                    # G_a per row, [..., C, K]
    causal = torch.ones(C, C, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)[:, :, None]
    same = (a[:, None] == a[None, :])[:, :, None]                        # s in r's block
    row = torch.exp(G - Ga)[..., :, None, :]                             # exp(G_r − G_a) ≤ 1, [..., C, 1, K]
    up = Ga[..., :, None, :] - G[..., None, :, :]                        # G_a − G_s, [..., C, C, K]
    col = torch.exp(torch.where(causal, up.clamp(max=exp_max), float("-inf")))
    return torch.where(same & (up > exp_max), pairwise_decay(G, strict), row * col)
# --8<-- [end:anchored_pairwise_decay]


# --8<-- [start:chunk_intra]
def chunk_intra(
    q: Float[Tensor, "*lead C K"], k: Float[Tensor, "*lead C K"], b: Float[Tensor, "*lead C K"],
    G: Float[Tensor, "*lead C K"], scale: float,
) -> tuple[Float[Tensor, "*lead C C"], Float[Tensor, "*lead C C"]]:
    """Stage (2)'s products as the kernels compute them, in one pass over the keys: T (strictly lower)
    and A_qk = scale·Σ_d q_rd k_sd exp(G_rd − G_sd) (lower, diagonal included), both with anchored
    exponents. T is :func:`chunk_intra_t`; A_qk is the matrix :func:`chunk_output` forms."""
    decay = anchored_pairwise_decay(G, strict=False).to(k.dtype)         # [..., C, C, K]
    T = torch.einsum("...rd,...sd,...rsd->...rs", b * k, k, decay).tril(-1)
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, decay)
    return T, A_qk
# --8<-- [end:chunk_intra]


# --8<-- [start:solve_unit_lower_blocked]
def solve_unit_lower_blocked(T: Float[Tensor, "*lead C C"], block: int = 16) -> Float[Tensor, "*lead C C"]:
    """A = (I + T)⁻¹ as the intra kernels form it: the diagonal blocks by forward substitution, then the
    block rows below them, A_ij = −A_ii Σ_{j≤m<i} T_im A_mj for j < i. Equal to :func:`solve_unit_lower`."""
    C = T.shape[-1]
    n = -(-C // block)
    blk = [slice(i * block, min(C, (i + 1) * block)) for i in range(n)]
    A = torch.zeros_like(T)
    for i in range(n):
        A[..., blk[i], blk[i]] = solve_unit_lower(T[..., blk[i], blk[i]])
    for i in range(1, n):
        for j in reversed(range(i)):                                     # A_mj for j < m < i is known
            acc = sum(T[..., blk[i], blk[m]] @ A[..., blk[m], blk[j]] for m in range(j, i))
            A[..., blk[i], blk[j]] = -A[..., blk[i], blk[i]] @ acc
    return A
# --8<-- [end:solve_unit_lower_blocked]


# ---- layout: [B, T, heads, dim] <-> chunked, padded per sequence ----------------------------------
# --8<-- [start:to_chunks]
def to_chunks(x: Tensor, cu_seqlens: Tensor | None, C: int, H: int) -> Tensor:
    """[B, T, HX, D] -> [N, H, HX/H, NC, C, D], each sequence zero-padded to a multiple of C.

    Zero padding is exact: a padded token has k = 0, so it leaves the state untouched (g = 0 there).
    """
    seqs = split_sequences(x, cu_seqlens)
    NC = max([1, *(-(-s.shape[0] // C) for s in seqs)])              # chunks of the longest sequence
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
