"""Stages (4) and (5) of the chunk forward: state passing and output, one sequential kernel.

Reference: ``gdn2.ops.chunk_fwd.chunk_state_passing`` and ``chunk_output``. Fusing the two keeps the
chunk start states S₀ on chip: the output reads S₀ while it is still in registers, so S₀ goes to
memory only when a backward asks for it.
"""

import triton
import triton.language as tl

from .jit import F_H0, flag_bad_offsets, nonfinite, raise_flags, seq_bounds

__all__ = ["chunk_state_output_fwd_kernel"]


# --8<-- [start:chunk_state_output_fwd_kernel]
@triton.jit
def chunk_state_output_fwd_kernel(
    Y, Qg, Kt,               # [B, T, H, K] from chunk_wy_fwd_kernel
    Aqk,                     # [B, T, H, 64] from the intra kernels
    U,                       # [B, T, HV, V]
    gC,                      # [NSLOT, H, K] float32 γ_C per chunk slot
    h0,                      # initial state [N, HV, K, V] float32 (HAS_H0)
    o,                       # out [B, T, HV, V] in q's dtype (STORE_O)
    ht,                      # out final state [N, HV, K, V] float32 (STORE_FINAL)
    h_out,                   # out with SAVE: start state of every chunk slot [NSLOT, HV, K, V] float32
    R_out,                   # out with SAVE: residual writes R [B, T, HV, V] in q's dtype
    flags,                   # [1] int32: bad-input bits (jit.FLAG_BITS)
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    T, N,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BKH: tl.constexpr, BV: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_O: tl.constexpr, STORE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr, SAVE: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Walk one sequence's chunks in order for one value head and one block of BV value columns.

    Grid: (cdiv(V, BV), N·HV). The state block S [BK, BV] (float32) stays in registers for the whole
    sequence, as one [BKH, BV] tile or, for K > BKH, two. Per chunk: R = U − Y S₀, O = Q_γ S₀ + A_qk R,
    S ← Diag(γ_C) S₀ + K_tailᵀ R: 2·BT·BV·(3K + BT) FLOPs, the two products on the S → R → S path
    the sequential critical path. Bytes per token and value head: U read and O written once (2·V each
    in 16-bit), plus the key-side tiles re-read from L2 by each of the cdiv(V, BV) blocks. Without
    STORE_O (a backward's rerun, which needs R and the states only) the output's two products and its
    loads of Q_γ and A_qk are skipped. The first program of each sequence reports a bad initial state
    or bad packed offsets.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    if IS_VARLEN:
        slot0 = bos // BT + i_n                        # chunk slots as jit.chunk_bounds numbers them
    else:
        slot0 = i_n * tl.cdiv(T, BT)
    NT = tl.cdiv(eos - bos, BT)

    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BKH)
    o_k2 = BKH + o_k
    m_k = o_k < K
    m_k2 = o_k2 < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    off_in = o_k[:, None] * V + o_v[None, :]                          # [BKH, BV] offsets inside one state
    off_S = (i_n * HV + i_hv).to(tl.int64) * K * V + off_in
    m_S = m_k[:, None] & m_v[None, :]
    m_S2 = m_k2[:, None] & m_v[None, :]

    bad = tl.zeros([], tl.int32)
    b_S = tl.zeros([BKH, BV], tl.float32)
    if HAS_H0:
        b_S += tl.load(h0 + off_S, mask=m_S, other=0.0).to(tl.float32)
        bad |= nonfinite(b_S) * F_H0
    if BK > BKH:
        b_S2 = tl.zeros([BKH, BV], tl.float32)
        if HAS_H0:
            b_S2 += tl.load(h0 + off_S + BKH * V, mask=m_S2, other=0.0).to(tl.float32)
            bad |= nonfinite(b_S2) * F_H0
    if IS_VARLEN:
        if (i_v == 0) & (i_hv == 0):
            bad |= flag_bad_offsets(cu_seqlens, i_n, N, T)
    raise_flags(flags, bad)
    for i_t in range(NT):
        t0 = bos + i_t * BT
        m_t = o_t < eos - t0
        off_h = ((slot0 + i_t) * HV + i_hv).to(tl.int64) * K * V + off_in
        if SAVE:
            tl.store(h_out + off_h, b_S, mask=m_S)
            if BK > BKH:
                tl.store(h_out + off_h + BKH * V, b_S2, mask=m_S2)
        off_key = (t0 * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :]       # [BT, BKH]
        off_keyT = (t0 * H + i_h) * K + o_t[None, :] * (H * K) + o_k[:, None]      # [BKH, BT]
        off_val = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V) + o_v[None, :]    # [BT, BV]
        m_key = m_t[:, None] & m_k[None, :]
        m_keyT = m_k[:, None] & m_t[None, :]
        m_val = m_t[:, None] & m_v[None, :]
        off_gc = ((slot0 + i_t) * H + i_h) * K + o_k
        off_a = (t0 + o_t[:, None]) * H * BT + i_h * BT + o_t[None, :]              # [BT, BT] of A_qk
        b_y = tl.load(Y + off_key, mask=m_key, other=0.0)
        if STORE_O:
            b_qg = tl.load(Qg + off_key, mask=m_key, other=0.0)
        b_ktT = tl.load(Kt + off_keyT, mask=m_keyT, other=0.0)
        b_gc = tl.load(gC + off_gc, mask=m_k, other=0.0)
        if STORE_O:
            b_a = tl.load(Aqk + off_a, mask=m_t[:, None], other=0.0)
        b_u = tl.load(U + off_val, mask=m_val, other=0.0).to(tl.float32)

        b_Sd = b_S.to(b_y.dtype)
        b_yS = tl.dot(b_y, b_Sd, input_precision=DOT_PREC)
        if STORE_O:
            b_o = tl.dot(b_qg, b_Sd, input_precision=DOT_PREC)
        if BK > BKH:
            m_key2 = m_t[:, None] & m_k2[None, :]
            b_S2d = b_S2.to(b_y.dtype)
            b_yS = tl.dot(tl.load(Y + off_key + BKH, mask=m_key2, other=0.0), b_S2d, acc=b_yS,
                          input_precision=DOT_PREC)
            if STORE_O:
                b_o = tl.dot(tl.load(Qg + off_key + BKH, mask=m_key2, other=0.0), b_S2d, acc=b_o,
                             input_precision=DOT_PREC)
        b_Rd = (b_u - b_yS).to(b_y.dtype)                                 # (4) R = U − Y S₀
        if STORE_O:
            b_o = tl.dot(b_a, b_Rd, acc=b_o, input_precision=DOT_PREC)   # (5) O = Q_γ S₀ + A_qk R
            tl.store(o + off_val, b_o.to(o.dtype.element_ty), mask=m_val)
        if SAVE:
            tl.store(R_out + off_val, b_Rd, mask=m_val)
        b_S = b_S * b_gc[:, None] + tl.dot(b_ktT, b_Rd, input_precision=DOT_PREC)   # (4) S_C
        if BK > BKH:
            b_ktT2 = tl.load(Kt + off_keyT + BKH, mask=m_k2[:, None] & m_t[None, :], other=0.0)
            b_gc2 = tl.load(gC + off_gc + BKH, mask=m_k2, other=0.0)
            b_S2 = b_S2 * b_gc2[:, None] + tl.dot(b_ktT2, b_Rd, input_precision=DOT_PREC)
    if STORE_FINAL:
        tl.store(ht + off_S, b_S, mask=m_S)
        if BK > BKH:
            tl.store(ht + off_S + BKH * V, b_S2, mask=m_S2)
# --8<-- [end:chunk_state_output_fwd_kernel]
