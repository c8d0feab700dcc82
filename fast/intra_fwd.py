"""Stages (1)-(3) of the chunk forward (chunk size 64) from 16×16 tiles, in three kernels.

    chunk_intra_diag_kernel          per 16-row sub-chunk i: the diagonal blocks T_ii and (A_qk)_ii,
                                     A_ii = (I + T_ii)⁻¹, 1/‖q‖ and 1/‖k‖ of its rows
    chunk_intra_offdiag_kernel       per chunk: the six blocks T_ij, (A_qk)_ij, j < i, then
                                     A_ij = −A_ii Σ_{j≤m<i} T_im A_mj
    chunk_wy_fwd_kernel              per chunk: G, Y = A (γ⊙b⊙k), Q_γ, K_tail, γ_C per key tile and
                                     U = A (w⊙v) per value tile; flags bad input values

Reference: ``gdn2.ops.chunk_fwd`` (``chunk_intra_blocked``, ``solve_unit_lower_blocked``, ``chunk_wy``).
Every operand is a [16, BK] or [64, BK] tile loaded in the layout its product wants. Numerics: every
exponent is a sum of g ≤ 0 anchored at the first row of a 16-row sub-chunk; a diagonal block's growing
column factor is clamped at e^EXP_MAX and the rows past the clamp take exact running products.
A (float32) and 1/‖q‖, 1/‖k‖ go through memory between the kernels (264 bytes per token and head).
"""

import triton
import triton.language as tl

from .jit import (
    F_B,
    F_G,
    F_K,
    F_Q,
    F_V,
    F_W,
    G_FLOOR,
    apply_gate,
    chunk_bounds,
    gate_value,
    load_gate,
    nonfinite,
    not_log_decay,
    offset_int,
    raise_flags,
)

__all__ = ["chunk_intra_diag_kernel", "chunk_intra_offdiag_kernel", "chunk_wy_fwd_kernel"]


@triton.jit
def _inv_unit_lower(b_T, o_s):
    """(I + T)⁻¹ of a strictly lower 16×16 T by forward substitution on its rows."""
    b_X = tl.where(o_s[:, None] == o_s[None, :], 1.0, 0.0)
    for j in range(1, 16):
        b_t = tl.sum(tl.where((o_s == j)[:, None], b_T, 0.0), 0)                    # row j of T
        b_new = tl.where(o_s == j, 1.0, 0.0) - tl.sum(b_t[:, None] * b_X, 0)
        b_X = tl.where((o_s == j)[:, None], b_new[None, :], b_X)
    return b_X


@triton.jit
def _blk_ptr(ptr, t0, i_h, i, j, o_s, H: tl.constexpr):
    """Pointers of block (i, j) of a chunk's [64, 64] matrix stored a row per token, [B, T, H, 64]."""
    return ptr + (t0 + i * 16 + o_s[:, None]) * (H * 64) + i_h * 64 + j * 16 + o_s[None, :]


