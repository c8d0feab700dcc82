"""Triton kernels of the chunkwise forward (SPEC §3) and their Python driver :func:`chunk_gdn2_fwd`.

The five reference stages of ``gdn2.ops.chunk`` run in two kernels, fused where fusing saves bytes:

    chunk_intra_wy_fwd_kernel      (1) local cumulative decay, (2) T, A = (I + T)⁻¹ and A_qk,
                                   (3) WY auxiliaries Y = A Ē, U = A Z, plus Q_γ and K_tail
    chunk_state_output_fwd_kernel  (4) state passing R = U − Y S₀, S_C = Diag(γ_C) S₀ + K_tailᵀ R,
                                   (5) output O = Q_γ S₀ + A_qk R

Kernel 1 is parallel over chunks; kernel 2 walks the chunks of one sequence in order, one program
per (value-column block, sequence, value head). Fusing (1)-(3) keeps G, T and A on chip (they never
touch memory unless the backward asks for them); fusing (4)-(5) means the chunk start states S₀
never go to memory: the output reads S₀ while it is still in registers.

Numerics (SPEC §3): every exponential is exp(G_r − G_s) with r ≥ s, so ≤ 1. Off-diagonal 16×16
sub-blocks factor it through an anchor token a = the first row of the row sub-block
(exp(G_r − G_a)·exp(G_a − G_s), both factors ≤ 1, a is never after a row token nor before a column
token); diagonal sub-blocks use the same factorisation at the sub-block's first row with the factor
above 1 clamped at e^DIAG_SPAN, and form the factors of the rows past that clamp elementwise, as
running products Π_{s<t≤r} α_t. Padded rows of a partly filled last chunk load as zeros (k = b = q = 0, g = 0).
"""

import functools
import os
from typing import NamedTuple, no_type_check

import torch
import triton
import triton.language as tl
from torch import Tensor

from .utils import empty, prepare_chunk_indices

__all__ = ["ChunkForward", "chunk_gdn2_fwd", "chunk_intra_wy_fwd_kernel", "chunk_state_output_fwd_kernel"]

SUB: tl.constexpr = tl.constexpr(16)  # sub-chunk size of the safe intra-chunk exponentials
#: largest exponent of a column factor exp(−c_s) of the diagonal sub-blocks' anchored product: e^60 ≈ 1e26
#: leaves float32 (and tf32/bf16, same exponent range) room for a [16, K] product without overflow
DIAG_SPAN: tl.constexpr = tl.constexpr(60.0)


@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def _gate(g_raw, A_log_h, bias):
    """SPEC §6 gate in float32: g = −exp(A_log)·softplus(g_raw + dt_bias) (softplus linear above 20)."""
    x = g_raw + bias
    return -tl.exp(A_log_h) * tl.where(x > 20.0, x, tl.log(1.0 + tl.exp(x)))


@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def _block_diag(x3, NS: tl.constexpr, BT: tl.constexpr):
    """[NS, 16, 16] diagonal blocks -> the [BT, BT] block-diagonal matrix they form."""
    o_i = tl.arange(0, NS)
    x4 = tl.where(o_i[:, None, None, None] == o_i[None, None, :, None], x3[:, :, None, :], 0.0)
    return tl.reshape(x4, [BT, BT])


