"""Experiment: the chunk forward's stages (1)-(3) as three small kernels built from 16×16 tiles.

    TRITON_INTERPRET=1 python benchmarks/experiments/fwd_v2.py check   # against the float64 reference
    python benchmarks/experiments/registers_v2.py                       # static registers (ptxas), no GPU
    python benchmarks/bench.py --mode fwd --v2 --profile               # on a GPU, next to main and the peer

Why: Nsight Compute on an H200 (8×2K, H = 16, K = V = 128, bf16) shows main's one-kernel intra stage
(``chunk_intra_wy_fwd_kernel``, 1.54 ms) issuing 0.23 instructions per cycle per scheduler at 12.5%
occupancy (255 registers, 8.3 M spill requests), a third of its stalls waiting on shared memory:
its [BT, BT] and [NS, 16, BK] register tiles are reshaped, transposed and masked on chip before each
product. The peer's off-diagonal + inverse kernel (219 µs) holds 16×16 accumulators and loads every
operand straight from memory in the layout its product wants. This module keeps main's numerics
(every exponent a sum of g ≤ 0, anchored at the first row of each 16-row sub-chunk; the diagonal
blocks' column factor clamped at e^DIAG_SPAN with an exact per-column fallback past it) in that
structure:

    chunk_diag_v2_kernel          per 16-row sub-chunk: its diagonal blocks of T and A_qk, (I + T_ii)⁻¹,
                                  1/‖q‖ and 1/‖k‖ of its rows
    chunk_pairs_solve_v2_kernel   per chunk: the six off-diagonal blocks of T and A_qk from the four
                                  sub-chunks' [16, BK] tiles, then A_ij = −A_ii Σ_{j≤m<i} T_im A_mj
    chunk_wy_v2_kernel            per chunk: Y = A (γ⊙b⊙k), Q_γ, K_tail, γ_C per key tile and
                                  U = A (w⊙v) per value tile, A loaded once

then main's ``chunk_state_output_fwd_kernel``. Scope of the experiment: dense batches (no
cu_seqlens), chunk size 64, no in-kernel gate; with it the L2 norm of q and k in the kernel.

History: the first version (one kernel for the diagonal and off-diagonal blocks and the inverse)
took 893 µs at 8×2K on an H200 (255 registers, spills; 53,000 PTX lines at BK 32 with its four
unrolled fallbacks); splitting the diagonal blocks off brought the static count of the off-diagonal
kernel to 6,400 PTX lines and no spills (benchmarks/NOTES.md). This version is not yet timed.
"""

import sys
from typing import no_type_check

import torch
import triton
import triton.language as tl

from gdn2.fast.chunk_fwd import DIAG_SPAN, _next_pow2, _state_block_v, chunk_state_output_fwd_kernel
from gdn2.fast.utils import empty

BT = 64


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
    """Pointers of block (i, j) of a chunk's [64, 64] matrix stored row-per-token as [B, T, H, 64]."""
    return ptr + (t0 + i * 16 + o_s[:, None]) * (H * 64) + i_h * 64 + j * 16 + o_s[None, :]


@triton.jit
@no_type_check
def chunk_diag_v2_kernel(
    q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, L2NORM: tl.constexpr, DOT_PREC: tl.constexpr,
):
    """One 16-row sub-chunk: its diagonal blocks of T and A_qk, (I + T_ii)⁻¹, 1/‖q‖ and 1/‖k‖.

    Grid (chunks·4, B·H). Anchored at the sub-chunk's first row a: exp(F_r)·exp(−F_s), F_r =
    Σ_{a<t≤r} g_t, the column factor clamped at e^DIAG_SPAN; rows past the clamp in a key tile take
    the exact per-column running products. Writes the diagonal blocks of A_qk and A and zeros right
    of them (the off-diagonal kernel fills the blocks left of them).
    """
    i_x, i_bh = tl.program_id(0), tl.program_id(1)
    i_t, i_i = i_x // 4, i_x % 4
    i_b, i_h = i_bh // H, i_bh % H
    t0 = i_b.to(tl.int64) * T + i_t * 64
    L = tl.minimum(T - i_t * 64, 64)
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
        p = base + r[:, None] * (H * K) + o_k[None, :]
        m = m_r[:, None] & (o_k < K)[None, :]
        b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
        b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
        b_bk = tl.load(b + p, mask=m, other=0.0).to(tl.float32) * b_k
        b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
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
                b_a = tl.sum(tl.where((o_s == s + 1)[:, None], b_g, 0.0), 0)           # g_{s+1}, 0 at s = 15
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


