"""The gate-aware chunkwise backward of GDN2 in Triton (SPEC §4; paper appendix B).

Three kernels in two stages, named after the reference backward (``gdn2.ops.chunk_backward``);
they read the forward's saved (or recomputed) intermediates Q_γ, K_tail, Y, G, A, A_qk, S₀, R:

    state           chunks in reverse, per value head and V block (reference ``chunk_bwd_state``):
                        dR = A_qkᵀ dO + K_tail dS,   dS ← Diag(γ_C) dS + Q_γᵀ dO − Yᵀ dR
    local, WY       per chunk and key head (the group's value heads summed on chip):
                        dQ_γ = dO S₀ᵀ, dK_tail = R dSᵀ, dY = −dR S₀ᵀ, dZ = Aᵀ dR, dĒ = Aᵀ dY,
                        dA = dR Zᵀ + dY Ēᵀ (the gates inside the products), dT = −strict_lower(Aᵀ dA Aᵀ)
    local, pairwise per chunk and key head: the gradients of the pairwise products
                        A_qk = scale·Σ_d q k exp(G_r − G_s) (r ≥ s) and T = Σ_d b k k exp(G_r − G_s) (r > s),
                    the reverse cumulative sum dg = revcumsum(dG) inside the chunk, and the backward
                    of the in-op gate and the in-op L2 norm (reference ``chunk_bwd_local``).

Every decay factor is exp(G_r − G_s) with r ≥ s, so it is ≤ 1. Between sub-chunks of BC = 16
tokens it is split at an anchor row a with s ≤ a ≤ r, exp(G_r − G_a)·exp(G_a − G_s), both ≤ 1: the
first row of the row's sub-chunk (never after the row token) for gradients of row tokens, the last
valid row of the column's sub-chunk for gradients of column tokens. The latter may lie after the
column token, but it only scales terms of rows r > a, whose gradients are exact zeros when the
loss reads no output after the column token: gradients stay causal bit for bit (tested). Inside a
sub-chunk (the diagonal block) the first row a serves as the anchor of products whose growing factor
exp(G_a − G_s) is clamped at e^DIAG_EXP_MAX; a token whose decay from a exceeds the clamp takes an
element-by-element fallback. Padded rows (T not a multiple of the chunk) are masked before they can
meet an exponential.

Layouts are the forward's (:class:`gdn2.fast.chunk_fwd.ChunkForward`): key side [B, T, H, K], value
side [B, T, HV, V], per-chunk matrices [B, T, H, BT] (row r of the chunk at its token), per-chunk
states [NSLOT, HV, K, V] in the forward's slot numbering; with ``cu_seqlens`` the programs of the
chunk-parallel kernels are mapped to (sequence, chunk) by ``chunk_indices``.
"""

from typing import no_type_check

import torch
import triton
import triton.language as tl
from torch import Tensor

from .chunk_fwd import DIAG_SPAN, ChunkForward
from .utils import empty

__all__ = ["chunk_gdn2_bwd", "chunk_bwd_state", "chunk_bwd_local", "chunk_bwd_state_kernel",
           "chunk_bwd_local_wy_kernel", "chunk_bwd_local_pairwise_kernel"]

#: sub-chunk size of the pairwise kernel (tl.dot needs at least 16 rows)
BC = 16
#: clamp of the growing factor exp(G_a − G_s) in the pairwise kernel's diagonal products: the forward's
#: DIAG_SPAN (one value for both directions); a token whose decay from its sub-chunk's first row exceeds
#: it on some channel takes the element-by-element fallback. A kernel argument, so tests can move it.
DIAG_EXP_MAX = DIAG_SPAN.value


def _dot_precision(dtype: torch.dtype, K: int) -> str:
    """Product precision of the backward kernels for inputs of ``dtype`` and key width ``K``.

    16-bit inputs: the operands are 16-bit and this setting is unused. float32 inputs need near-float32
    products (plain tf32 would take most of the 3e-3 budget of SPEC §7), and on an H200 with Triton 3.6
    each of the two ways to get them fails somewhere (benchmarks/NOTES.md): "ieee" (FMA) products gave
    dq 110% wrong at K = 128, and "tf32x3" faulted (illegal address) in the WY kernel at K = 16. Measured
    right: "ieee" at K = 16 and 32, "tf32x3" at K = 64 and 128.
    """
    if dtype != torch.float32:
        return "tf32"
    return "tf32x3" if K > 32 else "ieee"


@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def _exp_where(x, m):
    """exp(x) where m holds, else 0; masked lanes never reach the exponential (no inf on padding)."""
    return tl.where(m, tl.exp(tl.where(m, x, 0.)), 0.)


@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def _load_qk(x, rstd, off, mask, off_row, m_row, L2NORM: tl.constexpr):
    """A [rows, BK] tile of q or k in float32, times 1/‖x‖ per row when the op normalises."""
    b_x = tl.load(x + off, mask=mask, other=0.).to(tl.float32)
    if L2NORM:
        b_x *= tl.load(rstd + off_row, mask=m_row, other=0.)[:, None]
    return b_x