@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def _load_gate(g, off, mask, i_h, o_k, m_k, A_log, dt_bias, K: tl.constexpr,
               USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr):
    """Load a tile of g (float32); with USE_GATE apply the in-kernel gate. Masked entries are 0."""
    b_g = tl.load(g + off, mask=mask, other=0.0).to(tl.float32)
    if USE_GATE:
        b_bias = tl.zeros_like(b_g)
        if HAS_DT_BIAS:
            b_bias += tl.load(dt_bias + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_g = tl.where(mask, _gate(b_g, tl.load(A_log + i_h).to(tl.float32), b_bias), 0.0)
    return b_g


# --8<-- [start:chunk_intra_wy_fwd_kernel]
@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def chunk_intra_wy_fwd_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]
    A_log, dt_bias,          # in-kernel gate: A_log [H], dt_bias [H*K] (read only with USE_GATE)
    Y, Qg, Kt, Aqk, U,       # outputs: Y, Qg, Kt [B, T, H, K], Aqk [B, T, H, BT] (q's dtype); U [B, T, HV, V]
    gC,                      # output: γ_C = exp(G_C) per chunk slot [NSLOT, H, K], float32
    G_out, A_out,            # saved with SAVE: G [B, T, H, K] and A [B, T, H, BT], float32
    q_rstd, k_rstd,          # saved with SAVE and L2NORM: 1/‖q‖, 1/‖k‖ [B, T, H], float32
    cu_seqlens,              # [N+1] sequence offsets (IS_VARLEN)
    chunk_indices,           # [NSLOT, 2] (sequence, chunk) per program, sequence -1 = no work (IS_VARLEN)
    scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, NS: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, L2NORM: tl.constexpr,
    IS_VARLEN: tl.constexpr, SAVE: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr = False,
):
    """Stages (1)-(3) for one chunk of one key head: G, T, A, A_qk, Y, Q_γ, K_tail, γ_C and U.

    Grid: (number of chunks, B·H); with cu_seqlens, (T // BT + N, H) and ``chunk_indices`` maps a
    program to its (sequence, chunk). Two passes over K in [BT, BK] tiles: the first loads q, k, b, g
    once per tile and accumulates T and A_qk (and ‖q‖², ‖k‖²); the second (L2 hits) forms Y, Q_γ and
    K_tail with the inverse. Then, for each of the HV/H value heads of its group, v and w tiles
    [BT, BV] give U. On chip: T, A_qk, A (BT×BT float32) and the diagonal sub-blocks
    [BT/16, 16, 16]; none of them goes to memory except A_qk (and A, G with SAVE).
    FLOPs per chunk: 4·(NS−1)·BT²·K (T and A_qk off-diagonal: one masked BT×BT product per anchor,
    (NS−1)/(2·NS) of it useful) + 4·16·BT·K (diagonal sub-blocks, one batched product) + ~2·NS·BT³ (inverse)
    + 2·BT²·K (Y) + 2·(HV/H)·BT²·V (U).
    Bytes per token: reads q, k, b (2·K each in 16-bit), g (4·K), v, w (2·V each per value head);
    writes Y, Q_γ, K_tail (2·K each), A_qk (2·BT), U (2·V per value head) and γ_C (4·K/BT).
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_c * 2)
        i_t = tl.load(chunk_indices + i_c * 2 + 1)
        if i_n < 0:
            return
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        slot = bos // BT + i_n + i_t
    else:
        i_t = i_c
        bos = i_b.to(tl.int64) * T
        eos = bos + T
        slot = i_b * tl.cdiv(T, BT) + i_t
    t0 = bos + i_t * BT                      # first token of the chunk (global row)
    L = tl.minimum(eos - t0, BT)             # valid rows of the chunk

    o_t = tl.arange(0, BT)
    m_t = o_t < L
    o_s = tl.arange(0, SUB)
    o_i = tl.arange(0, NS)
    base = (t0 * H + i_h) * K                # element offset of (t0, i_h, 0) on the key side
    p_row = base + o_t[:, None] * (H * K)                  # [BT, 1]
    rows3 = o_i[:, None, None] * SUB + o_s[None, :, None]  # [NS, 16, 1] chunk row of (sub-chunk, row)
    p_row3 = base + rows3 * (H * K)                        # [NS, 16, 1]
    m_t3 = rows3 < L
    rl3 = o_s[None, :, None]                               # row inside its sub-chunk

    # ---- pass 1, stages (1)+(2): T and A_qk, every input tile loaded once. Exponents are sums of
    # g ≤ 0 (never differences of large cumulative sums), so every factor is ≤ 1 and precise.
    b_sq = tl.zeros([BT], tl.float32)
    b_sk = tl.zeros([BT], tl.float32)
    b_Td = tl.zeros([NS, SUB, SUB], tl.float32)
    b_Ad = tl.zeros([NS, SUB, SUB], tl.float32)
    b_Toff = tl.zeros([BT, BT], tl.float32)
    b_Aoff = tl.zeros([BT, BT], tl.float32)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        o_k3 = o_k[None, None, :]
        m3 = m_t3 & m_k[None, None, :]
        p3 = p_row3 + o_k3
        b_q3 = tl.load(q + p3, mask=m3, other=0.0).to(tl.float32)             # [NS, 16, BK]
        b_k3 = tl.load(k + p3, mask=m3, other=0.0).to(tl.float32)
        b_bk3 = tl.load(b + p3, mask=m3, other=0.0).to(tl.float32) * b_k3
        b_g3 = _load_gate(g, p3, m3, i_h, o_k3, m_k[None, None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)
        if L2NORM:
            b_sq += tl.reshape(tl.sum(b_q3 * b_q3, 2), [BT])
            b_sk += tl.reshape(tl.sum(b_k3 * b_k3, 2), [BT])

        # diagonal sub-blocks by one batched product per tile, anchored at the first row a of each
        # sub-chunk: exp(G_r − G_s) = exp(c_r)·exp(−c_s) with c_r = Σ_{a<t≤r} g_t ≤ 0. The column
        # factor exp(−c_s) ≥ 1 is clamped at exp(DIAG_SPAN); a row r is exact when −c_r ≤ DIAG_SPAN
        # in every channel of the tile (then −c_s ≤ −c_r for all its columns s ≤ r). Which rows are
        # exact depends only on tokens up to r, so the choice stays causal.
        b_c3 = tl.cumsum(tl.where(rl3 == 0, 0.0, b_g3), 1)                    # c_r, [NS, 16, BK]
        b_er3 = tl.exp(b_c3)                                                    # row factors ≤ 1
        b_ok = tl.min(b_c3, 2) >= -DIAG_SPAN                                    # [NS, 16] exact rows
        b_kd3 = tl.permute(b_k3 * tl.exp(tl.minimum(-b_c3, DIAG_SPAN)), (0, 2, 1))   # [NS, BK, 16]
        b_Td += tl.where(b_ok[:, :, None], tl.dot(b_bk3 * b_er3, b_kd3, input_precision=DOT_PREC), 0.0)
        b_Ad += tl.where(b_ok[:, :, None], tl.dot(b_q3 * b_er3, b_kd3, input_precision=DOT_PREC), 0.0)
        if tl.min(b_ok.to(tl.int32)) == 0:
            # fallback for the rows past DIAG_SPAN of decay (strong decay): one column s per step
            # (s from 15 down to 0), E_r = exp(Σ_{s<t≤r} g_t) for r ≥ s as a running product
            # E ← E·α_{s+1} (factors ≤ 1), rows r < s and exact rows 0
            b_bad = (~b_ok)[:, :, None]
            b_E = tl.zeros([NS, SUB, BK], tl.float32)
            for j in tl.static_range(SUB):
                s = SUB - 1 - j
                p_s = base + (o_i * SUB + s)[:, None] * (H * K) + o_k[None, :]     # row s of every sub-chunk
                m_s = ((o_i * SUB + s) < L)[:, None] & m_k[None, :]
                if s < SUB - 1:
                    m_s1 = ((o_i * SUB + s + 1) < L)[:, None] & m_k[None, :]
                    b_a1 = tl.exp(_load_gate(g, p_s + H * K, m_s1, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias,
                                             K, USE_GATE, HAS_DT_BIAS))             # α_{s+1}, [NS, BK]
                    b_E = b_E * b_a1[:, None, :]
                b_E = tl.where(rl3 == s, 1.0, b_E)
                b_kE = b_E * tl.load(k + p_s, mask=m_s, other=0.0).to(tl.float32)[:, None, :]
                m_col = (o_s[None, None, :] == s) & b_bad
                b_Td += tl.where(m_col, tl.sum(b_bk3 * b_kE, 2)[:, :, None], 0.0)
                b_Ad += tl.where(m_col, tl.sum(b_q3 * b_kE, 2)[:, :, None], 0.0)

        # off-diagonal sub-blocks: rows of sub-chunk i against columns of sub-chunks j < i, anchored at
        # row a = 16·i: exp(Σ_{a<t≤r} g_t) (row factor) times exp(Σ_{s<t≤a} g_t) (column factor), the
        # latter = exp(Σ_{s<t≤end of j} g_t) · exp(Σ_{j<m<i} (sum of sub-chunk m) + g_a), all sums ≤ 0
        if NS > 1:
            b_er = tl.reshape(b_er3, [BT, BK])
            m_n3 = (rl3 < SUB - 1) & ((rows3 + 1) < L) & m_k[None, None, :]
            b_gn3 = _load_gate(g, p3 + H * K, m_n3, i_h, o_k3, m_k[None, None, :], A_log, dt_bias,
                               K, USE_GATE, HAS_DT_BIAS)                          # g of row r + 1 in its sub-chunk
            b_kc3 = b_k3 * tl.exp(tl.cumsum(b_gn3, 1, reverse=True))               # k_s·exp(Σ_{s<t≤end} g_t)
            b_tot = tl.sum(b_g3, 1)                                                # [NS, BK] sub-chunk sums
            b_ga = tl.sum(tl.where(rl3 == 0, b_g3, 0.0), 1)                        # g of each anchor, [NS, BK]
            b_bkr = tl.reshape(b_bk3, [BT, BK]) * b_er
            b_qr = tl.reshape(b_q3, [BT, BK]) * b_er
            blk = o_t // SUB
            for i in tl.static_range(1, NS):
                m_mid = (o_i[:, None] < o_i[None, :]) & (o_i[None, :] < i)           # [NS(j), NS(m)]
                b_x = tl.sum(tl.where(m_mid[:, :, None], b_tot[None, :, :], 0.0), 1) \
                    + tl.sum(tl.where((o_i == i)[:, None], b_ga, 0.0), 0)[None, :]   # [NS(j), BK]
                b_x = tl.where((o_i < i)[:, None], b_x, float("-inf"))
                b_kc = tl.trans(tl.reshape(b_kc3 * tl.exp(b_x)[:, None, :], [BT, BK]))   # [BK, BT]
                m_i = (blk == i)[:, None]
                if LOWP:
                    # bfloat16 operands (every factor ≤ 1 here), float32 accumulation
                    b_kcl = b_kc.to(Y.dtype.element_ty)
                    b_Toff += tl.dot(tl.where(m_i, b_bkr, 0.0).to(Y.dtype.element_ty), b_kcl)
                    b_Aoff += tl.dot(tl.where(m_i, b_qr, 0.0).to(Y.dtype.element_ty), b_kcl)
                else:
                    b_Toff += tl.dot(tl.where(m_i, b_bkr, 0.0), b_kc, input_precision=DOT_PREC)
                    b_Aoff += tl.dot(tl.where(m_i, b_qr, 0.0), b_kc, input_precision=DOT_PREC)
    b_Td = tl.where((o_s[:, None] > o_s[None, :])[None, :, :], b_Td, 0.0)    # T is strictly lower
    b_Ad = tl.where((o_s[:, None] >= o_s[None, :])[None, :, :], b_Ad, 0.0)   # A_qk is lower
    b_rq = tl.full([BT], 1.0, tl.float32)
    b_rk = tl.full([BT], 1.0, tl.float32)
    if L2NORM:
        b_rq = tl.rsqrt(b_sq + 1e-6)
        b_rk = tl.rsqrt(b_sk + 1e-6)
        if SAVE:
            tl.store(q_rstd + (t0 + o_t) * H + i_h, b_rq, mask=m_t)
            tl.store(k_rstd + (t0 + o_t) * H + i_h, b_rk, mask=m_t)
        b_rk3 = tl.reshape(b_rk, [NS, SUB])
        b_rq3 = tl.reshape(b_rq, [NS, SUB])
        b_Toff *= b_rk[:, None] * b_rk[None, :]
        b_Aoff *= b_rq[:, None] * b_rk[None, :]
        b_Td *= b_rk3[:, :, None] * b_rk3[:, None, :]
        b_Ad *= b_rq3[:, :, None] * b_rk3[:, None, :]

    b_Aqk = scale * (b_Aoff + _block_diag(b_Ad, NS, BT))
    p_A = (t0 + o_t[:, None]) * H * BT + i_h * BT + o_t[None, :]
    tl.store(Aqk + p_A, b_Aqk.to(Aqk.dtype.element_ty), mask=m_t[:, None])

    # ---- stage (2): A = (I + T)⁻¹: diagonal blocks by forward substitution, then block Horner
    b_Ai = tl.where((o_s[:, None] == o_s[None, :])[None, :, :], 1.0, tl.zeros([NS, SUB, SUB], tl.float32))
    for j in range(1, SUB):
        b_tj = tl.sum(tl.where((o_s == j)[None, :, None], b_Td, 0.0), 1)                 # row j: [NS, 16]
        b_new = tl.where((o_s == j)[None, :], 1.0, 0.0) - tl.sum(b_tj[:, :, None] * b_Ai, 1)
        b_Ai = tl.where((o_s == j)[None, :, None], b_new[:, None, :], b_Ai)
    b_A = _block_diag(b_Ai, NS, BT)                                                     # D = (I + T_d)⁻¹
    if NS > 1:
        # (I + T)⁻¹ = (I + M)⁻¹ D with M = D T_off strictly block-lower, so M^NS = 0:
        # (I + M)⁻¹ = I − M (I − M (I − ...)), NS − 1 factors of M.
        b_I = tl.where(o_t[:, None] == o_t[None, :], 1.0, 0.0)
        b_M = tl.dot(b_A, b_Toff, input_precision=DOT_PREC)
        b_X = b_I - b_M
        for _ in tl.static_range(NS - 2):
            b_X = b_I - tl.dot(b_M, b_X, input_precision=DOT_PREC)
        b_A = tl.dot(b_X, b_A, input_precision=DOT_PREC)
    if SAVE:
        tl.store(A_out + p_A, b_A, mask=m_t[:, None])

    # ---- pass 2, stage (3): Y = A (γ⊙b⊙k), Q_γ = scale·γ⊙q, K_tail = exp(G_C − G)⊙k, γ_C
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m = m_t[:, None] & m_k[None, :]
        b_q = tl.load(q + p_row + o_k[None, :], mask=m, other=0.0).to(tl.float32)
        b_k = tl.load(k + p_row + o_k[None, :], mask=m, other=0.0).to(tl.float32) * b_rk[:, None]
        b_b = tl.load(b + p_row + o_k[None, :], mask=m, other=0.0).to(tl.float32)
        b_g = _load_gate(g, p_row + o_k[None, :], m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias,
                         K, USE_GATE, HAS_DT_BIAS)
        b_G = tl.cumsum(b_g, 0)                                     # (1) G_r = Σ_{i≤r} g_i
        if SAVE:
            tl.store(G_out + p_row + o_k[None, :], b_G, mask=m)
        b_GC = tl.sum(b_g, 0)                                        # G of the last valid row
        b_gamma = tl.exp(b_G)
        m_n = ((o_t + 1) < L)[:, None] & m_k
        b_gn = _load_gate(g, p_row + H * K + o_k[None, :], m_n, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias,
                          K, USE_GATE, HAS_DT_BIAS)                   # g of row r + 1
        b_tail = tl.exp(tl.cumsum(b_gn, 0, reverse=True))            # exp(G_C − G_r) = exp(Σ_{r<t≤C} g_t)
        if LOWP:
            b_Y = tl.dot(b_A.to(Y.dtype.element_ty), (b_gamma * b_b * b_k).to(Y.dtype.element_ty))
        else:
            b_Y = tl.dot(b_A, b_gamma * b_b * b_k, input_precision=DOT_PREC)
        tl.store(Y + p_row + o_k[None, :], b_Y.to(Y.dtype.element_ty), mask=m)
        tl.store(Qg + p_row + o_k[None, :], (b_gamma * b_q * (scale * b_rq)[:, None]).to(Qg.dtype.element_ty),
                 mask=m)
        tl.store(Kt + p_row + o_k[None, :], (b_tail * b_k).to(Kt.dtype.element_ty), mask=m)
        tl.store(gC + (slot * H + i_h) * K + o_k, tl.exp(b_GC), mask=m_k)

    # ---- stage (3): U = A (w⊙v) for every value head of the group (GVA: the inverse is shared)
    for i_g in range(HV // H):
        i_hv = i_h * (HV // H) + i_g
        p_vrow = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V)
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m = m_t[:, None] & (o_v < V)[None, :]
            b_v = tl.load(v + p_vrow + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            b_w = tl.load(w + p_vrow + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            if LOWP:
                b_U = tl.dot(b_A.to(U.dtype.element_ty), (b_w * b_v).to(U.dtype.element_ty))
            else:
                b_U = tl.dot(b_A, b_w * b_v, input_precision=DOT_PREC)
            tl.store(U + p_vrow + o_v[None, :], b_U.to(U.dtype.element_ty), mask=m)
# --8<-- [end:chunk_intra_wy_fwd_kernel]


# --8<-- [start:chunk_state_output_fwd_kernel]
@triton.jit
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def chunk_state_output_fwd_kernel(
    Y, Qg, Kt, Aqk, U, gC,   # from chunk_intra_wy_fwd_kernel (layouts there)
    h0,                      # initial state [N, HV, K, V] float32 (HAS_H0)
    o,                       # output [B, T, HV, V] in q's dtype
    ht,                      # final state [N, HV, K, V] float32 (STORE_FINAL)
    h_out, R_out,            # saved with SAVE: start state of every chunk slot [NSLOT, HV, K, V] float32,
                             # residual writes R [B, T, HV, V] in q's dtype
    cu_seqlens,              # [N+1] sequence offsets (IS_VARLEN)
    T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BT: tl.constexpr, BK: tl.constexpr, BKH: tl.constexpr, BV: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr, SAVE: tl.constexpr,
    DOT_PREC: tl.constexpr,
):
    """Stages (4)+(5): walk one sequence's chunks in order for one value head and V-column block.

    Grid: (cdiv(V, BV), N·HV). The state block S [BK, BV] (float32) stays in registers for the whole
    sequence; per chunk the program loads Y, Q_γ, K_tail [BT, K], A_qk [BT, BT] (shared by the
    value heads of a group and the V blocks, so mostly L2 hits), U [BT, BV] and γ_C [K], and writes
    O [BT, BV]. Per chunk it does four products: R = U − Y S, O = Q_γ S + A_qk R,
    S ← Diag(γ_C) S + K_tailᵀ R, i.e. 2·BT·BV·(3K + BT) FLOPs; the two on the S → R → S path are
    the sequential critical path. Bytes per token and value head: 2·V (U) + 2·V (O) read/written
    once, plus the key-side tiles re-read from L2 by each of the cdiv(V, BV) blocks.
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        slot0 = bos // BT + i_n
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
        slot0 = i_n * tl.cdiv(T, BT)
    NT = tl.cdiv(eos - bos, BT)

    # K > 128 is held as two [BKH, BV] state tiles (rows 0..127 and 128..255): one 256-row tile
    # hits a shared-memory fault in Triton 3.6's code for the K_tailᵀ R product.
    o_t = tl.arange(0, BT)
    o_k = tl.arange(0, BKH)
    o_k2 = BKH + o_k
    m_k = o_k < K
    m_k2 = o_k2 < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    p_in = o_k[:, None] * V + o_v[None, :]                             # [BKH, BV] offsets inside one state
    p_S = (i_n * HV + i_hv).to(tl.int64) * K * V + p_in
    m_S = m_k[:, None] & m_v[None, :]
    m_S2 = m_k2[:, None] & m_v[None, :]

    b_S = tl.zeros([BKH, BV], tl.float32)
    if HAS_H0:
        b_S += tl.load(h0 + p_S, mask=m_S, other=0.0).to(tl.float32)
    if BK > BKH:
        b_S2 = tl.zeros([BKH, BV], tl.float32)
        if HAS_H0:
            b_S2 += tl.load(h0 + p_S + BKH * V, mask=m_S2, other=0.0).to(tl.float32)
    for i_t in range(NT):
        t0 = bos + i_t * BT
        m_t = o_t < eos - t0
        p_h = ((slot0 + i_t) * HV + i_hv).to(tl.int64) * K * V + p_in
        if SAVE:
            tl.store(h_out + p_h, b_S, mask=m_S)
            if BK > BKH:
                tl.store(h_out + p_h + BKH * V, b_S2, mask=m_S2)
        p_key = (t0 * H + i_h) * K + o_t[:, None] * (H * K) + o_k[None, :]       # [BT, BKH]
        p_keyT = (t0 * H + i_h) * K + o_t[None, :] * (H * K) + o_k[:, None]      # [BKH, BT]
        p_val = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V) + o_v[None, :]    # [BT, BV]
        m_key = m_t[:, None] & m_k[None, :]
        m_keyT = m_k[:, None] & m_t[None, :]
        m_val = m_t[:, None] & m_v[None, :]
        p_gc = ((slot0 + i_t) * H + i_h) * K + o_k
        b_y = tl.load(Y + p_key, mask=m_key, other=0.0)
        b_qg = tl.load(Qg + p_key, mask=m_key, other=0.0)
        b_ktT = tl.load(Kt + p_keyT, mask=m_keyT, other=0.0)
        b_gc = tl.load(gC + p_gc, mask=m_k, other=0.0)
        b_a = tl.load(Aqk + (t0 + o_t[:, None]) * H * BT + i_h * BT + o_t[None, :], mask=m_t[:, None], other=0.0)
        b_u = tl.load(U + p_val, mask=m_val, other=0.0).to(tl.float32)

        b_Sd = b_S.to(b_y.dtype)
        b_yS = tl.dot(b_y, b_Sd, input_precision=DOT_PREC)
        b_o = tl.dot(b_qg, b_Sd, input_precision=DOT_PREC)
        if BK > BKH:
            m_key2 = m_t[:, None] & m_k2[None, :]
            b_S2d = b_S2.to(b_y.dtype)
            b_yS = tl.dot(tl.load(Y + p_key + BKH, mask=m_key2, other=0.0), b_S2d, acc=b_yS,
                          input_precision=DOT_PREC)
            b_o = tl.dot(tl.load(Qg + p_key + BKH, mask=m_key2, other=0.0), b_S2d, acc=b_o,
                         input_precision=DOT_PREC)
        b_Rd = (b_u - b_yS).to(b_y.dtype)                                 # (4) R = U − Y S₀
        b_o = tl.dot(b_a, b_Rd, acc=b_o, input_precision=DOT_PREC)       # (5) O = Q_γ S₀ + A_qk R
        tl.store(o + p_val, b_o.to(o.dtype.element_ty), mask=m_val)
        if SAVE:
            tl.store(R_out + p_val, b_Rd, mask=m_val)
        b_S = b_S * b_gc[:, None] + tl.dot(b_ktT, b_Rd, input_precision=DOT_PREC)   # (4) S_C
        if BK > BKH:
            b_ktT2 = tl.load(Kt + p_keyT + BKH, mask=m_k2[:, None] & m_t[None, :], other=0.0)
            b_gc2 = tl.load(gC + p_gc + BKH, mask=m_k2, other=0.0)
            b_S2 = b_S2 * b_gc2[:, None] + tl.dot(b_ktT2, b_Rd, input_precision=DOT_PREC)
    if STORE_FINAL:
        tl.store(ht + p_S, b_S, mask=m_S)
        if BK > BKH:
            tl.store(ht + p_S + BKH * V, b_S2, mask=m_S2)