# --8<-- [start:chunk_intra_diag_kernel]
@triton.jit
def chunk_intra_diag_kernel(
    q, k, g, b,              # inputs [B, T, H, K]
    A_log, dt_bias,          # in-op gate: A_log [H], dt_bias [H·K] (read with USE_GATE)
    g_out,                   # out [B, T, H, K] float32 with USE_GATE: the gate g, for the kernels after this one
    Aqk, A,                  # out [B, T, H, 64]: A_qk (q's dtype), A = (I + T)⁻¹ (float32), diagonal blocks
    q_rstd, k_rstd,          # out [B, T, H] float32: 1/‖q‖, 1/‖k‖ (1 without L2NORM)
    flags,                   # [1] int32: bits of the inputs holding bad values (jit.FLAG_BITS), with CHECK
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    chunk_indices,           # [NSLOT, 2] (sequence, chunk) per program (IS_VARLEN)
    scale, T, N,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr, EXP_MAX: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, L2NORM: tl.constexpr, IS_VARLEN: tl.constexpr,
    DOT_PREC: tl.constexpr, SIGMOID: tl.constexpr, B_SCALE: tl.constexpr, CHECK: tl.constexpr,
    PREFETCH: tl.constexpr,
):
    """One 16-row sub-chunk i: T_ii, (A_qk)_ii, (I + T_ii)⁻¹. Grid (chunks·4, B·H) or (slots·4, H).

    Anchored at the sub-chunk's first row a: exp(F_r)·exp(−F_s), F_r = Σ_{a<t≤r} g_t, the column
    factor clamped at e^EXP_MAX; the rows of a key tile past the clamp take exact running products
    column by column. Also writes zeros right of the diagonal blocks (the off-diagonal kernel fills
    the left). With the in-op gate, the gate of every element is computed here once and written to
    ``g_out``, which the other forward kernels read as a plain log-decay (the gate costs as much as a
    few dozen products per element, and would otherwise be evaluated again in every kernel and
    layout that reads g). FLOPs per sub-chunk 4·16²·K (+ 16³ for the inverse); bytes: q, k, b, g of
    its rows once (and g_out written once).
    Since it reads every element of q, k, b and g once, it also flags (with CHECK) non-finite q, k, b
    and log-decays above 0 or NaN. It only detects there: the row sums ‖q‖², ‖k‖² it needs anyway turn
    non-finite with a bad q or k, and each row adds b·0 (0 when finite, NaN otherwise) and 1 per bad g
    to one more sum; only a program whose sums are not all finite and 0 reads its rows a second time,
    to name the bad arguments exactly.
    """
    i_x, i_bh = tl.program_id(0), tl.program_id(1)
    i_c, i_i = i_x // 4, i_x % 4
    i_b, i_h = i_bh // H, i_bh % H
    bos, eos, i_t, slot, work = chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, 64, IS_VARLEN)
    if work:
        t0 = bos + i_t * 64
        L = tl.minimum(eos - t0, 64).to(tl.int32)
        o_s = tl.arange(0, 16)
        r = i_i * 16 + o_s
        m_r = r < L
        base = (t0 * H + i_h) * K
        b_Td = tl.zeros([16, 16], tl.float32)
        b_Ad = tl.zeros([16, 16], tl.float32)
        b_sq = tl.zeros([16], tl.float32)
        b_sk = tl.zeros([16], tl.float32)
        b_bad = tl.zeros([16], tl.float32)       # with CHECK: 0 unless a value of b or g is bad
        if PREFETCH:                             # the first key tile, raw
            o_k = tl.arange(0, BK)
            m = m_r[:, None] & (o_k < K)[None, :]
            off = base + r[:, None] * (H * K) + o_k[None, :]
            n_q, n_k = tl.load(q + off, mask=m, other=0.0), tl.load(k + off, mask=m, other=0.0)
            n_b, n_g = tl.load(b + off, mask=m, other=0.0), tl.load(g + off, mask=m, other=0.0)
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            off = base + r[:, None] * (H * K) + o_k[None, :]
            m = m_r[:, None] & m_k[None, :]
            if PREFETCH:
                # this tile was loaded one step ago; the next one goes out now, before this tile's stores
                b_q, b_k, b_b, b_g = n_q.to(tl.float32), n_k.to(tl.float32), n_b.to(tl.float32), n_g
                m_n = m_r[:, None] & (o_k + BK < K)[None, :]
                n_q, n_k = tl.load(q + off + BK, mask=m_n, other=0.0), tl.load(k + off + BK, mask=m_n, other=0.0)
                n_b, n_g = tl.load(b + off + BK, mask=m_n, other=0.0), tl.load(g + off + BK, mask=m_n, other=0.0)
                b_g = apply_gate(b_g, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE, HAS_DT_BIAS)
            else:
                b_q = tl.load(q + off, mask=m, other=0.0).to(tl.float32)
                b_k = tl.load(k + off, mask=m, other=0.0).to(tl.float32)
                b_b = tl.load(b + off, mask=m, other=0.0).to(tl.float32)
                b_g = load_gate(g, off, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias, K, USE_GATE,
                                HAS_DT_BIAS)
            if CHECK:
                b_bad += tl.sum(b_b * 0.0 + tl.where(b_g <= 0.0, 0.0, 1.0), 1)
            b_bk = gate_value(b_b, m, SIGMOID, B_SCALE) * b_k
            if USE_GATE:
                tl.store(g_out + off, b_g, mask=m)
            b_sq += tl.sum(b_q * b_q, 1)
            b_sk += tl.sum(b_k * b_k, 1)
            b_F = tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0)
            b_ok = tl.min(b_F, 1) >= -EXP_MAX
            b_er = tl.exp(b_F)
            b_kd = tl.trans(b_k * tl.exp(tl.minimum(-b_F, EXP_MAX)))
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
        # ‖q‖² and ‖k‖² turn NaN or infinite with a bad q or k (or overflow: the second pass decides);
        # the second pass runs last, when the tiles above are dead
        if CHECK:
            if tl.sum(b_bad + b_sq * 0.0 + b_sk * 0.0) != 0.0:
                bad = tl.zeros([], tl.int32)
                for i_k in range(tl.cdiv(K, BK)):
                    o_k = i_k * BK + tl.arange(0, BK)
                    m_k = o_k < K
                    off = base + r[:, None] * (H * K) + o_k[None, :]
                    m = m_r[:, None] & m_k[None, :]
                    bad |= ((nonfinite(tl.load(q + off, mask=m, other=0.0).to(tl.float32)) * F_Q)
                            | (nonfinite(tl.load(k + off, mask=m, other=0.0).to(tl.float32)) * F_K)
                            | (nonfinite(tl.load(b + off, mask=m, other=0.0).to(tl.float32)) * F_B)
                            | (not_log_decay(load_gate(g, off, m, i_h, o_k[None, :], m_k[None, :], A_log, dt_bias,
                                                       K, USE_GATE, HAS_DT_BIAS)) * F_G))
                raise_flags(flags, bad)