# --8<-- [start:chunk_bwd_state_kernel]
@triton.jit(do_not_specialize=["T"])
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def chunk_bwd_state_kernel(
    qg,             # [B, T, H, K] scale·γ⊙q
    kt,             # [B, T, H, K] exp(G_C − G)⊙k
    Y,              # [B, T, H, K] A Ē
    G,              # [B, T, H, K] float32 chunk-local cumulative log-decay (for γ_C)
    Aqk,            # [B, T, H, BT] A_qk = scale·Σ_d q k exp(G_r − G_s), lower incl. diagonal
    do,             # [B, T, HV, V] output gradient
    dht,            # [N, HV, K, V] float32 final-state gradient, or None
    dS_end,         # out [NSLOT, HV, K, V] gradient of each chunk's end state
    dR,             # out [B, T, HV, V] gradient of the residual writes R
    dh0,            # out [N, HV, K, V] float32 initial-state gradient, or None
    cu_seqlens,     # [N + 1] int or None
    T,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BKH: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    USE_DHT: tl.constexpr,
    USE_DH0: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Reverse state passing: walk the chunks of one sequence backwards.

    Grid (V/BV, N·HV). The state gradient dS [K, BV] stays on chip (float32) for the whole
    sequence, as one tile of BKH = 128 rows (masked beyond K) or, for K > 128, two (Triton 3.6
    faulted on a single 256-row tile and on 64-row tiles); per chunk the program loads Q_γ,
    K_tail, Y [BT, K], A_qk [BT, BT] and dO [BT, BV] and writes dS (the chunk's end-state
    gradient) and dR [BT, BV]. FLOPs per chunk and value head:
    2·BT²·V + 6·BT·K·V; bytes: the key-side operands once per V block, dO read and dR written once,
    one state-sized write per chunk.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
        slot0 = bos // BT + i_n          # the forward's chunk-slot numbering
    else:
        bos = i_n.to(tl.int64) * T
        slot0 = i_n.to(tl.int64) * tl.cdiv(T, BT)
    NT = tl.cdiv(T, BT)
    DT = do.dtype.element_ty
    o_k = tl.arange(0, BKH)                # rows of the first state tile; the second (K > 128) is BKH + o_k
    o_k2 = BKH + o_k
    o_v = i_v * BV + tl.arange(0, BV)
    o_c = tl.arange(0, BT)
    m_k, m_k2 = o_k < K, o_k2 < K
    m_v = o_v < V
    m_kv, m_kv2 = m_k[:, None] & m_v[None, :], m_k2[:, None] & m_v[None, :]
    off_s = (o_k[:, None] * V + o_v[None, :]).to(tl.int64)
    off_s2 = off_s + BKH * V
    base_s = (i_n * HV + i_hv).to(tl.int64) * K * V

    b_dS = tl.zeros([BKH, BV], dtype=tl.float32)
    b_dS2 = tl.zeros([BKH, BV], dtype=tl.float32)
    if USE_DHT:
        b_dS += tl.load(dht + base_s + off_s, mask=m_kv, other=0.)
        if BK > BKH:
            b_dS2 += tl.load(dht + base_s + off_s2, mask=m_kv2, other=0.)
    for i_s in range(NT):
        i_t = NT - 1 - i_s
        p_end = dS_end + ((slot0 + i_t) * HV + i_hv) * K * V
        tl.store(p_end + off_s, b_dS.to(dS_end.dtype.element_ty), mask=m_kv)
        if BK > BKH:
            tl.store(p_end + off_s2, b_dS2.to(dS_end.dtype.element_ty), mask=m_kv2)
        o_t = i_t * BT + o_c
        m_t = o_t < T
        last = tl.minimum(T, i_t * BT + BT) - 1
        m_tk = m_t[:, None] & m_k[None, :]
        m_tv = m_t[:, None] & m_v[None, :]
        off_k = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        off_v = ((bos + o_t[:, None]) * HV + i_hv) * V + o_v[None, :]
        off_l = ((bos + last) * H + i_h) * K + o_k
        b_do = tl.load(do + off_v, mask=m_tv, other=0.)
        # A_qkᵀ, element [s, r] = A_qk[r, s], kept for s ≤ r
        p_AT = Aqk + ((bos + o_t[None, :]) * H + i_h) * BT + o_c[:, None]
        b_AT = tl.load(p_AT, mask=m_t[None, :] & (o_c[:, None] <= o_c[None, :]), other=0.).to(DT)
        b_dR = tl.dot(b_AT, b_do, input_precision=PREC)
        b_kt = tl.load(kt + off_k, mask=m_tk, other=0.).to(DT)
        b_dR += tl.dot(b_kt, b_dS.to(DT), input_precision=PREC)
        if BK > BKH:
            m_tk2 = m_t[:, None] & m_k2[None, :]
            b_kt2 = tl.load(kt + off_k + BKH, mask=m_tk2, other=0.).to(DT)
            b_dR += tl.dot(b_kt2, b_dS2.to(DT), input_precision=PREC)
        tl.store(dR + off_v, b_dR.to(dR.dtype.element_ty), mask=m_tv)
        b_dRd = b_dR.to(DT)
        # Q_γᵀ and Yᵀ [BKH, BT] loaded transposed through their pointers
        off_kT = ((bos + o_t[None, :]) * H + i_h) * K + o_k[:, None]
        m_kt = m_k[:, None] & m_t[None, :]
        b_qgT = tl.load(qg + off_kT, mask=m_kt, other=0.).to(DT)
        b_YT = tl.load(Y + off_kT, mask=m_kt, other=0.).to(DT)
        b_gC = tl.exp(tl.load(G + off_l, mask=m_k, other=0.))
        b_dS = b_dS * b_gC[:, None]
        b_dS += tl.dot(b_qgT, b_do, input_precision=PREC)
        b_dS -= tl.dot(b_YT, b_dRd, input_precision=PREC)
        if BK > BKH:
            m_kt2 = m_k2[:, None] & m_t[None, :]
            b_qgT2 = tl.load(qg + off_kT + BKH, mask=m_kt2, other=0.).to(DT)
            b_YT2 = tl.load(Y + off_kT + BKH, mask=m_kt2, other=0.).to(DT)
            b_gC2 = tl.exp(tl.load(G + off_l + BKH, mask=m_k2, other=0.))
            b_dS2 = b_dS2 * b_gC2[:, None]
            b_dS2 += tl.dot(b_qgT2, b_do, input_precision=PREC)
            b_dS2 -= tl.dot(b_YT2, b_dRd, input_precision=PREC)
    if USE_DH0:
        tl.store(dh0 + base_s + off_s, b_dS, mask=m_kv)
        if BK > BKH:
            tl.store(dh0 + base_s + off_s2, b_dS2, mask=m_kv2)
# --8<-- [end:chunk_bwd_state_kernel]


# --8<-- [start:chunk_bwd_local_wy_kernel]
@triton.jit(do_not_specialize=["T"])
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def chunk_bwd_local_wy_kernel(
    q,              # [B, T, H, K] queries
    k,              # [B, T, H, K] keys
    b,              # [B, T, H, K] erase gate
    G,              # [B, T, H, K] float32 chunk-local cumulative log-decay
    v,              # [B, T, HV, V] values
    w,              # [B, T, HV, V] write gate
    A,              # [B, T, H, BT] WY inverse
    h,              # [NSLOT, HV, K, V] start state S₀ of every chunk
    R,              # [B, T, HV, V] residual writes R = U − Y S₀
    do,             # [B, T, HV, V] output gradient
    dR,             # [B, T, HV, V] gradient of R (from the state kernel)
    dS_end,         # [NSLOT, HV, K, V] gradient of every chunk's end state
    dq,             # out [B, T, H, K] float32, state/WY part of dq
    dk,             # out [B, T, H, K] float32, state/WY part of dk
    db,             # out [B, T, H, K] float32, WY part of db
    dG,             # out [B, T, H, K] float32, gradient of the cumulative decay G (before the reverse cumsum)
    dv,             # out [B, T, HV, V] final dv
    dw,             # out [B, T, HV, V] final dw
    dM,             # out [B, T, H, BT] float32 gradient of A_qk (lower incl. diagonal)
    dT,             # out [B, T, H, BT] float32 gradient of T (strictly lower)
    q_rstd,         # [B, T, H] float32 1/‖q‖ (L2NORM), or None
    k_rstd,         # [B, T, H] float32 1/‖k‖ (L2NORM), or None
    cu_seqlens,     # [N + 1] int or None
    chunk_indices,  # [NSLOT, 2] int32 (sequence, chunk), sequence −1 = no work; or None
    scale,
    T,
    H: tl.constexpr,
    HV: tl.constexpr,
    K: tl.constexpr,
    V: tl.constexpr,
    BT: tl.constexpr,
    BK: tl.constexpr,
    BV: tl.constexpr,
    PREC: tl.constexpr,
    L2NORM: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Local gradients of one chunk through the output, state and WY paths (no pairwise decay).

    Grid (NT_total, B·H): one program per chunk and key head walks the HV/H value heads of its
    group, so the key-side gradients of GVA are summed on chip and never materialised per value
    head. On chip: A [BT, BT], the accumulators dA and dA_qk [BT, BT] and, per K block, dQ_γ,
    dK_tail, dY [BT, BK]. Per value head and (K, V) block it loads S₀ and dS [BK, BV] and
    R, dR, dO [BT, BV]. The gates enter dA inside the products: dA = dR (w⊙v)ᵀ + dY (γ⊙b⊙k)ᵀ.
    FLOPs per chunk and value head about 2·BT·K·V·3 + 2·BT²·V·3 (+ 2·BT²·K·2 + 4·BT³ per key
    head); bytes: two state-sized reads, five [BT, V] reads and two writes per value head, four
    float32 [BT, K] and two float32 [BT, BT] writes per key head.
    """
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    GROUP: tl.constexpr = HV // H
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        if i_n < 0:
            return
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
        i_tg = bos // BT + i_n + i_t     # the forward's chunk-slot numbering
    else:
        i_tg = i_b.to(tl.int64) * tl.cdiv(T, BT) + i_t
        bos = i_b.to(tl.int64) * T
    DT = do.dtype.element_ty
    o_t = i_t * BT + tl.arange(0, BT)
    o_c = tl.arange(0, BT)
    m_t = o_t < T
    m_tt = m_t[:, None] & (i_t * BT + o_c[None, :] < T)
    last = tl.minimum(T, i_t * BT + BT) - 1
    off_A = ((bos + o_t[:, None]) * H + i_h) * BT + o_c[None, :]
    b_A = tl.load(A + off_A, mask=m_tt, other=0.).to(DT)
    b_AT = tl.trans(b_A)

    b_dA = tl.zeros([BT, BT], dtype=tl.float32)
    b_dM = tl.zeros([BT, BT], dtype=tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m_tk = m_t[:, None] & m_k[None, :]
        b_dqg = tl.zeros([BT, BK], dtype=tl.float32)
        b_dkt = tl.zeros([BT, BK], dtype=tl.float32)
        b_dY = tl.zeros([BT, BK], dtype=tl.float32)
        b_dgC = tl.zeros([BK], dtype=tl.float32)
        for i_g in range(GROUP):
            i_hv = i_h * GROUP + i_g
            for i_v in range(tl.cdiv(V, BV)):
                o_v = i_v * BV + tl.arange(0, BV)
                m_v = o_v < V
                m_tv = m_t[:, None] & m_v[None, :]
                m_kv = m_k[:, None] & m_v[None, :]
                off_v = ((bos + o_t[:, None]) * HV + i_hv) * V + o_v[None, :]
                off_h = (i_tg * HV + i_hv) * K * V + o_k[:, None] * V + o_v[None, :]
                b_h = tl.load(h + off_h, mask=m_kv, other=0.)
                b_dh = tl.load(dS_end + off_h, mask=m_kv, other=0.)
                b_R = tl.load(R + off_v, mask=m_tv, other=0.).to(DT)
                b_dR = tl.load(dR + off_v, mask=m_tv, other=0.).to(DT)
                b_do = tl.load(do + off_v, mask=m_tv, other=0.)
                b_dgC += tl.sum(b_h.to(tl.float32) * b_dh.to(tl.float32), axis=1)
                b_dqg += tl.dot(b_do, tl.trans(b_h.to(DT)), input_precision=PREC)
                b_dkt += tl.dot(b_R, tl.trans(b_dh.to(DT)), input_precision=PREC)
                b_dY -= tl.dot(b_dR, tl.trans(b_h.to(DT)), input_precision=PREC)
                if i_k == 0:
                    b_v = tl.load(v + off_v, mask=m_tv, other=0.).to(tl.float32)
                    b_w = tl.load(w + off_v, mask=m_tv, other=0.).to(tl.float32)
                    b_dA += tl.dot(b_dR, tl.trans((b_w * b_v).to(DT)), input_precision=PREC)
                    b_dM += tl.dot(b_do, tl.trans(b_R), input_precision=PREC)
                    b_dZ = tl.dot(b_AT, b_dR, input_precision=PREC)
                    tl.store(dv + off_v, (b_dZ * b_w).to(dv.dtype.element_ty), mask=m_tv)
                    tl.store(dw + off_v, (b_dZ * b_v).to(dw.dtype.element_ty), mask=m_tv)
        off_k = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_q = tl.load(q + off_k, mask=m_tk, other=0.).to(tl.float32)
        b_k = tl.load(k + off_k, mask=m_tk, other=0.).to(tl.float32)
        if L2NORM:
            off_r = (bos + o_t) * H + i_h
            b_q *= tl.load(q_rstd + off_r, mask=m_t, other=0.)[:, None]
            b_k *= tl.load(k_rstd + off_r, mask=m_t, other=0.)[:, None]
        b_b = tl.load(b + off_k, mask=m_tk, other=0.).to(tl.float32)
        b_G = tl.load(G + off_k, mask=m_tk, other=0.)
        b_Gl = tl.load(G + ((bos + last) * H + i_h) * K + o_k, mask=m_k, other=0.)
        b_gam = _exp_where(b_G, m_tk)
        b_dec = _exp_where(b_Gl[None, :] - b_G, m_tk)     # exp(G_C − G_r) ≤ 1
        b_E = b_gam * b_b * b_k
        b_dA += tl.dot(b_dY.to(DT), tl.trans(b_E.to(DT)), input_precision=PREC)
        b_dE = tl.dot(b_AT, b_dY.to(DT), input_precision=PREC)
        b_dq = b_dqg * scale * b_gam
        b_dkt = b_dkt * b_dec
        b_dG = b_dE * b_E + b_dq * b_q - b_dkt * b_k
        b_dG += tl.where((o_t == last)[:, None], (tl.sum(b_dkt * b_k, axis=0) + b_dgC * tl.exp(b_Gl))[None, :], 0.)
        tl.store(dq + off_k, b_dq, mask=m_tk)
        tl.store(dk + off_k, b_dE * b_gam * b_b + b_dkt, mask=m_tk)
        tl.store(db + off_k, b_dE * b_gam * b_k, mask=m_tk)
        tl.store(dG + off_k, b_dG, mask=m_tk)
    # through A = (I + T)^-1: only the strictly lower part of dA reaches the strictly lower dT
    m_lo = (o_c[:, None] > o_c[None, :]) & m_tt
    b_dA = tl.where(m_lo, b_dA, 0.).to(DT)
    b_dT = tl.dot(b_dA, b_AT, input_precision=PREC).to(DT)
    b_dT = -tl.dot(b_AT, b_dT, input_precision=PREC)
    tl.store(dT + off_A, tl.where(m_lo, b_dT, 0.), mask=m_t[:, None])
    tl.store(dM + off_A, tl.where((o_c[:, None] >= o_c[None, :]) & m_tt, scale * b_dM, 0.), mask=m_t[:, None])
# --8<-- [end:chunk_bwd_local_wy_kernel]


# --8<-- [start:chunk_bwd_local_pairwise_kernel]
@triton.jit(do_not_specialize=["T"])
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def chunk_bwd_local_pairwise_kernel(
    q,              # [B, T, H, K] queries as given to the op (before the in-op L2 norm)
    k,              # [B, T, H, K] keys, likewise
    b,              # [B, T, H, K] erase gate
    G,              # [B, T, H, K] float32 chunk-local cumulative log-decay
    dM,             # [B, T, H, BT] float32 scale·dA_qk
    dT,             # [B, T, H, BT] float32 dT
    dq,             # [B, T, H, K] float32 partial dq from the WY kernel
    dk,             # [B, T, H, K] float32 partial dk
    db,             # [B, T, H, K] float32 partial db
    dG,             # [B, T, H, K] float32 partial dG
    dq_out,         # out [B, T, H, K] final dq (w.r.t. the raw q when L2NORM)
    dk_out,         # out [B, T, H, K] final dk
    db_out,         # out [B, T, H, K] final db
    dg_out,         # out [B, T, H, K] final dg (w.r.t. the raw gate when GATE)
    q_rstd,         # [B, T, H] float32 1/‖q‖ (L2NORM), or None
    k_rstd,         # [B, T, H] float32 1/‖k‖ (L2NORM), or None
    g_raw,          # [B, T, H, K] raw gate input, or None
    A_log,          # [H] float, or None
    dt_bias,        # [H·K] float, or None
    dA_log_part,    # out [programs, H] float32 per-chunk partial sums of dA_log (zero-filled), or None
    ddt_part,       # out [programs, H, K] float32 per-chunk partial sums of ddt_bias (zero-filled), or None
    cu_seqlens,     # [N + 1] int or None
    chunk_indices,  # [NSLOT, 2] int32 (sequence, chunk), sequence −1 = no work; or None
    T,
    H: tl.constexpr,
    K: tl.constexpr,
    BT: tl.constexpr,
    BC: tl.constexpr,
    BK: tl.constexpr,
    EXP_MAX: tl.constexpr,
    PREC: tl.constexpr,
    L2NORM: tl.constexpr,
    GATE: tl.constexpr,
    HAS_DT_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr,
):
    """Gradients of the pairwise products A_qk and T, then the chunk's final dq, dk, db, dg.

    Grid (NT_total, B·H); BK ≥ K, so a program holds whole rows (the L2-norm backward needs the
    row's dot product). It walks the BT/BC sub-chunks of its chunk from last to first, so the
    reverse cumulative sum dg = Σ_{r' ≥ r} dG_{r'} is a running sum. For sub-chunk i:
    rows side (s in earlier sub-chunks), anchor a = first row of i:
        dq_i += exp(G_i − G_a) ⊙ Σ_j dM_ij (k_j ⊙ exp(G_a − G_j)),  d(bk)_i likewise with dT;
    column side (r in later sub-chunks), anchor a' = last valid row of i:
        dk_i += exp(G_a' − G_i) ⊙ Σ_l (dM_liᵀ (q_l ⊙ e_l) + dT_liᵀ (b_l k_l ⊙ e_l)),  e_l = exp(G_l − G_a');
    diagonal block (r ≥ s, both in i): the r = s terms per element (factor 1); the r > s terms as four
    [BC, BC] × [BC, BK] products with the anchor a, u_s = exp(min(G_a − G_s, EXP_MAX)) ≥ 1:
        dq_r += exp(G_r − G_a) ⊙ Σ_{s<r} dM_rs (k_s ⊙ u_s),  d(bk)_r likewise with dT,
        dk_s += u_s ⊙ Σ_{r>s} (dM_rs q_r + dT_rs b_r k_r) ⊙ exp(G_r − G_a),
    kept for the fast-valid tokens t, max_d (G_a − G_t) ≤ EXP_MAX, where nothing is clamped (a prefix
    of i). A sub-chunk with other tokens also runs the fallback: exp(G_r − G_s) formed per element,
    one column at a time, for those rows and columns only. The products take float32 operands (tf32
    for 16-bit inputs).
    dG gains q⊙dq + bk⊙d(bk) on the row side and −k⊙dk on the column side. On chip: ~8 [BC, BK]
    float32 tiles. FLOPs per chunk ≈ 2·BT²·K·2 (the two products, both sides; the diagonal blocks a
    fraction BC/BT of it) plus (BT/BC + 2)·BT·K exponentials (+ BC·K per token where the fallback
    runs); bytes: the key side and the two [BT, BT] gradients re-read from L2 a few times, the four
    partials read and four final gradients written once.
    """
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    i_tg = i_t
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_t * 2).to(tl.int32)
        i_t = tl.load(chunk_indices + i_t * 2 + 1).to(tl.int32)
        if i_n < 0:
            return
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        T = (tl.load(cu_seqlens + i_n + 1).to(tl.int64) - bos).to(tl.int32)
    else:
        i_tg = i_b * tl.cdiv(T, BT) + i_t
        bos = i_b.to(tl.int64) * T
    NC: tl.constexpr = BT // BC
    DT = q.dtype.element_ty
    last = tl.minimum(T, i_t * BT + BT) - 1
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_b = tl.arange(0, BC)
    stride_t = H * K           # token stride of the key side
    stride_m = H * BT          # token stride of dM, dT
    base_k = (bos * H + i_h) * K
    base_m = (bos * H + i_h) * BT
    base_r = bos * H + i_h     # offset of (bos, i_h) in q_rstd, k_rstd

    b_carry = tl.zeros([BK], dtype=tl.float32)
    if GATE:
        b_A_log = tl.load(A_log + i_h).to(tl.float32)
        b_decay_rate = tl.exp(b_A_log)
        b_dAl = tl.zeros([BK], dtype=tl.float32)
        b_ddt = tl.zeros([BK], dtype=tl.float32)
        if HAS_DT_BIAS:
            b_bias = tl.load(dt_bias + i_h * K + o_k, mask=m_k, other=0.).to(tl.float32)
    for i_s in range(NC):
        i_i = NC - 1 - i_s
        o_i = i_t * BT + i_i * BC + o_b                      # token index of the rows, inside the sequence
        m_i = o_i < T
        m_ik = m_i[:, None] & m_k[None, :]
        off_i = base_k + o_i[:, None].to(tl.int64) * stride_t + o_k[None, :]
        off_ri = base_r + o_i.to(tl.int64) * H
        b_q = _load_qk(q, q_rstd, off_i, m_ik, off_ri, m_i, L2NORM)
        b_k = _load_qk(k, k_rstd, off_i, m_ik, off_ri, m_i, L2NORM)
        b_b = tl.load(b + off_i, mask=m_ik, other=0.).to(tl.float32)
        b_G = tl.load(G + off_i, mask=m_ik, other=0.)
        b_dq = tl.zeros([BC, BK], dtype=tl.float32)       # pairwise dq (rows side + diagonal)
        b_dbk = tl.zeros([BC, BK], dtype=tl.float32)      # pairwise d(b⊙k)
        b_dk = tl.zeros([BC, BK], dtype=tl.float32)       # pairwise dk, column side + diagonal
        off_mi = base_m + o_i[:, None].to(tl.int64) * stride_m

        # anchor a = first row of i (clamped to the last valid row), for the rows side and the diagonal
        a = tl.minimum(i_t * BT + i_i * BC, last)
        b_Ga = tl.load(G + base_k + a.to(tl.int64) * stride_t + o_k, mask=m_k, other=0.)

        # rows side: s in sub-chunks j < i
        if i_i > 0:
            for i_j in range(0, i_i):
                o_j = i_t * BT + i_j * BC + o_b
                m_j = o_j < T
                m_jk = m_j[:, None] & m_k[None, :]
                off_j = base_k + o_j[:, None].to(tl.int64) * stride_t + o_k[None, :]
                b_kj = _load_qk(k, k_rstd, off_j, m_jk, base_r + o_j.to(tl.int64) * H, m_j, L2NORM)
                b_Gj = tl.load(G + off_j, mask=m_jk, other=0.)
                b_kd = (b_kj * _exp_where(b_Ga[None, :] - b_Gj, m_jk)).to(DT)
                p_ij = off_mi + i_j * BC + o_b[None, :]
                b_dMij = tl.load(dM + p_ij, mask=m_i[:, None], other=0.).to(DT)
                b_dTij = tl.load(dT + p_ij, mask=m_i[:, None], other=0.).to(DT)
                b_dq += tl.dot(b_dMij, b_kd, input_precision=PREC)
                b_dbk += tl.dot(b_dTij, b_kd, input_precision=PREC)
            b_ea = _exp_where(b_G - b_Ga[None, :], m_ik)        # exp(G_r − G_a) ≤ 1
            b_dq *= b_ea
            b_dbk *= b_ea

        # column side: r in sub-chunks l > i, anchor a' = last valid row of i
        if i_i < NC - 1:
            a2 = tl.minimum(i_t * BT + i_i * BC + BC - 1, last)
            b_Ga2 = tl.load(G + base_k + a2.to(tl.int64) * stride_t + o_k, mask=m_k, other=0.)
            for i_l in range(i_i + 1, NC):
                o_l = i_t * BT + i_l * BC + o_b
                m_l = o_l < T
                m_lk = m_l[:, None] & m_k[None, :]
                off_l = base_k + o_l[:, None].to(tl.int64) * stride_t + o_k[None, :]
                off_rl = base_r + o_l.to(tl.int64) * H
                b_ql = _load_qk(q, q_rstd, off_l, m_lk, off_rl, m_l, L2NORM)
                b_kl = _load_qk(k, k_rstd, off_l, m_lk, off_rl, m_l, L2NORM)
                b_bl = tl.load(b + off_l, mask=m_lk, other=0.).to(tl.float32)
                b_Gl = tl.load(G + off_l, mask=m_lk, other=0.)
                b_el = _exp_where(b_Gl - b_Ga2[None, :], m_lk)
                # [BC (cols of i), BC (rows of l)] = dM_liᵀ
                p_li = base_m + o_l[None, :].to(tl.int64) * stride_m + i_i * BC + o_b[:, None]
                b_dMli = tl.load(dM + p_li, mask=m_l[None, :], other=0.).to(DT)
                b_dTli = tl.load(dT + p_li, mask=m_l[None, :], other=0.).to(DT)
                b_dk += tl.dot(b_dMli, (b_ql * b_el).to(DT), input_precision=PREC)
                b_dk += tl.dot(b_dTli, (b_bl * b_kl * b_el).to(DT), input_precision=PREC)
            b_dk *= _exp_where(b_Ga2[None, :] - b_G, m_ik)

        # diagonal block. The r = s terms (factor 1) element by element: dq_r += dM_rr k_r, dk_r +=
        # dM_rr q_r (dT_rr = 0). Fast path for r > s: exp(G_r − G_s) = exp(G_r − G_a)·exp(G_a − G_s),
        # the second factor ≥ 1 and clamped at e^EXP_MAX so that no operand overflows. Token t of i is
        # fast-valid when max_d (G_a − G_t) ≤ EXP_MAX: then (G non-increasing) no factor of row t
        # (columns s < t) and none of column t is clamped, and its products are exact. Validity reads
        # G_a and G_t only (a ≤ t), so it is causal; it holds on a prefix of i, row a always included.
        # The products take float32 operands (tf32 for 16-bit inputs): with bfloat16 ones the row and
        # column terms of a pair, which cancel in dg, round apart (dg 5x less accurate in a CPU
        # emulation), and float16 cannot hold k·e^60.
        b_up = tl.where(m_ik, b_Ga[None, :] - b_G, 0.)          # G_a − G_t ≥ 0; 0 on padding
        b_ea = _exp_where(-b_up, m_ik)                           # exp(G_t − G_a) ≤ 1
        b_eup = _exp_where(tl.minimum(b_up, EXP_MAX), m_ik)     # exp(min(G_a − G_t, EXP_MAX)) ≥ 1
        m_ok = tl.max(b_up, axis=1) <= EXP_MAX                   # [BC] fast-valid (padding counts as valid)
        b_dMrr = tl.load(dM + off_mi + i_i * BC + o_b[:, None], mask=m_i[:, None], other=0.)  # [BC, 1]
        b_dq += b_dMrr * b_k
        b_dk += b_dMrr * b_q
        p_ii = off_mi + i_i * BC + o_b[None, :]
        m_ii = m_i[:, None] & (o_b[:, None] > o_b[None, :])      # r > s
        b_dMii = tl.load(dM + p_ii, mask=m_ii, other=0.)
        b_dTii = tl.load(dT + p_ii, mask=m_ii, other=0.)
        # rows: dx_r = exp(G_r − G_a) ⊙ Σ_{s < r} dM_rs (k_s ⊙ exp(G_a − G_s)), kept on fast-valid rows
        b_kup = b_k * b_eup
        b_dq += tl.where(m_ok[:, None], b_ea * tl.dot(b_dMii, b_kup, input_precision=PREC), 0.)
        b_dbk += tl.where(m_ok[:, None], b_ea * tl.dot(b_dTii, b_kup, input_precision=PREC), 0.)
        # columns: dy_s = exp(G_a − G_s) ⊙ Σ_{r > s} dM_rs (x_r ⊙ exp(G_r − G_a)), kept on fast-valid
        # columns. exp(G_r − G_a) underflows only where G_a − G_r > 87, that is G_s − G_r > 87 − EXP_MAX
        # = 27 on a valid column: the terms lost are below e^-27 times the r = s term.
        b_dkd = tl.dot(tl.trans(b_dMii), b_q * b_ea, input_precision=PREC)
        b_dkd += tl.dot(tl.trans(b_dTii), b_b * b_k * b_ea, input_precision=PREC)
        b_dk += tl.where(m_ok[:, None], b_eup * b_dkd, 0.)

        # diagonal block, fallback where some token of i is not fast-valid (strong decay): the factors
        # exp(G_r − G_s), r > s, element by element as [BC, BK] passes, one column s at a time, added to
        # the rows (dq, d(bk)) and columns (dk) that are not fast-valid only
        m_bad = ~m_ok
        if tl.sum(m_bad.to(tl.int32), axis=0) > 0:
            for c in range(BC):
                s = i_t * BT + i_i * BC + c
                m_sk = m_k & (s + 0 * o_k < T)
                off_s = base_k + s.to(tl.int64) * stride_t + o_k
                b_ks = tl.load(k + off_s, mask=m_sk, other=0.).to(tl.float32)
                if L2NORM:
                    b_ks *= tl.load(k_rstd + base_r + s.to(tl.int64) * H + 0 * o_k, mask=m_sk, other=0.)
                b_Gs = tl.load(G + off_s, mask=m_sk, other=0.)
                p_c = off_mi + i_i * BC + c
                b_mc = tl.load(dM + p_c, mask=m_i[:, None], other=0.)   # [BC, 1] dM[r, s]
                b_tc = tl.load(dT + p_c, mask=m_i[:, None], other=0.)   # [BC, 1] dT[r, s]
                b_dec = _exp_where(b_G - b_Gs[None, :], m_ik & (o_i > s)[:, None])
                b_dks = tl.sum((b_mc * b_q + b_tc * b_b * b_k) * b_dec, axis=0)
                b_dk += tl.where(((o_i == s) & m_bad)[:, None], b_dks[None, :], 0.)
                b_dq += tl.where(m_bad[:, None], b_mc, 0.) * b_ks[None, :] * b_dec
                b_dbk += tl.where(m_bad[:, None], b_tc, 0.) * b_ks[None, :] * b_dec

        # combine with the WY partials; dG: +q⊙dq + bk⊙d(bk) (rows), −k⊙dk (columns)
        b_dG = tl.load(dG + off_i, mask=m_ik, other=0.) + b_q * b_dq + b_b * b_k * b_dbk - b_k * b_dk
        b_dG = tl.where(m_ik, b_dG, 0.)
        b_dqt = tl.load(dq + off_i, mask=m_ik, other=0.) + b_dq
        b_dkt = tl.load(dk + off_i, mask=m_ik, other=0.) + b_dk + b_dbk * b_b
        b_dbt = tl.load(db + off_i, mask=m_ik, other=0.) + b_dbk * b_k
        b_dg = tl.cumsum(b_dG, axis=0, reverse=True) + b_carry[None, :]
        b_carry += tl.sum(b_dG, axis=0)
        if GATE:
            # g = −exp(A_log)·softplus(x), x = g_raw + dt_bias
            b_x = tl.load(g_raw + off_i, mask=m_ik, other=0.).to(tl.float32)
            if HAS_DT_BIAS:
                b_x += b_bias[None, :]
            b_ex = tl.exp(tl.minimum(b_x, 20.))
            b_sp = tl.where(b_x > 20., b_x, tl.where(b_x < -15., b_ex, tl.log(1. + b_ex)))
            b_dx = tl.where(m_ik, -b_dg * b_decay_rate * tl.sigmoid(b_x), 0.)
            b_dAl += tl.sum(tl.where(m_ik, -b_dg * b_decay_rate * b_sp, 0.), axis=0)
            b_ddt += tl.sum(b_dx, axis=0)
            b_dg = b_dx
        if L2NORM:
            # y = x·r with r = (Σx² + eps)^-1/2 (b_q, b_k hold y): dx = r (dy − y (y·dy))
            b_rq = tl.load(q_rstd + off_ri, mask=m_i, other=0.)[:, None]
            b_rk = tl.load(k_rstd + off_ri, mask=m_i, other=0.)[:, None]
            b_dqt = b_rq * (b_dqt - b_q * tl.sum(b_q * b_dqt, axis=1)[:, None])
            b_dkt = b_rk * (b_dkt - b_k * tl.sum(b_k * b_dkt, axis=1)[:, None])
        tl.store(dq_out + off_i, b_dqt.to(dq_out.dtype.element_ty), mask=m_ik)
        tl.store(dk_out + off_i, b_dkt.to(dk_out.dtype.element_ty), mask=m_ik)
        tl.store(db_out + off_i, b_dbt.to(db_out.dtype.element_ty), mask=m_ik)
        tl.store(dg_out + off_i, b_dg.to(dg_out.dtype.element_ty), mask=m_ik)
    if GATE:
        tl.store(dA_log_part + i_tg * H + i_h, tl.sum(b_dAl, axis=0))
        tl.store(ddt_part + (i_tg * H + i_h) * K + o_k, b_ddt, mask=m_k)
# --8<-- [end:chunk_bwd_local_pairwise_kernel]



def _state_bwd_block_v(programs: int, BVp: int) -> int:
    """V-block width of the reverse state pass: 64 when the (sequence, head) pairs alone fill the GPU
    (8x2K on an H200: 0.28 ms against 0.45 ms with 32), else 32 (more, shorter programs for the
    sequential walk). Never 16: Triton 3.6 faulted on this kernel with 16-wide blocks."""
    return 64 if BVp >= 64 and programs >= 128 else 32


def chunk_bwd_state(
    saved: ChunkForward,
    do: Tensor,
    dht: Tensor | None,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    chunk_size: int = 64,
    config: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor | None]:
    """Stage "state" (reference ``chunk_bwd_state``): (dS_end [NSLOT, HV, K, V], dR [B, T, HV, V], dh0).

    dS_end of chunk slot i is the gradient of that chunk's end state (the forward's slot numbering;
    unused slots of a packed batch stay unwritten); dh0 is None without an initial state.
    """
    B, T, H, K = saved.Y.shape
    HV, V = do.shape[2], do.shape[3]
    dev = do.device
    N = cu_seqlens.numel() - 1 if cu_seqlens is not None else B
    dS_end = empty((saved.h.shape[0], HV, K, V), do.dtype, dev)
    dR = empty((B, T, HV, V), do.dtype, dev)
    dh0 = empty((N, HV, K, V), torch.float32, dev) if initial_state is not None else None
    # state tiles of 128 rows (masked beyond K), two for K > 128: Triton 3.6 faulted on this kernel
    # with one 256-row tile and with 64-row tiles (K = 64) on an H200. The CPU interpreter has no such
    # fault and takes the smallest tile (the masked rows would only cost it time).
    BKH = 128 if do.is_cuda else min(128, max(16, triton.next_power_of_2(K)))
    BK, BVp = BKH * triton.cdiv(K, BKH), max(16, triton.next_power_of_2(V))
    cfg = {"BV": _state_bwd_block_v(N * HV, BVp), "num_warps": 4 if K <= 128 else 8,
           "num_stages": 2 if K <= 128 else 1, **(config or {})}
    chunk_bwd_state_kernel[(triton.cdiv(V, cfg["BV"]), N * HV)](
        saved.Qg, saved.Kt, saved.Y, saved.G, saved.Aqk, do, dht, dS_end, dR, dh0, cu_seqlens, T,
        H=H, HV=HV, K=K, V=V, BT=chunk_size, BK=BK, BKH=BKH, PREC=_dot_precision(do.dtype, K),
        USE_DHT=dht is not None, USE_DH0=dh0 is not None, IS_VARLEN=cu_seqlens is not None, **cfg,
    )
    return dS_end, dR, dh0


def chunk_bwd_local(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    b: Tensor,
    w: Tensor,
    scale: float,
    cu_seqlens: Tensor | None,
    saved: ChunkForward,
    do: Tensor,
    dR: Tensor,
    dS_end: Tensor,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Tensor | None = None,
    dt_bias: Tensor | None = None,
    chunk_size: int = 64,
    wy_config: dict | None = None,
    pairwise_config: dict | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """Stage "local" (reference ``chunk_bwd_local``): every gradient of every chunk given dS_end and dR.

    Two launches, local WY then local pairwise; returns (dq, dk, dv, dg, db, dw, dA_log, ddt_bias)
    with the in-op L2-norm and gate backward applied (dA_log, ddt_bias None without them).
    ``wy_config`` / ``pairwise_config`` override the launch parameters (tuning).
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    BT = chunk_size
    dev = q.device
    varlen = cu_seqlens is not None
    grid_t = saved.chunk_indices.shape[0] if varlen else triton.cdiv(T, BT)
    BK = max(16, triton.next_power_of_2(K))
    BVp = max(16, triton.next_power_of_2(V))
    prec = _dot_precision(q.dtype, K)
    f32 = torch.float32
    l2 = use_qk_l2norm_in_kernel
    gate = A_log is not None

    dq_p, dk_p, db_p, dG_p = (empty((B, T, H, K), f32, dev) for _ in range(4))
    dv, dw = empty(v.shape, v.dtype, dev), empty(w.shape, w.dtype, dev)
    dM, dT = empty((B, T, H, BT), f32, dev), empty((B, T, H, BT), f32, dev)
    chunk_bwd_local_wy_kernel[(grid_t, B * H)](
        q, k, b, saved.G, v, w, saved.A, saved.h, saved.R, do, dR, dS_end,
        dq_p, dk_p, db_p, dG_p, dv, dw, dM, dT, saved.q_rstd, saved.k_rstd,
        cu_seqlens, saved.chunk_indices, scale, T,
        H=H, HV=HV, K=K, V=V, BT=BT, PREC=prec, L2NORM=l2, IS_VARLEN=varlen,
        **{"BK": min(BK, 64), "BV": min(BVp, 64), "num_warps": 8, "num_stages": 2, **(wy_config or {})},
    )

    dq, dk, db = empty(q.shape, q.dtype, dev), empty(k.shape, k.dtype, dev), empty(b.shape, b.dtype, dev)
    dg = empty(g.shape, g.dtype, dev)
    dA_log_part = torch.zeros(grid_t * B, H, dtype=f32, device=dev) if gate else None
    ddt_part = torch.zeros(grid_t * B, H, K, dtype=f32, device=dev) if gate else None
    chunk_bwd_local_pairwise_kernel[(grid_t, B * H)](
        q, k, b, saved.G, dM, dT, dq_p, dk_p, db_p, dG_p, dq, dk, db, dg,
        saved.q_rstd, saved.k_rstd, g if gate else None, A_log, dt_bias, dA_log_part, ddt_part,
        cu_seqlens, saved.chunk_indices, T,
        H=H, K=K, BT=BT, BC=BC, BK=BK, EXP_MAX=DIAG_EXP_MAX, PREC=prec, L2NORM=l2, GATE=gate,
        HAS_DT_BIAS=dt_bias is not None, IS_VARLEN=varlen,
        **{"num_warps": 4, "num_stages": 1, **(pairwise_config or {})},
    )
    dA_log = dA_log_part.sum(0).to(A_log.dtype) if gate else None
    ddt_bias = ddt_part.sum(0).reshape(dt_bias.shape).to(dt_bias.dtype) if gate and dt_bias is not None else None
    return dq, dk, dv, dg, db, dw, dA_log, ddt_bias


def chunk_gdn2_bwd(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    b: Tensor,
    w: Tensor,
    scale: float,
    initial_state: Tensor | None,
    cu_seqlens: Tensor | None,
    saved: ChunkForward,
    do: Tensor,
    dht: Tensor | None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Tensor | None = None,
    dt_bias: Tensor | None = None,
    chunk_size: int = 64,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`gdn2.fast.chunk_fwd.chunk_gdn2_fwd` from its saved intermediates.

    ``q, k, v, g, b, w, initial_state, cu_seqlens`` and the keyword options are the forward's
    (contiguous; g is the raw gate when ``A_log`` is given); ``saved`` is the forward's
    :class:`~gdn2.fast.chunk_fwd.ChunkForward` with ``save=True``; ``do`` [B, T, HV, V] and
    ``dht`` [N, HV, K, V] (or None) are the incoming gradients. Returns
    ``(dq, dk, dv, dg, db, dw, dh0, dA_log, ddt_bias)`` in the dtypes of their inputs; dh0, dA_log
    and ddt_bias are None where the forward had no such input. Three launches (state, local WY,
    local pairwise) and, with the in-op gate, two small reductions over per-chunk partial sums.
    """
    do = do.contiguous()
    dht = None if dht is None else dht.contiguous()
    dS_end, dR, dh0 = chunk_bwd_state(saved, do, dht, initial_state, cu_seqlens, chunk_size)
    # the state stage's operands are dead from here; when the caller handed over the only reference
    # (recompute), dropping them lowers the peak memory of the local stage
    saved = saved._replace(o=None, Y=None, Qg=None, Kt=None, Aqk=None, U=None, gC=None)
    dq, dk, dv, dg, db, dw, dA_log, ddt_bias = chunk_bwd_local(
        q, k, v, g, b, w, scale, cu_seqlens, saved, do, dR, dS_end,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias, chunk_size=chunk_size,
    )
    if dh0 is not None:
        dh0 = dh0.to(initial_state.dtype)
    return dq, dk, dv, dg, db, dw, dh0, dA_log, ddt_bias