# --8<-- [end:chunk_state_output_fwd_kernel]


class ChunkForward(NamedTuple):
    """What :func:`chunk_gdn2_fwd` returns. Layouts are token-major like the inputs.

    Always: ``o`` [B, T, HV, V] (q's dtype) and ``final_state`` [N, HV, K, V] float32 or None.
    With ``save=True`` (else None), the intermediates a backward needs (SPEC §3 symbols; C = chunk
    size; a chunk of sequence n starts at token ``bos_n + i_t·C``; rows past the sequence end hold
    zeros or are unwritten):

    - ``G`` [B, T, H, K] float32: chunk-local cumulative log-decay G_r (after the in-kernel gate).
    - ``A`` [B, T, H, C] float32: row r of chunk i_t's A = (I + T)⁻¹ sits at token t0 + r.
    - ``Aqk`` [B, T, H, C] q's dtype: scale·q_r k_s exp(G_r − G_s) for s ≤ r, 0 above (same layout).
    - ``Y`` [B, T, H, K], ``Qg`` (= scale·γ⊙q) [B, T, H, K], ``Kt`` (= exp(G_C − G)⊙k) [B, T, H, K],
      ``U`` [B, T, HV, V], ``R`` (= U − Y S₀) [B, T, HV, V]: q's dtype.
    - ``gC`` [NSLOT, H, K] float32: γ_C = exp(G of the chunk's last token).
    - ``h`` [NSLOT, HV, K, V] float32: the state S₀ at the start of every chunk.
    - ``q_rstd``, ``k_rstd`` [B, T, H] float32: 1/sqrt(‖x‖² + 1e-6) (only with the in-kernel L2 norm;
      q, k above are then the normalised ones, e.g. Qg uses q·q_rstd).
    - ``chunk_indices`` (int32 [NSLOT, 2], varlen only): see :func:`gdn2.fast.utils.prepare_chunk_indices`.

    Chunk slots: without cu_seqlens, chunk i_t of sequence n is slot n·ceil(T/C) + i_t (NSLOT =
    B·ceil(T/C)); with cu_seqlens it is bos_n // C + n + i_t (NSLOT = T // C + N; slots between
    sequences are unused).
    """

    o: Tensor
    final_state: Tensor | None
    G: Tensor | None = None
    A: Tensor | None = None
    Aqk: Tensor | None = None
    Y: Tensor | None = None
    Qg: Tensor | None = None
    Kt: Tensor | None = None
    U: Tensor | None = None
    R: Tensor | None = None
    gC: Tensor | None = None
    h: Tensor | None = None
    q_rstd: Tensor | None = None
    k_rstd: Tensor | None = None
    chunk_indices: Tensor | None = None