@triton.jit
@no_type_check
def _sub_tiles(q, k, b, g, base, i: tl.constexpr, L, o_s, o_k, m_k, H: tl.constexpr, K: tl.constexpr,
               ROWS: tl.constexpr, COLS: tl.constexpr):
    """Sub-chunk i of one key tile. ROWS: (q·e^F, b·k·e^F), F_r = Σ_{a<t≤r} g_t; COLS: k·e^E,
    E_r = Σ_{r<t≤e} g_t (a, e: first and last row); and Σ g, g_a over the sub-chunk."""
    r = i * 16 + o_s
    m_r = r < L
    p = base + r[:, None] * (H * K) + o_k[None, :]
    m = m_r[:, None] & m_k[None, :]
    b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
    b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
    b_qr = b_k
    b_bkr = b_k
    b_kE = b_k
    if ROWS:
        b_er = tl.exp(tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0))
        b_qr = tl.load(q + p, mask=m, other=0.0).to(tl.float32) * b_er
        b_bkr = tl.load(b + p, mask=m, other=0.0).to(tl.float32) * b_k * b_er
    if COLS:
        m_n = ((o_s < 15) & (r + 1 < L))[:, None] & m_k[None, :]
        b_gn = tl.load(g + p + H * K, mask=m_n, other=0.0).to(tl.float32)       # g of row r + 1
        b_kE = b_k * tl.exp(tl.cumsum(b_gn, 0, reverse=True))
    b_ga = tl.sum(tl.where((o_s == 0)[:, None], b_g, 0.0), 0)
    return b_qr, b_bkr, b_kE, tl.sum(b_g, 0), b_ga


@triton.jit
@no_type_check
def _off(b_r1, b_r2, b_kE, b_x, b_acc1, b_acc2, DT: tl.constexpr, LOWP: tl.constexpr, DOT_PREC: tl.constexpr):
    """acc += rows · (k·e^E·e^x)ᵀ for the two row tiles (b·k and q, both with their row factors);
    with LOWP the operands are 16-bit (DT, the inputs' type; every factor here is ≤ 1)."""
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


