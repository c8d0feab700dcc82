"""Experiment: the chunk forward's stages (1)-(3) as two small kernels built from 16×16 tiles.

    TRITON_INTERPRET=1 python benchmarks/experiments/fwd_v2.py check   # against the float64 reference
    python benchmarks/experiments/fwd_v2.py bench                      # on a GPU, next to main and the peer

Why: Nsight Compute on an H200 (8×2K, H = 16, K = V = 128, bf16) shows main's one-kernel intra stage
(``chunk_intra_wy_fwd_kernel``, 1.54 ms) issuing 0.23 instructions per cycle per scheduler at 12.5%
occupancy (255 registers, 8.3 M spill requests), a third of its stalls waiting on shared memory:
its [BT, BT] and [NS, 16, BK] register tiles are reshaped, transposed and masked on chip before each
product. The peer's off-diagonal + inverse kernel (219 µs) holds ten 16×16 accumulators and loads
every operand straight from memory in the layout its product wants. This module keeps main's
numerics (every exponent a sum of g ≤ 0, anchored at the first row of each 16-row sub-chunk; the
diagonal blocks' column factor clamped at e^DIAG_SPAN with an exact per-column fallback past it)
in that structure:

    chunk_pairs_solve_v2_kernel   per chunk: for each key tile, the four sub-chunks' q, k, b, g tiles
                                  [16, BK]; ten T blocks and ten A_qk blocks (16×16, float32); then
                                  A = (I + T)⁻¹ by forward substitution on the diagonal blocks and
                                  A_ij = −A_ii Σ_{j≤m<i} T_im A_mj. Writes A_qk (q's dtype), A (float32)
                                  and 1/‖q‖, 1/‖k‖.
    chunk_wy_v2_kernel            per chunk: Y = A (γ⊙b⊙k), Q_γ, K_tail, γ_C per key tile and
                                  U = A (w⊙v) per value tile, A loaded once.

then main's ``chunk_state_output_fwd_kernel``. Scope of the experiment: dense batches (no
cu_seqlens), chunk size 64, no in-kernel gate; with it the L2 norm of q and k in the kernel.
"""

import sys
from pathlib import Path
from typing import no_type_check

import torch
import triton
import triton.language as tl

from gdn2.fast.chunk_fwd import DIAG_SPAN, _next_pow2, _state_block_v, chunk_state_output_fwd_kernel
from gdn2.fast.utils import empty

BT = 64


@triton.jit
@no_type_check
def _sub_tiles(q, k, b, g, base, i: tl.constexpr, L, o_s, o_k, m_k, H: tl.constexpr, K: tl.constexpr):
    """Sub-chunk i of one key tile: (q·e^F, b·k·e^F, k, F, k·e^E, Σg, g_a, ‖q‖², ‖k‖², rows exact) where
    F_r = Σ_{a<t≤r} g_t and E_r = Σ_{r<t≤e} g_t (a, e: first and last row of the sub-chunk)."""
    r = i * 16 + o_s
    m_r = r < L
    p = base + r[:, None] * (H * K) + o_k[None, :]
    m = m_r[:, None] & m_k[None, :]
    b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
    b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
    b_b = tl.load(b + p, mask=m, other=0.0).to(tl.float32)
    b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
    m_n = ((o_s < 15) & (r + 1 < L))[:, None] & m_k[None, :]
    b_gn = tl.load(g + p + H * K, mask=m_n, other=0.0).to(tl.float32)           # g of row r + 1
    b_F = tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0)
    b_E = tl.cumsum(b_gn, 0, reverse=True)
    b_er = tl.exp(b_F)
    b_tot = tl.sum(b_g, 0)
    b_ga = tl.sum(tl.where((o_s == 0)[:, None], b_g, 0.0), 0)
    b_ok = tl.min(b_F, 1) >= -DIAG_SPAN
    return (b_q * b_er, b_b * b_k * b_er, b_k, b_F, b_k * tl.exp(b_E), b_tot, b_ga,
            tl.sum(b_q * b_q, 1), tl.sum(b_k * b_k, 1), b_ok)