#: run stages (1)-(3) through the 16×16-tile kernels of fast/chunk_intra.py (chunk size 64 only).
#: On by default: the forward is 1.3-1.8× faster with it than with the one-kernel intra stage on an H200
#: (8×2K to 1×16K, K = V = 128, bf16; benchmarks/NOTES.md);
#: GDN2_INTRA_V2=0 (or ``intra_config={"V2": False}``) selects the one-kernel stage, which chunk sizes 16 and 32
#: always take.
INTRA_V2: bool = os.environ.get("GDN2_INTRA_V2", "1") != "0"


def _next_pow2(x: int) -> int:
    return 1 << max(0, (x - 1).bit_length())


def chunk_gdn2_fwd(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    scale: float,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_indices: Tensor | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Tensor | None = None,
    dt_bias: Tensor | None = None,
    chunk_size: int = 64,
    save: bool = False,
    intra_config: dict | None = None,
    state_config: dict | None = None,
) -> ChunkForward:
    """Run the chunkwise forward on validated, contiguous inputs (see :class:`ChunkForward`).

    No checks and no host synchronisation here (the public ``chunk_gdn2`` validates). ``A_log``
    given means g is the raw gate; ``chunk_size`` is 16, 32 or 64; ``save`` keeps the intermediates
    for a backward. ``intra_config`` = (BK, num_warps, LOWP) of the intra kernel and ``state_config`` =
    (BV, num_warps, num_stages) of the state kernel override the defaults (tuning, benchmarks);
    ``intra_config={"V2": True}`` (or ``INTRA_V2``) runs the 16×16-tile kernels of ``chunk_intra.py``
    at chunk size 64, with {"diag": ..., "pairs": ..., "wy": ...} launch settings.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    BT = chunk_size
    dev = q.device
    is_varlen = cu_seqlens is not None
    N = cu_seqlens.numel() - 1 if is_varlen else B
    if is_varlen:
        if chunk_indices is None:
            chunk_indices = prepare_chunk_indices(cu_seqlens, BT, T)
        n_slots = T // BT + N
        grid1 = (n_slots, H)
    else:
        n_slots = B * triton.cdiv(T, BT)
        grid1 = (triton.cdiv(T, BT), B * H)
    BKp, BVp = max(16, _next_pow2(K)), max(16, _next_pow2(V))
    intra_config = dict(intra_config or {})
    use_v2 = bool(intra_config.pop("V2", INTRA_V2)) and BT == 64
    # bfloat16 inputs: the off-diagonal, Y and U products take bfloat16 operands (H200, 8×2K: 1.70 ms
    # against 1.83 with tf32 ones; o error 3.4e-3 against 3.1e-3, bound 1e-2; benchmarks/NOTES.md).
    # Not float16: its exponent range underflows the decay factors, and a strong-decay test failed on
    # an H200 with float16 operands.
    cfg1 = {"BK": min(32, BKp), "BV": min(32, BVp), "num_warps": 4, "LOWP": q.dtype == torch.bfloat16,
            **intra_config}
    dot_prec = "ieee" if q.dtype == torch.float32 else "tf32"
    dt = q.dtype

    Y, Qg, Kt = (empty((B, T, H, K), dt, dev) for _ in range(3))
    Aqk = empty((B, T, H, BT), dt, dev)
    U = empty((B, T, HV, V), dt, dev)
    gC = empty((n_slots, H, K), torch.float32, dev)
    G_out = empty((B, T, H, K), torch.float32, dev) if save else None
    A_out = empty((B, T, H, BT), torch.float32, dev) if save else None
    l2 = use_qk_l2norm_in_kernel
    q_rstd = empty((B, T, H), torch.float32, dev) if save and l2 else None
    k_rstd = empty((B, T, H), torch.float32, dev) if save and l2 else None
    if use_v2:
        # the 16×16-tile intra stage (fast/chunk_intra.py): A and the norms go through memory
        from .chunk_intra import launch_intra_v2

        f32 = torch.float32
        launch_intra_v2(
            q, k, v, g, b, w, A_log, dt_bias, Aqk,
            A_out if save else empty((B, T, H, BT), f32, dev),
            q_rstd if q_rstd is not None else empty((B, T, H), f32, dev),
            k_rstd if k_rstd is not None else empty((B, T, H), f32, dev),
            Y, Qg, Kt, U, gC, G_out, cu_seqlens, chunk_indices, scale, grid1,
            l2norm=l2, save=save, dot_prec=dot_prec, lowp=q.dtype == torch.bfloat16, config=intra_config,
        )
    else:
        chunk_intra_wy_fwd_kernel[grid1](
            q, k, v, g, b, w, A_log, dt_bias,
            Y, Qg, Kt, Aqk, U, gC, G_out, A_out, q_rstd, k_rstd,
            cu_seqlens, chunk_indices, scale, T,
            H=H, HV=HV, K=K, V=V, BT=BT, NS=BT // 16,
            USE_GATE=A_log is not None, HAS_DT_BIAS=dt_bias is not None, L2NORM=l2,
            IS_VARLEN=is_varlen, SAVE=save, DOT_PREC=dot_prec,
            num_stages=1, **cfg1,
        )

    o = empty((B, T, HV, V), dt, dev)
    ht = empty((N, HV, K, V), torch.float32, dev) if output_final_state else None
    h = empty((n_slots, HV, K, V), torch.float32, dev) if save else None
    R = empty((B, T, HV, V), dt, dev) if save else None
    n_sm = _sm_count(dev.index if dev.index is not None else torch.cuda.current_device()) if dev.type == "cuda" \
        else 132
    BV, warps = _state_block_v(N * HV, BVp, K, save, q.element_size(), n_sm)
    cfg2 = {"BV": BV, "num_warps": warps, "num_stages": 2,
            **(state_config or {})}
    grid2 = (triton.cdiv(V, cfg2["BV"]), N * HV)
    chunk_state_output_fwd_kernel[grid2](
        Y, Qg, Kt, Aqk, U, gC, initial_state, o, ht, h, R, cu_seqlens, T,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BKp, BKH=min(BKp, 128),
        HAS_H0=initial_state is not None, STORE_FINAL=output_final_state, IS_VARLEN=is_varlen, SAVE=save,
        DOT_PREC=dot_prec, **cfg2,
    )
    if not save:
        return ChunkForward(o, ht)
    return ChunkForward(o, ht, G_out, A_out, Aqk, Y, Qg, Kt, U, R, gC, h, q_rstd, k_rstd, chunk_indices)


def _state_block_v(programs: int, BVp: int, K: int, save: bool = False, itemsize: int = 2,
                   n_sm: int = 132) -> tuple[int, int]:
    """(BV, num_warps) of the state kernel for ``programs`` = N·HV (sequence, value head) pairs.

    Each program walks its sequence's chunks in order, and the kernel's 127 KB of shared memory leaves
    one program per SM, so time ≈ waves × chunks × per-chunk latency. Measured per-chunk latency on an
    H200 (K = V = 128, bf16; benchmarks/NOTES.md): BV 16 1.85 µs, 32 2.1, 64 2.6, 128 (8 warps) 4.8.
    So 16-bit inputs take the narrowest BV whose programs fit in one wave of ``n_sm`` SMs, and BV 128
    when none does (8×2K: BV 128, 155 µs against 270 at BV 32; 1×16K: BV 16). float32 inputs keep the
    rule measured before (BV 64 or 32 when there are many programs, else 16).
    K > 128 takes at most 32, and 16 when saving or with float32 inputs (at 32, Triton 3.6 asked 233472 B
    of shared memory when saving and 237568 B in float32, over the H200's 232448; with num_stages 1
    instead it read shared memory out of bounds; benchmarks/experiments/launch_check.py checks this)."""
    if K > 128:
        return (16 if save or itemsize > 2 else 32), 4
    if itemsize > 2:
        for bv in (64, 32):
            if bv <= BVp and programs * triton.cdiv(BVp, bv) >= 264:
                return bv, 4
        return 16, 4
    widths = [bv for bv in (16, 32, 64, 128) if bv <= BVp]
    bv = next((bv for bv in widths if programs * triton.cdiv(BVp, bv) <= n_sm), widths[-1])
    return bv, 8 if bv == 128 else 4


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count