# --8<-- [end:chunk_intra_diag_kernel]


@triton.jit
def _sub_tiles(q, k, b, g, base, i: tl.constexpr, L, o_s, o_k, m_k, H: tl.constexpr, K: tl.constexpr,
               ROWS: tl.constexpr, COLS: tl.constexpr, SIGMOID: tl.constexpr, B_SCALE: tl.constexpr):
    """Sub-chunk i of one key tile. ROWS: (q·e^F, b·k·e^F), F_r = Σ_{a<t≤r} g_t; COLS: k·e^E,
    E_r = Σ_{r<t≤e} g_t (a, e: its first and last row); and Σ g, g_a over the sub-chunk."""
    r = i * 16 + o_s
    off = base + r[:, None] * (H * K) + o_k[None, :]
    m = (r < L)[:, None] & m_k[None, :]
    b_k = tl.load(k + off, mask=m, other=0.0).to(tl.float32)
    b_g = tl.load(g + off, mask=m, other=0.0).to(tl.float32)
    b_qr = b_k
    b_bkr = b_k
    b_kE = b_k
    if ROWS:
        b_er = tl.exp(tl.cumsum(tl.where((o_s == 0)[:, None], 0.0, b_g), 0))
        b_qr = tl.load(q + off, mask=m, other=0.0).to(tl.float32) * b_er
        b_bkr = gate_value(tl.load(b + off, mask=m, other=0.0).to(tl.float32), m, SIGMOID, B_SCALE) * b_k * b_er
    if COLS:
        m_n = ((o_s < 15) & (r + 1 < L))[:, None] & m_k[None, :]
        b_gn = tl.load(g + off + H * K, mask=m_n, other=0.0).to(tl.float32)
        b_kE = b_k * tl.exp(tl.cumsum(b_gn, 0, reverse=True))
    b_ga = tl.sum(tl.where((o_s == 0)[:, None], b_g, 0.0), 0)
    return b_qr, b_bkr, b_kE, tl.sum(b_g, 0), b_ga


@triton.jit
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
def _rstd(rstd, t0, i_h, i: tl.constexpr, L, o_s, H: tl.constexpr):
    """1/‖x‖ of the rows of sub-chunk i (0 past the chunk's L rows)."""
    return tl.load(rstd + (t0 + i * 16 + o_s) * H + i_h, mask=i * 16 + o_s < L, other=0.0)


@triton.jit
def _scaled_store(Aqk, t0, i_h, i: tl.constexpr, j: tl.constexpr, x, rq_i, rk_j, scale, L, o_s, H: tl.constexpr):
    """Store scale·x·(1/‖q_r‖)(1/‖k_s‖) as block (i, j) of A_qk."""
    tl.store(_blk_ptr(Aqk, t0, i_h, i, j, o_s, H), (scale * x * rq_i[:, None] * rk_j[None, :]).to(
        Aqk.dtype.element_ty), mask=(i * 16 + o_s < L)[:, None])