@triton.jit
@no_type_check
def _diag(b_qr, b_bkr, b_k, b_F, b_ok, b_Td, b_Ad, DOT_PREC: tl.constexpr):
    """Add one key tile's diagonal block products (rows with ≤ DIAG_SPAN of decay in the tile)."""
    b_kd = b_k * tl.exp(tl.minimum(-b_F, DIAG_SPAN))
    b_Td += tl.where(b_ok[:, None], tl.dot(b_bkr, tl.trans(b_kd), input_precision=DOT_PREC), 0.0)
    b_Ad += tl.where(b_ok[:, None], tl.dot(b_qr, tl.trans(b_kd), input_precision=DOT_PREC), 0.0)
    return b_Td, b_Ad


@triton.jit
@no_type_check
def _diag_fallback(q, k, b, g, base, i: tl.constexpr, L, o_s, o_k, m_k, b_ok, b_Td, b_Ad,
                   H: tl.constexpr, K: tl.constexpr):
    """Rows past DIAG_SPAN of decay: column s by column s (15 down to 0), E_r = Π_{s<t≤r} α_t as a
    running product (factors ≤ 1), entries of exact rows untouched."""
    r = i * 16 + o_s
    p = base + r[:, None] * (H * K) + o_k[None, :]
    m = (r < L)[:, None] & m_k[None, :]
    b_q = tl.load(q + p, mask=m, other=0.0).to(tl.float32)
    b_k = tl.load(k + p, mask=m, other=0.0).to(tl.float32)
    b_bk = tl.load(b + p, mask=m, other=0.0).to(tl.float32) * b_k
    b_g = tl.load(g + p, mask=m, other=0.0).to(tl.float32)
    b_E = tl.zeros_like(b_q)
    for j in tl.static_range(16):
        s = 15 - j
        if s < 15:
            b_E = b_E * tl.exp(tl.sum(tl.where((o_s == s + 1)[:, None], b_g, 0.0), 0))[None, :]
        b_E = tl.where((o_s == s)[:, None], 1.0, b_E)
        b_ks = tl.sum(tl.where((o_s == s)[:, None], b_k, 0.0), 0)
        m_cs = (o_s == s)[None, :] & (~b_ok)[:, None]
        b_Td += tl.where(m_cs, tl.sum(b_bk * b_E * b_ks[None, :], 1)[:, None], 0.0)
        b_Ad += tl.where(m_cs, tl.sum(b_q * b_E * b_ks[None, :], 1)[:, None], 0.0)
    return b_Td, b_Ad


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
def _store_blk(ptr, t0, i_h, i: tl.constexpr, j: tl.constexpr, x, L, o_s, H: tl.constexpr):
    p = (t0 + i * 16 + o_s[:, None]) * (H * 64) + i_h * 64 + j * 16 + o_s[None, :]
    tl.store(ptr + p, x.to(ptr.dtype.element_ty), mask=(i * 16 + o_s < L)[:, None])


