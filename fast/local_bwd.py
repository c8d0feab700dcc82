"""The local stage of the chunk backward: every gradient of a chunk given its state-path gradients.

Reference: ``gdn2.ops.chunk_bwd.chunk_bwd_local``. Two kernels, each parallel over chunks:

    chunk_bwd_local_wy_kernel        the output, state and WY paths (per chunk and key head, the group's
                                     value heads summed on chip): dQ_γ = dO S₀ᵀ, dK_tail = R dSᵀ,
                                     dY = −dR S₀ᵀ, dZ = Aᵀ dR, dĒ = Aᵀ dY, dA = dR Zᵀ + dY Ēᵀ (the gates
                                     inside the products), dT = −strict_lower(Aᵀ dA Aᵀ)
    chunk_bwd_local_pairwise_kernel  the gradients of the pairwise products A_qk = scale·Σ_d q k exp(G_r − G_s)
                                     (r ≥ s) and T = Σ_d b k k exp(G_r − G_s) (r > s), the reverse cumulative
                                     sum dg = revcumsum(dG) inside the chunk, and the backward of the in-op
                                     gate and the in-op L2 norm

Every decay factor is exp(G_r − G_s) with r ≥ s, so it is ≤ 1. Between sub-chunks of BC = 16 tokens it
is split at an anchor row a with s ≤ a ≤ r: the first row of the row's sub-chunk for gradients of row
tokens, the last valid row of the column's sub-chunk for gradients of column tokens. The latter may lie
after the column token, but it only scales terms of rows r > a, whose gradients are exact zeros when
the loss reads no output after the column token: gradients stay causal bit for bit. Inside a sub-chunk
the first row is the anchor of products whose growing factor exp(G_a − G_s) is clamped at e^EXP_MAX; a
token past the clamp takes an element-by-element fallback. Padded rows are masked before they can meet
an exponential.
"""

import triton
import triton.language as tl

from .jit import G_FLOOR, chunk_bounds, exp_where, gate, gate_value, offset_int

__all__ = ["chunk_bwd_local_wy_kernel", "chunk_bwd_local_pairwise_kernel"]


@triton.jit
def _load_qk(x, rstd, off, mask, off_row, m_row, L2NORM: tl.constexpr):
    """A [rows, BK] tile of q or k in float32, times 1/‖x‖ per row when the op normalises."""
    b_x = tl.load(x + off, mask=mask, other=0.).to(tl.float32)
    if L2NORM:
        b_x *= tl.load(rstd + off_row, mask=m_row, other=0.)[:, None]
    return b_x