# --8<-- [start:chunk_intra_offdiag_kernel]
@triton.jit
def chunk_intra_offdiag_kernel(
    q, k, g, b,              # inputs [B, T, H, K]; g the log-decay (the diagonal kernel's output with the in-op gate)
    Aqk, A,                  # [B, T, H, 64]: off-diagonal blocks written here; A's diagonal blocks read
    q_rstd, k_rstd,          # [B, T, H] float32 from chunk_intra_diag_kernel
    cu_seqlens, chunk_indices, scale, T, N,
    H: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
    IS_VARLEN: tl.constexpr, DOT_PREC: tl.constexpr, LOWP: tl.constexpr, SIGMOID: tl.constexpr,
    B_SCALE: tl.constexpr, OFF64: tl.constexpr,
):
    """One chunk: the six off-diagonal 16×16 blocks of T and A_qk, then A = (I + T)⁻¹ from the diagonal
    inverses: A_ij = −A_ii Σ_{j≤m<i} T_im A_mj. Grid (chunks, B·H) or (slots, H).

    Block (i, j), j < i, anchored at a = 16i: row factor exp(F_r) ≤ 1, column factor
    exp(E_s + Σ_{j<m<i} Σ_m g + g_a) ≤ 1: sums of g ≤ 0 only, never differences.
    FLOPs per chunk 4·6·16²·K (+ 10 16×16 products for the inverse); bytes: the chunk's q, k, b, g.
    """
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, eos, i_t, slot, work = chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, 64, IS_VARLEN)
    DT: tl.constexpr = Aqk.dtype.element_ty
    t0 = offset_int(bos + i_t * 64, OFF64)
    L = tl.minimum(eos - t0, 64).to(tl.int32)
    if work & (L > 16):
        base = (t0 * H + i_h) * K
        o_s = tl.arange(0, 16)
        z = tl.zeros([16, 16], tl.float32)
        T10, T20, T21, T30, T31, T32 = z, z, z, z, z, z
        A10, A20, A21, A30, A31, A32 = z, z, z, z, z, z
        for i_k in range(tl.cdiv(K, BK)):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            _, _, kE0, _, _ = _sub_tiles(q, k, b, g, base, 0, L, o_s, o_k, m_k, H, K, False, True, SIGMOID, B_SCALE)
            qr1, bkr1, kE1, tot1, ga1 = _sub_tiles(q, k, b, g, base, 1, L, o_s, o_k, m_k, H, K, True, True,
                                                   SIGMOID, B_SCALE)
            T10, A10 = _off(bkr1, qr1, kE0, ga1, T10, A10, DT, LOWP, DOT_PREC)
            qr2, bkr2, kE2, tot2, ga2 = _sub_tiles(q, k, b, g, base, 2, L, o_s, o_k, m_k, H, K, True, True,
                                                   SIGMOID, B_SCALE)
            T20, A20 = _off(bkr2, qr2, kE0, tot1 + ga2, T20, A20, DT, LOWP, DOT_PREC)
            T21, A21 = _off(bkr2, qr2, kE1, ga2, T21, A21, DT, LOWP, DOT_PREC)
            qr3, bkr3, _, _, ga3 = _sub_tiles(q, k, b, g, base, 3, L, o_s, o_k, m_k, H, K, True, False,
                                              SIGMOID, B_SCALE)
            T30, A30 = _off(bkr3, qr3, kE0, tot1 + tot2 + ga3, T30, A30, DT, LOWP, DOT_PREC)
            T31, A31 = _off(bkr3, qr3, kE1, tot2 + ga3, T31, A31, DT, LOWP, DOT_PREC)
            T32, A32 = _off(bkr3, qr3, kE2, ga3, T32, A32, DT, LOWP, DOT_PREC)
        # A_qk blocks, and the 1/‖k‖ of each sub-chunk for T: every norm is loaded before the first store
        # (no load moves above a store, which might alias it: one wait on memory instead of six)
        rq1, rq2, rq3 = _rstd(q_rstd, t0, i_h, 1, L, o_s, H), _rstd(q_rstd, t0, i_h, 2, L, o_s, H), \
            _rstd(q_rstd, t0, i_h, 3, L, o_s, H)
        rk0, rk1 = _rstd(k_rstd, t0, i_h, 0, L, o_s, H), _rstd(k_rstd, t0, i_h, 1, L, o_s, H)
        rk2, rk3 = _rstd(k_rstd, t0, i_h, 2, L, o_s, H), _rstd(k_rstd, t0, i_h, 3, L, o_s, H)
        m1, m2, m3 = (16 + o_s < L)[:, None], (32 + o_s < L)[:, None], (48 + o_s < L)[:, None]
        X0 = tl.load(_blk_ptr(A, t0, i_h, 0, 0, o_s, H))
        X1 = tl.load(_blk_ptr(A, t0, i_h, 1, 1, o_s, H), mask=m1, other=0.0)
        X2 = tl.load(_blk_ptr(A, t0, i_h, 2, 2, o_s, H), mask=m2, other=0.0)
        X3 = tl.load(_blk_ptr(A, t0, i_h, 3, 3, o_s, H), mask=m3, other=0.0)
        _scaled_store(Aqk, t0, i_h, 1, 0, A10, rq1, rk0, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 2, 0, A20, rq2, rk0, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 2, 1, A21, rq2, rk1, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 3, 0, A30, rq3, rk0, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 3, 1, A31, rq3, rk1, scale, L, o_s, H)
        _scaled_store(Aqk, t0, i_h, 3, 2, A32, rq3, rk2, scale, L, o_s, H)
        T10 *= rk1[:, None] * rk0[None, :]
        T20 *= rk2[:, None] * rk0[None, :]
        T21 *= rk2[:, None] * rk1[None, :]
        T30 *= rk3[:, None] * rk0[None, :]
        T31 *= rk3[:, None] * rk1[None, :]
        T32 *= rk3[:, None] * rk2[None, :]
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
# --8<-- [end:chunk_intra_offdiag_kernel]