@triton.jit
@no_type_check
def chunk_pairs_solve_v2_kernel(
    q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr,
):
    """One chunk: the six off-diagonal 16×16 blocks of T and A_qk, then A = (I + T)⁻¹ from the diagonal
    inverses of chunk_diag_v2_kernel: A_ij = −A_ii Σ_{j≤m<i} T_im A_mj. Grid (chunks, B·H).

    Block (i, j), j < i, anchored at a = 16i: row factor exp(F_r) ≤ 1, column factor
    exp(E_s + Σ_{j<m<i} Σ_m g + g_a) ≤ 1 (sums of g ≤ 0 only).
    """
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t0 = i_b.to(tl.int64) * T + i_t * 64
    L = tl.minimum(T - i_t * 64, 64)
    base = (t0 * H + i_h) * K
    o_s = tl.arange(0, 16)
    z = tl.zeros([16, 16], tl.float32)
    T10, T20, T21, T30, T31, T32 = z, z, z, z, z, z
    A10, A20, A21, A30, A31, A32 = z, z, z, z, z, z
    DT: tl.constexpr = Aqk.dtype.element_ty
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        _, _, kE0, _, _ = _sub_tiles(q, k, b, g, base, 0, L, o_s, o_k, m_k, H, K, False, True)
        qr1, bkr1, kE1, tot1, ga1 = _sub_tiles(q, k, b, g, base, 1, L, o_s, o_k, m_k, H, K, True, True)
        T10, A10 = _off(bkr1, qr1, kE0, ga1, T10, A10, DT, LOWP, DOT_PREC)
        qr2, bkr2, kE2, tot2, ga2 = _sub_tiles(q, k, b, g, base, 2, L, o_s, o_k, m_k, H, K, True, True)
        T20, A20 = _off(bkr2, qr2, kE0, tot1 + ga2, T20, A20, DT, LOWP, DOT_PREC)
        T21, A21 = _off(bkr2, qr2, kE1, ga2, T21, A21, DT, LOWP, DOT_PREC)
        qr3, bkr3, _, _, ga3 = _sub_tiles(q, k, b, g, base, 3, L, o_s, o_k, m_k, H, K, True, False)
        T30, A30 = _off(bkr3, qr3, kE0, tot1 + tot2 + ga3, T30, A30, DT, LOWP, DOT_PREC)
        T31, A31 = _off(bkr3, qr3, kE1, tot2 + ga3, T31, A31, DT, LOWP, DOT_PREC)
        T32, A32 = _off(bkr3, qr3, kE2, ga3, T32, A32, DT, LOWP, DOT_PREC)
    # A_qk blocks, and the 1/‖k‖ of each sub-chunk for T
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
    X0 = tl.load(_blk_ptr(A, t0, i_h, 0, 0, o_s, H), mask=(o_s < L)[:, None], other=0.0)
    X1 = tl.load(_blk_ptr(A, t0, i_h, 1, 1, o_s, H), mask=(16 + o_s < L)[:, None], other=0.0)
    X2 = tl.load(_blk_ptr(A, t0, i_h, 2, 2, o_s, H), mask=(32 + o_s < L)[:, None], other=0.0)
    X3 = tl.load(_blk_ptr(A, t0, i_h, 3, 3, o_s, H), mask=(48 + o_s < L)[:, None], other=0.0)
    X10 = -tl.dot(X1, tl.dot(T10, X0, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X21 = -tl.dot(X2, tl.dot(T21, X1, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X32 = -tl.dot(X3, tl.dot(T32, X2, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X20 = -tl.dot(X2, tl.dot(T20, X0, input_precision=DOT_PREC) + tl.dot(T21, X10, input_precision=DOT_PREC),
                  input_precision=DOT_PREC)
    X31 = -tl.dot(X3, tl.dot(T31, X1, input_precision=DOT_PREC) + tl.dot(T32, X21, input_precision=DOT_PREC),
                  input_precision=DOT_PREC)
    X30 = -tl.dot(X3, tl.dot(T30, X0, input_precision=DOT_PREC) + tl.dot(T31, X10, input_precision=DOT_PREC)
                  + tl.dot(T32, X20, input_precision=DOT_PREC), input_precision=DOT_PREC)
    tl.store(_blk_ptr(A, t0, i_h, 1, 0, o_s, H), X10, mask=(16 + o_s < L)[:, None])
    tl.store(_blk_ptr(A, t0, i_h, 2, 0, o_s, H), X20, mask=(32 + o_s < L)[:, None])
    tl.store(_blk_ptr(A, t0, i_h, 2, 1, o_s, H), X21, mask=(32 + o_s < L)[:, None])
    tl.store(_blk_ptr(A, t0, i_h, 3, 0, o_s, H), X30, mask=(48 + o_s < L)[:, None])
    tl.store(_blk_ptr(A, t0, i_h, 3, 1, o_s, H), X31, mask=(48 + o_s < L)[:, None])
    tl.store(_blk_ptr(A, t0, i_h, 3, 2, o_s, H), X32, mask=(48 + o_s < L)[:, None])


@triton.jit
@no_type_check
def chunk_wy_v2_kernel(
    q, k, v, g, b, w, A, q_rstd, k_rstd, Y, Qg, Kt, U, gC, scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    L2NORM: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t0 = i_b.to(tl.int64) * T + i_t * 64
    L = tl.minimum(T - i_t * 64, 64)
    slot = i_b * tl.cdiv(T, 64) + i_t
    o_t = tl.arange(0, 64)
    m_t = o_t < L
    b_A = tl.load(A + (t0 + o_t[:, None]) * (H * 64) + i_h * 64 + o_t[None, :], mask=m_t[:, None], other=0.0)
    if LOWP:
        b_Al = b_A.to(Y.dtype.element_ty)
    b_rq = tl.load(q_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    b_rk = tl.load(k_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
    p_row = (t0 * H + i_h) * K + o_t[:, None] * (H * K)
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        m = m_t[:, None] & m_k[None, :]
        p = p_row + o_k[None, :]
        b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
        b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32) * b_rk[:, None]
        b_b = tl.load(b + p, mask=m, other=0.0).to(tl.float32)
        b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
        b_gn = tl.load(g + p + H * K, mask=((o_t + 1) < L)[:, None] & m_k[None, :], other=0.0).to(tl.float32)
        b_gamma = tl.exp(tl.cumsum(b_g, 0))
        b_tail = tl.exp(tl.cumsum(b_gn, 0, reverse=True))
        b_e = b_gamma * b_b * b_k
        if LOWP:
            b_Y = tl.dot(b_Al, b_e.to(Y.dtype.element_ty))
        else:
            b_Y = tl.dot(b_A, b_e, input_precision=DOT_PREC)
        tl.store(Y + p, b_Y.to(Y.dtype.element_ty), mask=m)
        tl.store(Qg + p, (b_gamma * b_q * (scale * b_rq)[:, None]).to(Qg.dtype.element_ty), mask=m)
        tl.store(Kt + p, (b_tail * b_k).to(Kt.dtype.element_ty), mask=m)
        tl.store(gC + (slot * H + i_h) * K + o_k, tl.exp(tl.sum(b_g, 0)), mask=m_k)
    for i_g in range(HV // H):
        i_hv = i_h * (HV // H) + i_g
        p_v = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V)
        for i_v in range(tl.cdiv(V, BV)):
            o_v = i_v * BV + tl.arange(0, BV)
            m = m_t[:, None] & (o_v < V)[None, :]
            b_z = tl.load(v + p_v + o_v[None, :], mask=m, other=0.0).to(tl.float32) \
                * tl.load(w + p_v + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            if LOWP:
                b_U = tl.dot(b_Al, b_z.to(U.dtype.element_ty))
            else:
                b_U = tl.dot(b_A, b_z, input_precision=DOT_PREC)
            tl.store(U + p_v + o_v[None, :], b_U.to(U.dtype.element_ty), mask=m)


def chunk_gdn2_fwd_v2(q, k, v, g, b, w, scale, initial_state=None, output_final_state=False, *,
                      use_qk_l2norm_in_kernel=False, diag_config=None, pairs_config=None, wy_config=None):
    """o (and the final state) of the chunk forward through the two kernels above and main's state kernel."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dev, dt = q.device, q.dtype
    NT = triton.cdiv(T, BT)
    lowp = dt == torch.bfloat16          # as main: float16's exponent range underflows the decay factors
    prec = "ieee" if dt == torch.float32 else "tf32"
    BKp, BVp = max(16, _next_pow2(K)), max(16, _next_pow2(V))
    Aqk = empty((B, T, H, BT), dt, dev)
    A = empty((B, T, H, BT), torch.float32, dev)
    q_rstd, k_rstd = empty((B, T, H), torch.float32, dev), empty((B, T, H), torch.float32, dev)
    chunk_diag_v2_kernel[(NT * 4, B * H)](
        q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T, H=H, K=K, L2NORM=use_qk_l2norm_in_kernel, DOT_PREC=prec,
        **{"BK": min(32, BKp), "num_warps": 2, "num_stages": 1, **(diag_config or {})})
    chunk_pairs_solve_v2_kernel[(NT, B * H)](
        q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T, H=H, K=K, DOT_PREC=prec, LOWP=lowp,
        **{"BK": min(32, BKp), "num_warps": 2, "num_stages": 1, **(pairs_config or {})})
    Y, Qg, Kt = (empty((B, T, H, K), dt, dev) for _ in range(3))
    U = empty((B, T, HV, V), dt, dev)
    gC = empty((B * NT, H, K), torch.float32, dev)
    chunk_wy_v2_kernel[(NT, B * H)](
        q, k, v, g, b, w, A, q_rstd, k_rstd, Y, Qg, Kt, U, gC, scale, T, H=H, HV=HV, K=K, V=V,
        L2NORM=use_qk_l2norm_in_kernel, DOT_PREC=prec, LOWP=lowp,
        **{"BK": min(64, BKp), "BV": min(64, BVp), "num_warps": 4, "num_stages": 1, **(wy_config or {})})
    o = empty((B, T, HV, V), dt, dev)
    ht = empty((B, HV, K, V), torch.float32, dev) if output_final_state else None
    cfg = {"BV": _state_block_v(B * HV, BVp, K), "num_warps": 4, "num_stages": 2}
    chunk_state_output_fwd_kernel[(triton.cdiv(V, cfg["BV"]), B * HV)](
        Y, Qg, Kt, Aqk, U, gC, initial_state, o, ht, None, None, None, T,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BKp, BKH=min(BKp, 128), HAS_H0=initial_state is not None,
        STORE_FINAL=output_final_state, IS_VARLEN=False, SAVE=False, DOT_PREC=prec, **cfg)
    return o, ht


def check() -> None:
    """Against the float64 chunkwise reference on fresh inputs (strong decay in one run); asserts."""
    from gdn2.ops import chunk_gdn2 as ref_chunk

    dev = "cuda" if torch.cuda.is_available() else "cpu"
    for (B, T, H, HV, K, V, g_min, dtype, tol) in ((2, 130, 2, 4, 32, 48, -2.0, torch.float32, 1e-4),
                                                    (1, 77, 1, 1, 16, 16, -20.0, torch.float32, 1e-4),
                                                    (1, 64, 1, 2, 48, 32, -2.0, torch.float16, 1e-2)):
        gen = torch.Generator().manual_seed(T)
        r = lambda *s, gen=gen: torch.randn(*s, generator=gen, dtype=torch.float64)
        x = {"q": r(B, T, H, K), "k": r(B, T, H, K), "v": r(B, T, HV, V),
             "g": g_min * torch.rand(B, T, H, K, generator=gen, dtype=torch.float64),
             "b": 2 * torch.rand(B, T, H, K, generator=gen, dtype=torch.float64),
             "w": torch.rand(B, T, HV, V, generator=gen, dtype=torch.float64), "initial_state": r(B, HV, K, V)}
        low = {n: (t.to(dtype) if n in "qkv" else t.float()).to(dev) for n, t in x.items()}
        o_ref, ht_ref = ref_chunk(**{n: t.double() for n, t in low.items()}, output_final_state=True,
                                  use_qk_l2norm_in_kernel=True)
        o, ht = chunk_gdn2_fwd_v2(**low, scale=K ** -0.5, output_final_state=True, use_qk_l2norm_in_kernel=True)
        for name, a, e in (("o", o, o_ref), ("ht", ht, ht_ref)):
            err = ((a.double() - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt()).item()
            print(f"B{B} T{T} H{H} HV{HV} K{K} V{V} g_min {g_min} {dtype}: {name} rel-RMS {err:.2e}", flush=True)
            assert err < tol, (name, err)


if __name__ == "__main__":
    {"check": check}[sys.argv[1]]()
