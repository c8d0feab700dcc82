"""Stages (1)-(3) of the chunk forward from 16×16 tiles: three small kernels (the default at chunk size 64).

``chunk_gdn2_fwd`` runs these in place of ``chunk_intra_wy_fwd_kernel`` at chunk size 64, with the same
outputs (``intra_config={"V2": False}``, ``chunk_fwd.INTRA_V2 = False`` or ``GDN2_INTRA_V2=0`` select the
one-kernel stage, which chunk sizes 16 and 32 always take):

    chunk_diag_v2_kernel          per 16-row sub-chunk: its diagonal blocks of T and A_qk, (I + T_ii)⁻¹,
                                  1/‖q‖ and 1/‖k‖ of its rows; zeros right of the diagonal blocks
    chunk_pairs_solve_v2_kernel   per chunk: the six off-diagonal blocks of T and A_qk from the four
                                  sub-chunks' [16, BK] tiles, then A_ij = −A_ii Σ_{j≤m<i} T_im A_mj
    chunk_wy_v2_kernel            per chunk: Y = A (γ⊙b⊙k), Q_γ, K_tail, γ_C (and G) per key tile and
                                  U = A (w⊙v) per value tile, A loaded once

Why (benchmarks/NOTES.md): Nsight Compute on an H200 shows the one-kernel intra stage issuing one
instruction per 4.3 cycles per scheduler at 12.5% occupancy (255 registers, spills), a third of its
stalls on shared memory, where its [BT, BT] and [NS, 16, BK] register tiles are reshaped before each
product. Here every operand is a [16, BK] or [64, BK] tile loaded from memory in the layout its
product wants, and each kernel holds few accumulators. Numerics are those of the one-kernel path:
every exponent is a sum of g ≤ 0 anchored at the first row of a 16-row sub-chunk; the diagonal
blocks' column factor is clamped at e^DIAG_SPAN and rows past it take exact running products.
The round trip of A (float32) and of 1/‖q‖, 1/‖k‖ through memory is the price: 264 bytes per token
and head, written once and read twice. On an H200 at 8×2K (K = V = 128, bf16) the three kernels take
about 0.8 ms where the one-kernel stage takes 1.4 ms (benchmarks/NOTES.md).
"""

import json
import os
from typing import no_type_check

import triton
import triton.language as tl

from .chunk_fwd import DIAG_SPAN, _load_gate

__all__ = ["chunk_diag_v2_kernel", "chunk_pairs_solve_v2_kernel", "chunk_wy_v2_kernel", "launch_intra_v2"]


@triton.jit
@no_type_check
def _span(cu_seqlens, chunk_indices, i_c, i_b, T, IS_VARLEN: tl.constexpr):
    """(first token of the chunk, its valid rows, its slot, whether the program has work); chunk size 64."""
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_c * 2)
        i_t = tl.load(chunk_indices + i_c * 2 + 1)
        bos = tl.load(cu_seqlens + tl.maximum(i_n, 0)).to(tl.int64)
        eos = tl.load(cu_seqlens + tl.maximum(i_n, 0) + 1).to(tl.int64)
        slot = bos // 64 + i_n + i_t
        work = i_n >= 0
    else:
        i_t = i_c
        bos = i_b.to(tl.int64) * T
        eos = bos + T
        slot = i_b * tl.cdiv(T, 64) + i_t
        work = i_c >= 0
    t0 = bos + i_t * 64
    return t0, tl.minimum(eos - t0, 64).to(tl.int32), slot, work


@triton.jit
@no_type_check
def _inv_unit_lower(b_T, o_s):
    """(I + T)⁻¹ of a strictly lower 16×16 T by forward substitution on its rows."""
    b_X = tl.where(o_s[:, None] == o_s[None, :], 1.0, 0.0)
    for j in range(1, 16):
        b_t = tl.sum(tl.where((o_s == j)[:, None], b_T, 0.0), 0)                    # row j of T
        b_new = tl.where(o_s == j, 1.0, 0.0) - tl.sum(b_t[:, None] * b_X, 0)
        b_X = tl.where((o_s == j)[:, None], b_new[None, :], b_X)
    return b_X


