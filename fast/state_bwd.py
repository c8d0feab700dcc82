"""Reverse state passing of the chunk backward, one sequential kernel.

Reference: ``gdn2.ops.chunk_bwd.chunk_bwd_state``. Per chunk, from last to first, with dS the gradient
of the chunk's end state:

    dR = A_qkᵀ dO + K_tail dS,   dS ← Diag(γ_C) dS + Q_γᵀ dO − Yᵀ dR
"""

import triton
import triton.language as tl

from .jit import seq_bounds

__all__ = ["chunk_bwd_state_kernel"]


# --8<-- [start:chunk_bwd_state_kernel]
@triton.jit(do_not_specialize=["T"])
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
    cu_seqlens,     # [N + 1] packed offsets, or None
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
    sequence, as one tile of BKH rows (masked beyond K) or, for K > BKH, two; per chunk the program loads Q_γ,
    K_tail, Y [BT, K], A_qk [BT, BT] and dO [BT, BV] and writes dS (the chunk's end-state
    gradient) and dR [BT, BV]. FLOPs per chunk and value head:
    2·BT²·V + 6·BT·K·V; bytes: the key-side operands once per V block, dO read and dR written once,
    one state-sized write per chunk.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    if IS_VARLEN:
        slot0 = bos // BT + i_n          # the forward's chunk-slot numbering
    else:
        slot0 = i_n.to(tl.int64) * tl.cdiv(T, BT)
    T = (eos - bos).to(tl.int32)         # from here on, the length of this sequence
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