@triton.jit
@no_type_check
def chunk_pairs_solve_v2_kernel(
    q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, L2NORM: tl.constexpr,
    DOT_PREC: tl.constexpr, LOWP: tl.constexpr,
):
    i_t, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    t0 = i_b.to(tl.int64) * T + i_t * 64
    L = tl.minimum(T - i_t * 64, 64)
    base = (t0 * H + i_h) * K
    o_s = tl.arange(0, 16)
    z = tl.zeros([16, 16], tl.float32)
    T10, T20, T21, T30, T31, T32 = z, z, z, z, z, z
    A10, A20, A21, A30, A31, A32 = z, z, z, z, z, z
    Td0, Td1, Td2, Td3, Ad0, Ad1, Ad2, Ad3 = z, z, z, z, z, z, z, z
    zr = tl.zeros([16], tl.float32)
    sq0, sq1, sq2, sq3, sk0, sk1, sk2, sk3 = zr, zr, zr, zr, zr, zr, zr, zr
    for i_k in range(tl.cdiv(K, BK)):
        o_k = i_k * BK + tl.arange(0, BK)
        m_k = o_k < K
        qr0, bkr0, k0, F0, kE0, tot0, ga0, s_q, s_k, ok0 = _sub_tiles(q, k, b, g, base, 0, L, o_s, o_k, m_k, H, K)
        sq0 += s_q
        sk0 += s_k
        Td0, Ad0 = _diag(qr0, bkr0, k0, F0, ok0, Td0, Ad0, DOT_PREC)
        if tl.min(ok0.to(tl.int32)) == 0:
            Td0, Ad0 = _diag_fallback(q, k, b, g, base, 0, L, o_s, o_k, m_k, ok0, Td0, Ad0, H, K)
        qr1, bkr1, k1, F1, kE1, tot1, ga1, s_q, s_k, ok1 = _sub_tiles(q, k, b, g, base, 1, L, o_s, o_k, m_k, H, K)
        sq1 += s_q
        sk1 += s_k
        Td1, Ad1 = _diag(qr1, bkr1, k1, F1, ok1, Td1, Ad1, DOT_PREC)
        if tl.min(ok1.to(tl.int32)) == 0:
            Td1, Ad1 = _diag_fallback(q, k, b, g, base, 1, L, o_s, o_k, m_k, ok1, Td1, Ad1, H, K)
        T10, A10 = _off(bkr1, qr1, kE0, ga1, T10, A10, Aqk.dtype.element_ty, LOWP, DOT_PREC)
        qr2, bkr2, k2, F2, kE2, tot2, ga2, s_q, s_k, ok2 = _sub_tiles(q, k, b, g, base, 2, L, o_s, o_k, m_k, H, K)
        sq2 += s_q
        sk2 += s_k
        Td2, Ad2 = _diag(qr2, bkr2, k2, F2, ok2, Td2, Ad2, DOT_PREC)
        if tl.min(ok2.to(tl.int32)) == 0:
            Td2, Ad2 = _diag_fallback(q, k, b, g, base, 2, L, o_s, o_k, m_k, ok2, Td2, Ad2, H, K)
        T20, A20 = _off(bkr2, qr2, kE0, tot1 + ga2, T20, A20, Aqk.dtype.element_ty, LOWP, DOT_PREC)
        T21, A21 = _off(bkr2, qr2, kE1, ga2, T21, A21, Aqk.dtype.element_ty, LOWP, DOT_PREC)
        qr3, bkr3, k3, F3, kE3, tot3, ga3, s_q, s_k, ok3 = _sub_tiles(q, k, b, g, base, 3, L, o_s, o_k, m_k, H, K)
        sq3 += s_q
        sk3 += s_k
        Td3, Ad3 = _diag(qr3, bkr3, k3, F3, ok3, Td3, Ad3, DOT_PREC)
        if tl.min(ok3.to(tl.int32)) == 0:
            Td3, Ad3 = _diag_fallback(q, k, b, g, base, 3, L, o_s, o_k, m_k, ok3, Td3, Ad3, H, K)
        T30, A30 = _off(bkr3, qr3, kE0, tot1 + tot2 + ga3, T30, A30, Aqk.dtype.element_ty, LOWP, DOT_PREC)
        T31, A31 = _off(bkr3, qr3, kE1, tot2 + ga3, T31, A31, Aqk.dtype.element_ty, LOWP, DOT_PREC)
        T32, A32 = _off(bkr3, qr3, kE2, ga3, T32, A32, Aqk.dtype.element_ty, LOWP, DOT_PREC)

    rq0, rq1, rq2, rq3 = zr + 1.0, zr + 1.0, zr + 1.0, zr + 1.0
    rk0, rk1, rk2, rk3 = zr + 1.0, zr + 1.0, zr + 1.0, zr + 1.0
    if L2NORM:
        rq0, rq1, rq2, rq3 = tl.rsqrt(sq0 + 1e-6), tl.rsqrt(sq1 + 1e-6), tl.rsqrt(sq2 + 1e-6), tl.rsqrt(sq3 + 1e-6)
        rk0, rk1, rk2, rk3 = tl.rsqrt(sk0 + 1e-6), tl.rsqrt(sk1 + 1e-6), tl.rsqrt(sk2 + 1e-6), tl.rsqrt(sk3 + 1e-6)
    p_r = (t0 + o_s) * H + i_h
    tl.store(q_rstd + p_r, rq0, mask=o_s < L)
    tl.store(q_rstd + p_r + 16 * H, rq1, mask=16 + o_s < L)
    tl.store(q_rstd + p_r + 32 * H, rq2, mask=32 + o_s < L)
    tl.store(q_rstd + p_r + 48 * H, rq3, mask=48 + o_s < L)
    tl.store(k_rstd + p_r, rk0, mask=o_s < L)
    tl.store(k_rstd + p_r + 16 * H, rk1, mask=16 + o_s < L)
    tl.store(k_rstd + p_r + 32 * H, rk2, mask=32 + o_s < L)
    tl.store(k_rstd + p_r + 48 * H, rk3, mask=48 + o_s < L)

    m_lo = o_s[:, None] > o_s[None, :]
    m_le = o_s[:, None] >= o_s[None, :]
    Td0 = tl.where(m_lo, Td0 * rk0[:, None] * rk0[None, :], 0.0)
    Td1 = tl.where(m_lo, Td1 * rk1[:, None] * rk1[None, :], 0.0)
    Td2 = tl.where(m_lo, Td2 * rk2[:, None] * rk2[None, :], 0.0)
    Td3 = tl.where(m_lo, Td3 * rk3[:, None] * rk3[None, :], 0.0)
    T10 *= rk1[:, None] * rk0[None, :]
    T20 *= rk2[:, None] * rk0[None, :]
    T21 *= rk2[:, None] * rk1[None, :]
    T30 *= rk3[:, None] * rk0[None, :]
    T31 *= rk3[:, None] * rk1[None, :]
    T32 *= rk3[:, None] * rk2[None, :]
    # A_qk = scale · q_r k_s e^{G_r − G_s}, s ≤ r; zero blocks above the diagonal
    _store_blk(Aqk, t0, i_h, 0, 0, tl.where(m_le, scale * Ad0 * rq0[:, None] * rk0[None, :], 0.0), L, o_s, H)
    _store_blk(Aqk, t0, i_h, 0, 1, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 0, 2, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 0, 3, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 1, 0, scale * A10 * rq1[:, None] * rk0[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 1, 1, tl.where(m_le, scale * Ad1 * rq1[:, None] * rk1[None, :], 0.0), L, o_s, H)
    _store_blk(Aqk, t0, i_h, 1, 2, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 1, 3, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 2, 0, scale * A20 * rq2[:, None] * rk0[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 2, 1, scale * A21 * rq2[:, None] * rk1[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 2, 2, tl.where(m_le, scale * Ad2 * rq2[:, None] * rk2[None, :], 0.0), L, o_s, H)
    _store_blk(Aqk, t0, i_h, 2, 3, z, L, o_s, H)
    _store_blk(Aqk, t0, i_h, 3, 0, scale * A30 * rq3[:, None] * rk0[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 3, 1, scale * A31 * rq3[:, None] * rk1[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 3, 2, scale * A32 * rq3[:, None] * rk2[None, :], L, o_s, H)
    _store_blk(Aqk, t0, i_h, 3, 3, tl.where(m_le, scale * Ad3 * rq3[:, None] * rk3[None, :], 0.0), L, o_s, H)

    # A = (I + T)⁻¹: diagonal blocks by substitution, then A_ij = −A_ii Σ_{j≤m<i} T_im A_mj
    X0 = _inv_unit_lower(Td0, o_s)
    X1 = _inv_unit_lower(Td1, o_s)
    X2 = _inv_unit_lower(Td2, o_s)
    X3 = _inv_unit_lower(Td3, o_s)
    X10 = -tl.dot(X1, tl.dot(T10, X0, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X21 = -tl.dot(X2, tl.dot(T21, X1, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X32 = -tl.dot(X3, tl.dot(T32, X2, input_precision=DOT_PREC), input_precision=DOT_PREC)
    X20 = -tl.dot(X2, tl.dot(T20, X0, input_precision=DOT_PREC) + tl.dot(T21, X10, input_precision=DOT_PREC),
                  input_precision=DOT_PREC)
    X31 = -tl.dot(X3, tl.dot(T31, X1, input_precision=DOT_PREC) + tl.dot(T32, X21, input_precision=DOT_PREC),
                  input_precision=DOT_PREC)
    X30 = -tl.dot(X3, tl.dot(T30, X0, input_precision=DOT_PREC) + tl.dot(T31, X10, input_precision=DOT_PREC)
                  + tl.dot(T32, X20, input_precision=DOT_PREC), input_precision=DOT_PREC)
    _store_blk(A, t0, i_h, 0, 0, X0, L, o_s, H)
    _store_blk(A, t0, i_h, 0, 1, z, L, o_s, H)
    _store_blk(A, t0, i_h, 0, 2, z, L, o_s, H)
    _store_blk(A, t0, i_h, 0, 3, z, L, o_s, H)
    _store_blk(A, t0, i_h, 1, 0, X10, L, o_s, H)
    _store_blk(A, t0, i_h, 1, 1, X1, L, o_s, H)
    _store_blk(A, t0, i_h, 1, 2, z, L, o_s, H)
    _store_blk(A, t0, i_h, 1, 3, z, L, o_s, H)
    _store_blk(A, t0, i_h, 2, 0, X20, L, o_s, H)
    _store_blk(A, t0, i_h, 2, 1, X21, L, o_s, H)
    _store_blk(A, t0, i_h, 2, 2, X2, L, o_s, H)
    _store_blk(A, t0, i_h, 2, 3, z, L, o_s, H)
    _store_blk(A, t0, i_h, 3, 0, X30, L, o_s, H)
    _store_blk(A, t0, i_h, 3, 1, X31, L, o_s, H)
    _store_blk(A, t0, i_h, 3, 2, X32, L, o_s, H)
    _store_blk(A, t0, i_h, 3, 3, X3, L, o_s, H)


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
                      use_qk_l2norm_in_kernel=False, pairs_config=None, wy_config=None):
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
    chunk_pairs_solve_v2_kernel[(NT, B * H)](
        q, k, g, b, Aqk, A, q_rstd, k_rstd, scale, T, H=H, K=K, L2NORM=use_qk_l2norm_in_kernel,
        DOT_PREC=prec, LOWP=lowp, **{"BK": min(32, BKp), "num_warps": 2, "num_stages": 1, **(pairs_config or {})})
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


def bench() -> None:
    """ms of main's forward, this one (a few tiles) and the peer at the benchmark's shapes, plus accuracy."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch.nn.functional as F
    from bench import FWD_SHAPES, inputs, peer_ops
    from triton.testing import do_bench

    import gdn2.fast
    from gdn2.ops import chunk_gdn2 as ref_chunk

    x = inputs(1, 4096)
    x["k"] = F.normalize(x["k"].float(), dim=-1).to(x["k"].dtype)
    x["q"] = F.normalize(x["q"].float(), dim=-1).to(x["q"].dtype)
    o_ref, _ = ref_chunk(**{n: t.double() for n, t in x.items()}, scale=128 ** -0.5)
    for name, fn in (("main", lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)[0]),
                     ("v2", lambda: chunk_gdn2_fwd_v2(**x, scale=128 ** -0.5, use_qk_l2norm_in_kernel=True)[0])):
        o = fn()
        err = ((o.double() - o_ref).pow(2).mean().sqrt() / o_ref.pow(2).mean().sqrt()).item()
        print(f"accuracy 1x4096 {name}: o rel-RMS {err:.2e}", flush=True)
    peer, _ = peer_ops()
    for B, T in FWD_SHAPES:
        x = inputs(B, T)
        fns = {"main": lambda x=x: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)}
        for pc in ({}, {"num_warps": 4}, {"BK": 64}):
            for wc in ({}, {"BK": 32, "BV": 32}):
                fns[f"v2 pairs{pc} wy{wc}"] = lambda pc=pc, wc=wc, x=x: chunk_gdn2_fwd_v2(
                    **x, scale=128 ** -0.5, use_qk_l2norm_in_kernel=True, pairs_config=pc, wy_config=wc)
        if peer is not None:
            fns["peer"] = lambda x=x: peer(**x, use_qk_l2norm_in_kernel=True)
        ms = {n: do_bench(f, warmup=25, rep=150, return_mode="median") for n, f in fns.items()}
        print(f"fwd {B}x{T}: " + ", ".join(f"{n} {t:.3f}" for n, t in ms.items()), flush=True)
        if (B, T) == (8, 2048):
            prof_kernels(fns["v2 pairs{} wy{}"])


def prof_kernels(fn, n: int = 5) -> None:
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    for e in sorted(prof.key_averages(), key=lambda e: -e.device_time_total)[:5]:
        print(f"   {e.device_time_total / n:9.1f} us  {e.key[:70]}", flush=True)
    for kern in (chunk_pairs_solve_v2_kernel, chunk_wy_v2_kernel):
        for cache in getattr(kern, "device_caches", {}).values():
            for ck in cache[0].values():
                print(f"   {kern.__name__}: {ck.n_regs} registers, {ck.n_spills} spills, {ck.metadata.num_warps} warps")


if __name__ == "__main__":
    {"check": check, "bench": bench}[sys.argv[1]]()