@triton.jit
@no_type_check
def _blk_ptr(ptr, t0, i_h, i, j, o_s, H: tl.constexpr):
    """Pointers of block (i, j) of a chunk's [64, 64] matrix stored a row per token, [B, T, H, 64]."""
    return ptr + (t0 + i * 16 + o_s[:, None]) * (H * 64) + i_h * 64 + j * 16 + o_s[None, :]


# --8<-- [start:chunk_diag_v2_kernel]
@triton.jit
@no_type_check
def chunk_diag_v2_kernel(
    q, k, g, b,              # inputs [B, T, H, K]
    A_log, dt_bias,          # in-kernel gate (USE_GATE)
    Aqk, A,                  # outputs [B, T, H, 64]: A_qk (q's dtype), A = (I + T)⁻¹ (float32), diagonal blocks
    q_rstd, k_rstd,          # outputs [B, T, H] float32: 1/‖q‖, 1/‖k‖ (1 without L2NORM)
    cu_seqlens, chunk_indices, scale, T,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    L2NORM: tl.constexpr, IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One 16-row sub-chunk i: T_ii, (A_qk)_ii, (I + T_ii)⁻¹. Grid (chunks·4, B·H) or (slots·4, H).

    Anchored at the sub-chunk's first row a: exp(F_r)·exp(−F_s), F_r = Σ_{a<t≤r} g_t, the column
    factor clamped at e^DIAG_SPAN; the rows of a key tile past the clamp take exact running products
    column by column. Also writes zeros right of the diagonal blocks (the pairs kernel fills the left).
    """
    i_x, i_bh = tl.program_id(0), tl.program_id(1)
    i_c, i_i = i_x // 4, i_x % 4
    i_b, i_h = i_bh // H, i_bh % H
    t0, L, slot, work = _span(cu_seqlens, chunk_indices, i_c, i_b, T, IS_VARLEN)
    if work:
        o_s = tl.arange(0, 16)
        r = i_i * 16 + o_s
        m_r = r < L
        base = (t0 * H + i_h) * K
        b_Td = tl.zeros([16, 16], tl.float32)
        b_Ad = tl.zeros([16, 16], tl.float32)
        b_sq = tl.zeros([16], tl.float32)
        b_sk = tl.zeros([16], tl.float32)
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            p = base + r[:, None] * (H * K) + o_k[None, :]
            m = m_r[:, None] & m_k[None, :]
            b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
            b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
            b_bk = tl.load(b + p, mask=m, other=0.0).to(tl.float32) * b_k
            b_g = _load_gate(g, p, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)
            b_sq += tl.sum(b_q * b_q, 1)
            b_sk += tl.sum(b_k * b_k, 1)
            b_F = tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0)
            b_ok = tl.min(b_F, 1) >= -DIAG_SPAN
            b_er = tl.exp(b_F)
            b_kd = tl.trans(b_k * tl.exp(tl.minimum(-b_F, DIAG_SPAN)))
            b_Td += tl.where(b_ok[:, None], tl.dot(b_bk * b_er, b_kd, input_precision=DOT_PREC), 0.0)
            b_Ad += tl.where(b_ok[:, None], tl.dot(b_q * b_er, b_kd, input_precision=DOT_PREC), 0.0)
            if tl.min(b_ok.to(tl.int32)) == 0:
                # strong decay: column s by column s (15 down to 0), E_r = Π_{s<t≤r} α_t (factors ≤ 1)
                b_E = tl.zeros_like(b_q)
                for j in range(16):
                    s = 15 - j
                    b_a = tl.sum(tl.where((o_s == s + 1)[:, None], b_g, 0.0), 0)       # g_{s+1}; 0 at s = 15
                    b_E = tl.where((o_s == s)[:, None], 1.0, b_E * tl.exp(b_a)[None, :])
                    b_ks = tl.sum(tl.where((o_s == s)[:, None], b_k, 0.0), 0)
                    m_cs = (o_s == s)[None, :] & (~b_ok)[:, None]
                    b_Td += tl.where(m_cs, tl.sum(b_bk * b_E * b_ks[None, :], 1)[:, None], 0.0)
                    b_Ad += tl.where(m_cs, tl.sum(b_q * b_E * b_ks[None, :], 1)[:, None], 0.0)
        b_rq = tl.full([16], 1.0, tl.float32)
        b_rk = tl.full([16], 1.0, tl.float32)
        if L2NORM:
            b_rq = tl.rsqrt(b_sq + 1e-6)
            b_rk = tl.rsqrt(b_sk + 1e-6)
        tl.store(q_rstd + (t0 + r) * H + i_h, b_rq, mask=m_r)
        tl.store(k_rstd + (t0 + r) * H + i_h, b_rk, mask=m_r)
        b_Td = tl.where(o_s[:, None] > o_s[None, :], b_Td * b_rk[:, None] * b_rk[None, :], 0.0)
        b_Ad = tl.where(o_s[:, None] >= o_s[None, :], scale * b_Ad * b_rq[:, None] * b_rk[None, :], 0.0)
        m_blk = m_r[:, None]
        tl.store(_blk_ptr(Aqk, t0, i_h, i_i, i_i, o_s, H), b_Ad.to(Aqk.dtype.element_ty), mask=m_blk)
        tl.store(_blk_ptr(A, t0, i_h, i_i, i_i, o_s, H), _inv_unit_lower(b_Td, o_s), mask=m_blk)
        z = tl.zeros([16, 16], tl.float32)
        for j in range(i_i + 1, 4):
            tl.store(_blk_ptr(Aqk, t0, i_h, i_i, j, o_s, H), z.to(Aqk.dtype.element_ty), mask=m_blk)
            tl.store(_blk_ptr(A, t0, i_h, i_i, j, o_s, H), z, mask=m_blk)
# --8<-- [end:chunk_diag_v2_kernel]


@triton.jit
@no_type_check
def _sub_tiles(q, k, b, g, A_log, dt_bias, base, i: tl.constexpr, L, i_h, o_s, o_k, m_k, H: tl.constexpr,
               K: tl.constexpr, USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
               ROWS: tl.constexpr, COLS: tl.constexpr):
    """Sub-chunk i of one key tile. ROWS: (q·e^F, b·k·e^F), F_r = Σ_{a<t≤r} g_t; COLS: k·e^E,
    E_r = Σ_{r<t≤e} g_t (a, e: its first and last row); and Σ g, g_a over the sub-chunk."""
    r = i * 16 + o_s
    p = base + r[:, None] * (H * K) + o_k[None, :]
    m = (r < L)[:, None] & m_k[None, :]
    b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
    b_g = _load_gate(g, p, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)
    b_qr = b_k
    b_bkr = b_k
    b_kE = b_k
    if ROWS:
        b_er = tl.exp(tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0))
        b_qr = tl.load(q + p, mask=m, other=0.0).to(tl.float32) * b_er
        b_bkr = tl.load(b + p, mask=m, other=0.0).to(tl.float32) * b_k * b_er
    if COLS:
        m_n = ((o_s < 15) & (r + 1 < L))[:, None] & m_k[None, :]
        b_gn = _load_gate(g, p + H * K, m_n, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE,
                            HAS_DT_BIAS)
        b_kE = b_k * tl.exp(tl.cumsum(b_gn, 0, reverse=True))
    b_ga = tl.sum(tl.where((o_s == 0)[:, None], b_g, 0.0), 0)
    return b_qr, b_bkr, b_kE, tl.sum(b_g, 0), b_ga


@triton.jit
@no_type_check
def _off(b_r1, b_r2, b_kE, b_x, b_acc1, b_acc2, DT: tl.constexpr, LOWP: tl.constexpr, DOT_PREC: tl.constexpr):
    """acc += rows · (k·e^E·e^x)ᵀ for the two row tiles (b·k and q, with their row factors); with LOWP
    the operands are DT (bfloat16; every factor here is ≤ 1)."""
    b_c = tl.trans(b_kE * tl.exp(b_x)[None, :])
    if LOWP:
        b_c = b_c.to(DT)
        b_acc1 = tl.dot(b_r1.to(DT), b_c, b_acc1)
        b_acc2 = tl.dot(b_r2.to(DT), b_c, b_acc2)
    else:
        b_acc1 = tl.dot(b_r1, b_c, b_acc1, input_precision=DOT_PREC)
        b_acc2 = tl.dot(b_r2, b_c, b_acc2, input_precision=DOT_PREC)
    return b_acc1, b_acc2


@triton.jit
@no_type_check
def _scaled_store(Aqk, t0, i_h, i: tl.constexpr, j: tl.constexpr, x, q_rstd, k_rstd, scale, L, o_s,
                  H: tl.constexpr):
    """Store scale·x·(1/‖q_r‖)(1/‖k_s‖) as block (i, j) of A_qk; return 1/‖k‖ of rows i and of columns j."""
    m_i = i * 16 + o_s < L
    b_rq = tl.load(q_rstd + (t0 + i * 16 + o_s) * H + i_h, mask=m_i, other=0.0)
    b_rki = tl.load(k_rstd + (t0 + i * 16 + o_s) * H + i_h, mask=m_i, other=0.0)
    b_rkj = tl.load(k_rstd + (t0 + j * 16 + o_s) * H + i_h, mask=j * 16 + o_s < L, other=0.0)
    tl.store(_blk_ptr(Aqk, t0, i_h, i, j, o_s, H), (scale * x * b_rq[:, None] * b_rkj[None, :]).to(
        Aqk.dtype.element_ty), mask=m_i[:, None])
    return b_rki, b_rkj


# --8<-- [start:chunk_pairs_solve_v2_kernel]
@triton.jit
@no_type_check
def chunk_pairs_solve_v2_kernel(
    q, k, g, b,              # inputs [B, T, H, K]
    A_log, dt_bias,          # in-kernel gate (USE_GATE)
    Aqk, A,                  # [B, T, H, 64]: off-diagonal blocks written here; A's diagonal blocks read
    q_rstd, k_rstd,          # [B, T, H] float32 from chunk_diag_v2_kernel
    cu_seqlens, chunk_indices, scale, T,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr,
):
    """One chunk: the six off-diagonal 16×16 blocks of T and A_qk, then A = (I + T)⁻¹ from the diagonal
    inverses: A_ij = −A_ii Σ_{j≤m<i} T_im A_mj. Grid (chunks, B·H) or (slots, H).

    Block (i, j), j < i, anchored at a = 16i: row factor exp(F_r) ≤ 1, column factor
    exp(E_s + Σ_{j<m<i} Σ_m g + g_a) ≤ 1: sums of g ≤ 0 only, never differences.
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t0, L, slot, work = _span(cu_seqlens, chunk_indices, i_c, i_b, T, IS_VARLEN)
    DT: tl.constexpr = Aqk.dtype.element_ty
    if work & (L > 16):
        base = (t0 * H + i_h) * K
        o_s = tl.arange(0, 16)
        z = tl.zeros([16, 16], tl.float32)
        T10, T20, T21, T30, T31, T32 = z, z, z, z, z, z
        A10, A20, A21, A30, A31, A32 = z, z, z, z, z, z
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            _, _, kE0, _, _ = _sub_tiles(q, k, b, g, A_log, dt_bias, base, 0, L, i_h, o_s, o_k, m_k, H, K,
                                         USE_GATE, HAS_DT_BIAS, False, True)
            qr1, bkr1, kE1, tot1, ga1 = _sub_tiles(q, k, b, g, A_log, dt_bias, base, 1, L, i_h, o_s, o_k, m_k, H, K,
                                                   USE_GATE, HAS_DT_BIAS, True, True)
            T10, A10 = _off(bkr1, qr1, kE0, ga1, T10, A10, DT, LOWP, DOT_PREC)
            qr2, bkr2, kE2, tot2, ga2 = _sub_tiles(q, k, b, g, A_log, dt_bias, base, 2, L, i_h, o_s, o_k, m_k, H, K,
                                                   USE_GATE, HAS_DT_BIAS, True, True)
            T20, A20 = _off(bkr2, qr2, kE0, tot1 + ga2, T20, A20, DT, LOWP, DOT_PREC)
            T21, A21 = _off(bkr2, qr2, kE1, ga2, T21, A21, DT, LOWP, DOT_PREC)
            qr3, bkr3, _, _, ga3 = _sub_tiles(q, k, b, g, A_log, dt_bias, base, 3, L, i_h, o_s, o_k, m_k, H, K,
                                              USE_GATE, HAS_DT_BIAS, True, False)
            T30, A30 = _off(bkr3, qr3, kE0, tot1 + tot2 + ga3, T30, A30, DT, LOWP, DOT_PREC)
            T31, A31 = _off(bkr3, qr3, kE1, tot2 + ga3, T31, A31, DT, LOWP, DOT_PREC)
            T32, A32 = _off(bkr3, qr3, kE2, ga3, T32, A32, DT, LOWP, DOT_PREC)
        # A_qk blocks; the 1/‖k‖ of each sub-chunk for T
        rk1, rk0 = _scaled_store(Aqk, t0, i_h, 1, 0, A10, q_rstd, k_rstd, scale, L, o_s, H)
        rk2, _ = _scaled_store(Aqk, t0, i_h, 2, 0, A20, q_rstd, k_rstd, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 2, 1, A21, q_rstd, k_rstd, scale, L, o_s, H)
        rk3, _ = _scaled_store(Aqk, t0, i_h, 3, 0, A30, q_rstd, k_rstd, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 3, 1, A31, q_rstd, k_rstd, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 3, 2, A32, q_rstd, k_rstd, scale, L, o_s, H)
        T10 *= rk1[:, None] * rk0[None, :]
        T20 *= rk2[:, None] * rk0[None, :]
        T21 *= rk2[:, None] * rk1[None, :]
        T30 *= rk3[:, None] * rk0[None, :]
        T31 *= rk3[:, None] * rk1[None, :]
        T32 *= rk3[:, None] * rk2[None, :]
        m1, m2, m3 = (16 + o_s < L)[:, None], (32 + o_s < L)[:, None], (48 + o_s < L)[:, None]
        X0 = tl.load(_blk_ptr(A, t0, i_h, 0, 0, o_s, H))
        X1 = tl.load(_blk_ptr(A, t0, i_h, 1, 1, o_s, H), mask=m1, other=0.0)
        X2 = tl.load(_blk_ptr(A, t0, i_h, 2, 2, o_s, H), mask=m2, other=0.0)
        X3 = tl.load(_blk_ptr(A, t0, i_h, 3, 3, o_s, H), mask=m3, other=0.0)
        X10 = -tl.dot(X1, tl.dot(T10, X0, input_precision=DOT_PREC), input_precision=DOT_PREC)
        X21 = -tl.dot(X2, tl.dot(T21, X1, input_precision=DOT_PREC), input_precision=DOT_PREC)
        X32 = -tl.dot(X3, tl.dot(T32, X2, input_precision=DOT_PREC), input_precision=DOT_PREC)
        X20 = -tl.dot(X2, tl.dot(T20, X0, input_precision=DOT_PREC) + tl.dot(T21, X10, input_precision=DOT_PREC),
                      input_precision=DOT_PREC)
        X31 = -tl.dot(X3, tl.dot(T31, X1, input_precision=DOT_PREC) + tl.dot(T32, X21, input_precision=DOT_PREC),
                      input_precision=DOT_PREC)
        X30 = -tl.dot(X3, tl.dot(T30, X0, input_precision=DOT_PREC) + tl.dot(T31, X10, input_precision=DOT_PREC)
                      + tl.dot(T32, X20, input_precision=DOT_PREC), input_precision=DOT_PREC)
        tl.store(_blk_ptr(A, t0, i_h, 1, 0, o_s, H), X10, mask=m1)
        tl.store(_blk_ptr(A, t0, i_h, 2, 0, o_s, H), X20, mask=m2)
        tl.store(_blk_ptr(A, t0, i_h, 2, 1, o_s, H), X21, mask=m2)
        tl.store(_blk_ptr(A, t0, i_h, 3, 0, o_s, H), X30, mask=m3)
        tl.store(_blk_ptr(A, t0, i_h, 3, 1, o_s, H), X31, mask=m3)
        tl.store(_blk_ptr(A, t0, i_h, 3, 2, o_s, H), X32, mask=m3)
# --8<-- [end:chunk_pairs_solve_v2_kernel]


# --8<-- [start:chunk_wy_v2_kernel]
@triton.jit
@no_type_check
def chunk_wy_v2_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]
    A_log, dt_bias,          # in-kernel gate (USE_GATE)
    A, q_rstd, k_rstd,       # from the two kernels above
    Y, Qg, Kt, U, gC, G_out, # outputs (layouts of chunk_fwd.chunk_intra_wy_fwd_kernel); G_out with SAVE
    cu_seqlens, chunk_indices, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, IS_VARLEN: tl.constexpr, SAVE: tl.constexpr,
    DOT_PREC: tl.constexpr, LOWP: tl.constexpr, NP: tl.constexpr,
):
    """One chunk, or one of NP programs of a chunk: per key tile G (a scan of g), Y, Q_γ, K_tail, γ_C;
    per value tile of each value head of the group, U. Program p of a chunk takes key tiles p, p + NP, …
    and value tiles p, p + NP, … (each loads A, and casts it to bfloat16 with LOWP, once).
    Grid (chunks, B·H, NP)."""
    i_c, i_bh, i_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    t0, L, slot, work = _span(cu_seqlens, chunk_indices, i_c, i_b, T, IS_VARLEN)
    if work:
        o_t = tl.arange(0, 64)
        m_t = o_t < L
        b_A = tl.load(A + (t0 + o_t[:, None]) * (H * 64) + i_h * 64 + o_t[None, :], mask=m_t[:, None], other=0.0)
        if LOWP:
            b_Al = b_A.to(Y.dtype.element_ty)
        b_rq = tl.load(q_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
        b_rk = tl.load(k_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
        p_row = (t0 * H + i_h) * K + o_t[:, None] * (H * K)
        for i_k in range(i_p, tl.cdiv(K, BK), NP):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            m = m_t[:, None] & m_k[None, :]
            p = p_row + o_k[None, :]
            b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
            b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32) * b_rk[:, None]
            b_b = tl.load(b + p, mask=m, other=0.0).to(tl.float32)
            b_g = _load_gate(g, p, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)
            b_gn = _load_gate(g, p + H * K, ((o_t + 1) < L)[:, None] & m_k[None, :], i_h, o_k[None, :],
                              m_k[None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)  # g of row r + 1
            b_G = tl.cumsum(b_g, 0)                                            # G_r = Σ_{t≤r} g_t
            if SAVE:
                tl.store(G_out + p, b_G, mask=m)
            b_gamma = tl.exp(b_G)
            b_tail = tl.exp(tl.cumsum(b_gn, 0, reverse=True))                  # exp(G_C − G_r)
            b_e = b_gamma * b_b * b_k
            if LOWP:
                b_Y = tl.dot(b_Al, b_e.to(Y.dtype.element_ty))
            else:
                b_Y = tl.dot(b_A, b_e, input_precision=DOT_PREC)
            tl.store(Y + p, b_Y.to(Y.dtype.element_ty), mask=m)
            tl.store(Qg + p, (b_gamma * b_q * (scale * b_rq)[:, None]).to(Qg.dtype.element_ty), mask=m)
            tl.store(Kt + p, (b_tail * b_k).to(Kt.dtype.element_ty), mask=m)
            tl.store(gC + (slot * H + i_h) * K + o_k, tl.exp(tl.sum(b_g, 0)), mask=m_k)
        NV: tl.constexpr = (V + BV - 1) // BV
        for i_gv in range(i_p, (HV // H) * NV, NP):
            i_hv = i_h * (HV // H) + i_gv // NV
            p_v = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V)
            o_v = (i_gv % NV) * BV + tl.arange(0, BV)
            m = m_t[:, None] & (o_v < V)[None, :]
            b_z = tl.load(v + p_v + o_v[None, :], mask=m, other=0.0).to(tl.float32) \
                * tl.load(w + p_v + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            if LOWP:
                b_U = tl.dot(b_Al, b_z.to(U.dtype.element_ty))
            else:
                b_U = tl.dot(b_A, b_z, input_precision=DOT_PREC)
            tl.store(U + p_v + o_v[None, :], b_U.to(U.dtype.element_ty), mask=m)
# --8<-- [end:chunk_wy_v2_kernel]


#: default launch settings: the fastest of each kernel's variants timed side by side on an H200 (8×2K and
#: 1×16K, K = V = 128, bf16; benchmarks/experiments/sweep_v2.py, benchmarks/NOTES.md): diag BK 16 / 1 warp,
#: pairs BK 32 / 1 warp / 2 stages, WY BK 64, BV 128 / 4 warps. Fewer warps won: these programs wait on
#: memory and on cross-warp scans, not on arithmetic. The diag kernel stays at 1 stage: with 3 stages
#: (18 µs faster) Triton 3.6 computed wrong diagonal blocks wherever the per-column fallback runs with
#: tf32 products (16-bit inputs; benchmarks/experiments/v2_diagnose.py: A 10-13% off, o rel-RMS 0.13).


def _env_config() -> dict:
    """Launch-setting overrides from the environment, for tuning and diagnosis on a GPU:
    ``GDN2_INTRA_V2_CONFIG='{"diag": {"num_stages": 1}}'`` (JSON, keys "diag", "pairs", "wy")."""
    text = os.environ.get("GDN2_INTRA_V2_CONFIG", "")
    if not text:
        return {}
    cfg = json.loads(text)
    if not isinstance(cfg, dict) or not set(cfg) <= {"diag", "pairs", "wy"}:
        raise ValueError(f"GDN2_INTRA_V2_CONFIG must be a JSON object with keys diag, pairs, wy; got {text!r}")
    return cfg


#: read once, at import
ENV_CONFIG: dict = _env_config()


def launch_intra_v2(q, k, v, g, b, w, A_log, dt_bias, Aqk, A, q_rstd, k_rstd, Y, Qg, Kt, U, gC, G_out,
                    cu_seqlens, chunk_indices, scale, grid, *, l2norm: bool, save: bool, dot_prec: str,
                    lowp: bool, config: dict) -> None:
    """Launch the three kernels on chunk_fwd's buffers (A, q_rstd, k_rstd are scratch unless saved).

    ``config`` (then ``GDN2_INTRA_V2_CONFIG``, read at import) overrides any launch setting or constexpr of a kernel,
    by kernel: {"diag": {...}, "pairs": {...}, "wy": {...}}."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    BKp, BVp = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
    flags = dict(USE_GATE=A_log is not None, HAS_DT_BIAS=dt_bias is not None, IS_VARLEN=cu_seqlens is not None,
                 DOT_PREC=dot_prec)

    def settings(name: str, defaults: dict) -> dict:
        return {**flags, **defaults, **ENV_CONFIG.get(name, {}), **config.get(name, {})}

    chunk_diag_v2_kernel[(grid[0] * 4, grid[1])](
        q, k, g, b, A_log, dt_bias, Aqk, A, q_rstd, k_rstd, cu_seqlens, chunk_indices, scale, T,
        H=H, K=K, L2NORM=l2norm, **settings("diag", {"BK": 16, "num_warps": 1, "num_stages": 1}))
    chunk_pairs_solve_v2_kernel[grid](
        q, k, g, b, A_log, dt_bias, Aqk, A, q_rstd, k_rstd, cu_seqlens, chunk_indices, scale, T,
        H=H, K=K, **settings("pairs", {"LOWP": lowp, "BK": min(32, BKp), "num_warps": 1, "num_stages": 2}))
    wy = settings("wy", {"LOWP": lowp, "BK": min(64, BKp), "BV": min(128, BVp), "NP": 1, "num_warps": 4,
                         "num_stages": 1})
    # no more programs per chunk than it has key tiles or value tiles
    wy["NP"] = max(1, min(wy["NP"], max(triton.cdiv(K, wy["BK"]), (HV // H) * triton.cdiv(V, wy["BV"]))))
    chunk_wy_v2_kernel[(grid[0], grid[1], wy["NP"])](
        q, k, v, g, b, w, A_log, dt_bias, A, q_rstd, k_rstd, Y, Qg, Kt, U, gC, G_out,
        cu_seqlens, chunk_indices, scale, T, H=H, HV=HV, K=K, V=V, SAVE=save, **wy)