# --8<-- [start:chunk_wy_fwd_kernel]
@triton.jit
def chunk_wy_fwd_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]; g as the off-diagonal kernel's
    A, q_rstd, k_rstd,       # from the two kernels above
    Y, Qg, Kt,               # out [B, T, H, K] (q's dtype): A (γ⊙b⊙k), scale·γ⊙q, exp(G_C − G)⊙k
    U,                       # out [B, T, HV, V] (q's dtype): A (w⊙v)
    gC,                      # out [NSLOT, H, K] float32: γ_C = exp(G_C) per chunk slot
    G_out,                   # out [B, T, H, K] float32 with SAVE: G
    flags,                   # [1] int32: bits of the inputs holding bad values (jit.FLAG_BITS)
    cu_seqlens, chunk_indices, scale, T, N,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr,
    IS_VARLEN: tl.constexpr, SAVE: tl.constexpr,
    DOT_PREC: tl.constexpr, LOWP: tl.constexpr, NP: tl.constexpr, SIGMOID: tl.constexpr, B_SCALE: tl.constexpr,
    CHECK: tl.constexpr, LOADS_FIRST: tl.constexpr,
):
    """One chunk, or one of NP programs of a chunk: per key tile G (a scan of g), Y, Q_γ, K_tail, γ_C;
    per value tile of each value head of the group, U. Program p of a chunk takes key tiles p, p + NP, …
    and value tiles p, p + NP, … (each loads A, and casts it to bfloat16 with LOWP, once).
    Grid (chunks, B·H, NP). It is the only forward kernel that reads v and w, each element once, so it
    also flags (with CHECK) non-finite v and w (the diagonal kernel flags q, k, b and g).
    FLOPs per chunk 2·64²·(K + (HV/H)·V); bytes: the chunk's inputs once, its outputs once.
    """
    i_c, i_bh, i_p = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    i_b, i_h = i_bh // H, i_bh % H
    bos, eos, i_t, slot, work = chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, 64, IS_VARLEN)
    if work:
        t0 = bos + i_t * 64
        L = tl.minimum(eos - t0, 64).to(tl.int32)
        o_t = tl.arange(0, 64)
        m_t = o_t < L
        b_A = tl.load(A + (t0 + o_t[:, None]) * (H * 64) + i_h * 64 + o_t[None, :], mask=m_t[:, None], other=0.0)
        if LOWP:
            b_Al = b_A.to(Y.dtype.element_ty)
        b_rq = tl.load(q_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
        b_rk = tl.load(k_rstd + (t0 + o_t) * H + i_h, mask=m_t, other=0.0)
        off_row = (t0 * H + i_h) * K + o_t[:, None] * (H * K)
        bad = tl.zeros([], tl.int32)
        for i_k in range(i_p, tl.cdiv(K, BK), NP):
            o_k = i_k * BK + tl.arange(0, BK)
            m_k = o_k < K
            m = m_t[:, None] & m_k[None, :]
            off = off_row + o_k[None, :]
            # A store may alias a later load, so no load moves above one: loaded where first used, each
            # tile dies at its last use (the fewest [64, BK] float32 tiles live at once) but the program
            # waits on memory four times per tile. LOADS_FIRST (the default) issues the five loads
            # together, one wait per tile.
            m_n = ((o_t + 1) < L)[:, None] & m_k[None, :]
            b_g = tl.load(g + off, mask=m, other=0.0).to(tl.float32)
            if LOADS_FIRST:
                b_gn = tl.load(g + off + H * K, mask=m_n, other=0.0)          # g of row r + 1
                b_q = tl.load(q + off, mask=m, other=0.0)
                b_k = tl.load(k + off, mask=m, other=0.0)
                b_b = tl.load(b + off, mask=m, other=0.0)
            b_G = tl.cumsum(tl.maximum(b_g, G_FLOOR), 0)                       # G_r = Σ_{t≤r} g_t
            if SAVE:
                tl.store(G_out + off, b_G, mask=m)
            tl.store(gC + (slot * H + i_h) * K + o_k, tl.exp(tl.sum(b_g, 0)), mask=m_k)
            b_gamma = tl.exp(b_G)
            if not LOADS_FIRST:
                b_q = tl.load(q + off, mask=m, other=0.0)
            tl.store(Qg + off, (b_gamma * b_q.to(tl.float32) * (scale * b_rq)[:, None]).to(Qg.dtype.element_ty),
                     mask=m)
            if not LOADS_FIRST:
                b_k = tl.load(k + off, mask=m, other=0.0)
                b_b = tl.load(b + off, mask=m, other=0.0)
            b_b = b_b.to(tl.float32)
            b_k = b_k.to(tl.float32) * b_rk[:, None]
            b_e = b_gamma * gate_value(b_b, m, SIGMOID, B_SCALE) * b_k
            if LOWP:
                b_Y = tl.dot(b_Al, b_e.to(Y.dtype.element_ty))
            else:
                b_Y = tl.dot(b_A, b_e, input_precision=DOT_PREC)
            tl.store(Y + off, b_Y.to(Y.dtype.element_ty), mask=m)
            if not LOADS_FIRST:
                b_gn = tl.load(g + off + H * K, mask=m_n, other=0.0)          # g of row r + 1
            b_tail = tl.exp(tl.cumsum(b_gn.to(tl.float32), 0, reverse=True))   # exp(G_C − G_r)
            tl.store(Kt + off, (b_tail * b_k).to(Kt.dtype.element_ty), mask=m)
        NV: tl.constexpr = (V + BV - 1) // BV
        for i_gv in range(i_p, (HV // H) * NV, NP):
            i_hv = i_h * (HV // H) + i_gv // NV
            off_v = (t0 * HV + i_hv) * V + o_t[:, None] * (HV * V)
            o_v = (i_gv % NV) * BV + tl.arange(0, BV)
            m = m_t[:, None] & (o_v < V)[None, :]
            b_v = tl.load(v + off_v + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            b_w = tl.load(w + off_v + o_v[None, :], mask=m, other=0.0).to(tl.float32)
            if CHECK:
                bad |= (nonfinite(b_v) * F_V) | (nonfinite(b_w) * F_W)
            b_w = gate_value(b_w, m, SIGMOID, 1.0)
            if LOWP:
                b_U = tl.dot(b_Al, (b_w * b_v).to(U.dtype.element_ty))
            else:
                b_U = tl.dot(b_A, b_w * b_v, input_precision=DOT_PREC)
            tl.store(U + off_v + o_v[None, :], b_U.to(U.dtype.element_ty), mask=m)
        if CHECK:
            raise_flags(flags, bad)
# --8<-- [end:chunk_wy_fwd_kernel]