# --8<-- [start:chunk_bwd_local_wy_kernel]
@triton.jit(do_not_specialize=["T"])
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
    N,
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
    SIGMOID: tl.constexpr,
    B_SCALE: tl.constexpr,
    OFF64: tl.constexpr,
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
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    GROUP: tl.constexpr = HV // H
    bos, eos, i_t, i_tg, work = chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, BT, IS_VARLEN)
    if work == 0:
        return
    T = (eos - bos).to(tl.int32)         # from here on, the length of this sequence
    bos, i_tg = offset_int(bos, OFF64), offset_int(i_tg, OFF64)
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
                    b_w = gate_value(tl.load(w + off_v, mask=m_tv, other=0.).to(tl.float32), m_tv, SIGMOID, 1.0)
                    b_dA += tl.dot(b_dR, tl.trans((b_w * b_v).to(DT)), input_precision=PREC)
                    b_dM += tl.dot(b_do, tl.trans(b_R), input_precision=PREC)
                    b_dZ = tl.dot(b_AT, b_dR, input_precision=PREC)
                    tl.store(dv + off_v, (b_dZ * b_w).to(dv.dtype.element_ty), mask=m_tv)
                    b_dw = b_dZ * b_v
                    if SIGMOID:
                        b_dw *= b_w * (1. - b_w)                     # w = σ(x): dw/dx = w(1 − w)
                    tl.store(dw + off_v, b_dw.to(dw.dtype.element_ty), mask=m_tv)
        off_k = ((bos + o_t[:, None]) * H + i_h) * K + o_k[None, :]
        b_q = tl.load(q + off_k, mask=m_tk, other=0.).to(tl.float32)
        b_k = tl.load(k + off_k, mask=m_tk, other=0.).to(tl.float32)
        if L2NORM:
            off_r = (bos + o_t) * H + i_h
            b_q *= tl.load(q_rstd + off_r, mask=m_t, other=0.)[:, None]
            b_k *= tl.load(k_rstd + off_r, mask=m_t, other=0.)[:, None]
        b_b = gate_value(tl.load(b + off_k, mask=m_tk, other=0.).to(tl.float32), m_tk, SIGMOID, B_SCALE)
        b_G = tl.load(G + off_k, mask=m_tk, other=0.)
        b_Gl = tl.load(G + ((bos + last) * H + i_h) * K + o_k, mask=m_k, other=0.)
        b_gam = exp_where(b_G, m_tk)
        b_dec = exp_where(b_Gl[None, :] - b_G, m_tk)     # exp(G_C − G_r) ≤ 1
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
    dA_log_part,    # out [programs, H] float32 per-program partial sums of dA_log, or None
    ddt_part,       # out [programs, H, K] float32 per-program partial sums of ddt_bias, or None
    cu_seqlens,     # [N + 1] int or None
    chunk_indices,  # [NSLOT, 2] int32 (sequence, chunk), sequence −1 = no work; or None
    T,
    N,
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
    SIGMOID: tl.constexpr,
    B_SCALE: tl.constexpr,
    OFF64: tl.constexpr,
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
    i_c, i_bh = tl.program_id(0), tl.program_id(1)
    i_b, i_h = i_bh // H, i_bh % H
    bos, eos, i_t, i_tg, work = chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, BT, IS_VARLEN)
    # the row of this program in the partial sums of the gate's parameters: every program writes one,
    # a spare program of a packed batch (no work) zeros
    i_row = i_c if IS_VARLEN else i_tg
    if work == 0:
        if GATE:
            tl.store(dA_log_part + i_row * H + i_h, 0.)
            tl.store(ddt_part + (i_row * H + i_h) * K + tl.arange(0, BK), tl.zeros([BK], tl.float32),
                     mask=tl.arange(0, BK) < K)
        return
    T = (eos - bos).to(tl.int32)         # from here on, the length of this sequence
    bos = offset_int(bos, OFF64)
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
        t_i = offset_int(o_i, OFF64)                          # the rows' token index as an offset integer
        off_i = base_k + t_i[:, None] * stride_t + o_k[None, :]
        off_ri = base_r + t_i * H
        b_G = tl.load(G + off_i, mask=m_ik, other=0.)
        b_dq = tl.zeros([BC, BK], dtype=tl.float32)       # pairwise dq (rows side + diagonal)
        b_dbk = tl.zeros([BC, BK], dtype=tl.float32)      # pairwise d(b⊙k)
        b_dk = tl.zeros([BC, BK], dtype=tl.float32)       # pairwise dk, column side + diagonal
        off_mi = base_m + t_i[:, None] * stride_m

        # anchor a = first row of i (clamped to the last valid row), for the rows side and the diagonal
        a = tl.minimum(i_t * BT + i_i * BC, last)
        b_Ga = tl.load(G + base_k + offset_int(a, OFF64) * stride_t + o_k, mask=m_k, other=0.)

        # rows side: s in sub-chunks j < i
        if i_i > 0:
            for i_j in range(0, i_i):
                o_j = i_t * BT + i_j * BC + o_b
                m_j = o_j < T
                m_jk = m_j[:, None] & m_k[None, :]
                t_j = offset_int(o_j, OFF64)
                off_j = base_k + t_j[:, None] * stride_t + o_k[None, :]
                b_kj = _load_qk(k, k_rstd, off_j, m_jk, base_r + t_j * H, m_j, L2NORM)
                b_Gj = tl.load(G + off_j, mask=m_jk, other=0.)
                b_kd = (b_kj * exp_where(b_Ga[None, :] - b_Gj, m_jk)).to(DT)
                off_ij = off_mi + i_j * BC + o_b[None, :]
                b_dMij = tl.load(dM + off_ij, mask=m_i[:, None], other=0.).to(DT)
                b_dTij = tl.load(dT + off_ij, mask=m_i[:, None], other=0.).to(DT)
                b_dq += tl.dot(b_dMij, b_kd, input_precision=PREC)
                b_dbk += tl.dot(b_dTij, b_kd, input_precision=PREC)
            b_ea = exp_where(b_G - b_Ga[None, :], m_ik)        # exp(G_r − G_a) ≤ 1
            b_dq *= b_ea
            b_dbk *= b_ea

        # column side: r in sub-chunks l > i, anchor a' = last valid row of i
        if i_i < NC - 1:
            a2 = tl.minimum(i_t * BT + i_i * BC + BC - 1, last)
            b_Ga2 = tl.load(G + base_k + offset_int(a2, OFF64) * stride_t + o_k, mask=m_k, other=0.)
            for i_l in range(i_i + 1, NC):
                o_l = i_t * BT + i_l * BC + o_b
                m_l = o_l < T
                m_lk = m_l[:, None] & m_k[None, :]
                t_l = offset_int(o_l, OFF64)
                off_l = base_k + t_l[:, None] * stride_t + o_k[None, :]
                off_rl = base_r + t_l * H
                b_ql = _load_qk(q, q_rstd, off_l, m_lk, off_rl, m_l, L2NORM)
                b_kl = _load_qk(k, k_rstd, off_l, m_lk, off_rl, m_l, L2NORM)
                b_bl = gate_value(tl.load(b + off_l, mask=m_lk, other=0.).to(tl.float32), m_lk, SIGMOID, B_SCALE)
                b_Gl = tl.load(G + off_l, mask=m_lk, other=0.)
                b_el = exp_where(b_Gl - b_Ga2[None, :], m_lk)
                # [BC (cols of i), BC (rows of l)] = dM_liᵀ
                off_li = base_m + t_l[None, :] * stride_m + i_i * BC + o_b[:, None]
                b_dMli = tl.load(dM + off_li, mask=m_l[None, :], other=0.).to(DT)
                b_dTli = tl.load(dT + off_li, mask=m_l[None, :], other=0.).to(DT)
                b_dk += tl.dot(b_dMli, (b_ql * b_el).to(DT), input_precision=PREC)
                b_dk += tl.dot(b_dTli, (b_bl * b_kl * b_el).to(DT), input_precision=PREC)
            b_dk *= exp_where(b_Ga2[None, :] - b_G, m_ik)

        # the sub-chunk's own q, k, b: loaded only now, so that the two loops above hold fewer tiles
        b_q = _load_qk(q, q_rstd, off_i, m_ik, off_ri, m_i, L2NORM)
        b_k = _load_qk(k, k_rstd, off_i, m_ik, off_ri, m_i, L2NORM)
        b_b = gate_value(tl.load(b + off_i, mask=m_ik, other=0.).to(tl.float32), m_ik, SIGMOID, B_SCALE)

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
        b_ea = exp_where(-b_up, m_ik)                           # exp(G_t − G_a) ≤ 1
        b_eup = exp_where(tl.minimum(b_up, EXP_MAX), m_ik)     # exp(min(G_a − G_t, EXP_MAX)) ≥ 1
        m_ok = tl.max(b_up, axis=1) <= EXP_MAX                   # [BC] fast-valid (padding counts as valid)
        b_dMrr = tl.load(dM + off_mi + i_i * BC + o_b[:, None], mask=m_i[:, None], other=0.)  # [BC, 1]
        b_dq += b_dMrr * b_k
        b_dk += b_dMrr * b_q
        off_ii = off_mi + i_i * BC + o_b[None, :]
        m_ii = m_i[:, None] & (o_b[:, None] > o_b[None, :])      # r > s
        b_dMii = tl.load(dM + off_ii, mask=m_ii, other=0.)
        b_dTii = tl.load(dT + off_ii, mask=m_ii, other=0.)
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
                t_s = offset_int(s, OFF64)
                off_s = base_k + t_s * stride_t + o_k
                b_ks = tl.load(k + off_s, mask=m_sk, other=0.).to(tl.float32)
                if L2NORM:
                    b_ks *= tl.load(k_rstd + base_r + t_s * H + 0 * o_k, mask=m_sk, other=0.)
                b_Gs = tl.load(G + off_s, mask=m_sk, other=0.)
                off_c = off_mi + i_i * BC + c
                b_mc = tl.load(dM + off_c, mask=m_i[:, None], other=0.)   # [BC, 1] dM[r, s]
                b_tc = tl.load(dT + off_c, mask=m_i[:, None], other=0.)   # [BC, 1] dT[r, s]
                b_dec = exp_where(b_G - b_Gs[None, :], m_ik & (o_i > s)[:, None])
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
        if SIGMOID:
            b_dbt *= b_b * (1. - b_b / B_SCALE)                 # b = s·σ(x): db/dx = b(1 − b/s)
        b_dg = tl.cumsum(b_dG, axis=0, reverse=True) + b_carry[None, :]
        b_carry += tl.sum(b_dG, axis=0)
        if GATE:
            # g = −exp(A_log)·softplus(x), x = g_raw + dt_bias. G counts a g at or below G_FLOOR as the
            # floor, so such a g has no gradient: its dg is only what the reverse sum's cancelling terms
            # leave, which the decay rate would multiply (to ±inf when e^A_log overflows). Above the floor
            # the factor e^A_log·σ(x) is at most e^A_log·softplus(x) = |g| < −G_FLOOR, and is formed
            # before it meets dg.
            b_x = tl.load(g_raw + off_i, mask=m_ik, other=0.).to(tl.float32)
            if HAS_DT_BIAS:
                b_x += b_bias[None, :]
            b_gv = gate(b_x, b_A_log)
            m_g = m_ik & (b_gv > G_FLOOR)
            b_dx = tl.where(m_g, -b_dg * (b_decay_rate * tl.sigmoid(b_x)), 0.)
            b_dAl += tl.sum(tl.where(m_g, b_dg * b_gv, 0.), axis=0)
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
        tl.store(dA_log_part + i_row * H + i_h, tl.sum(b_dAl, axis=0))
        tl.store(ddt_part + (i_row * H + i_h) * K + o_k, b_ddt, mask=m_k)
# --8<-- [end:chunk_bwd_local_pairwise_kernel]
