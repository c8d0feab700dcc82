"""Triton helpers shared by the kernels: where a program's tokens are, the gate, guarded exponentials,
and the flags a kernel raises on bad input values.

Every kernel of the backend finds its tokens through :func:`seq_bounds` (sequential kernels: one
sequence per program) or :func:`chunk_bounds` (chunk-parallel kernels: one chunk per program). Both
clamp the packed offsets into ``0 <= bos <= eos <= T``, so a wrong ``cu_seqlens`` can never address
memory outside the tensors; the kernel that reads each sequence's offsets first
(:func:`flag_bad_offsets`) reports them, and the host raises (:mod:`gdn2.fast.checks`).
"""

import triton
import triton.language as tl

__all__ = ["EXP_MAX", "G_FLOOR", "FLAG_BITS", "seq_bounds", "chunk_bounds", "offset_int", "softplus", "gate",
           "load_gate", "apply_gate", "gate_value", "exp_where", "nonfinite", "not_log_decay", "flag_bad_offsets",
           "raise_flags"]

#: largest exponent of a growing factor exp(G_a − G_s) in the anchored products of diagonal 16×16 blocks:
#: e^60 ≈ 1e26 leaves float32 (and tf32/bf16, same exponent range) room for a [16, K] product. A token
#: past it takes the exact element-by-element path. One value for the forward and the backward.
EXP_MAX = 60.0

#: log-decays below this count as it in the cumulative decay G that the backward takes differences of:
#: e^-128 is exactly 0 in float32, as e^g is for every g below it, so a full reset (g = −inf, which the
#: contract allows) leaves every G_r − G_s finite, where −inf − (−inf) would be NaN. Near 0 so that G
#: keeps its precision after a reset (the reference's floor, in float64, can lie much lower).
G_FLOOR: tl.constexpr = tl.constexpr(-128.0)

#: bit of the flag word per input that can carry a bad value (the host's messages follow this order)
FLAG_BITS = ("q", "k", "v", "g", "b", "w", "initial_state", "cu_seqlens", "chunk_indices")
F_Q: tl.constexpr = tl.constexpr(1)
F_K: tl.constexpr = tl.constexpr(2)
F_V: tl.constexpr = tl.constexpr(4)
F_G: tl.constexpr = tl.constexpr(8)
F_B: tl.constexpr = tl.constexpr(16)
F_W: tl.constexpr = tl.constexpr(32)
F_H0: tl.constexpr = tl.constexpr(64)
F_CU: tl.constexpr = tl.constexpr(128)


@triton.jit
def seq_bounds(cu_seqlens, i_n, T, IS_VARLEN: tl.constexpr):
    """(bos, eos): int64 token offsets of sequence i_n in the flattened [B·T] token axis.

    Packed input (one row of T tokens): read from cu_seqlens and clamped into 0 <= bos <= eos <= T.
    """
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        bos = tl.minimum(tl.maximum(bos, 0), T)
        eos = tl.minimum(tl.maximum(eos, bos), T)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T
    return bos, eos


@triton.jit
def chunk_bounds(cu_seqlens, chunk_indices, i_c, i_b, T, N, BT: tl.constexpr, IS_VARLEN: tl.constexpr):
    """(bos, eos, i_t, slot, work) of the chunk of program i_c (dense: chunk i_c of sequence i_b).

    ``slot`` numbers the chunk among all chunks of the call (the index of its saved state and γ_C):
    dense, i_b·cdiv(T, BT) + i_t; packed, bos // BT + i_n + i_t, which stays below T // BT + N
    (the size of those buffers). ``work`` is false for the grid's spare programs and for any chunk
    that does not start inside its sequence (possible only with invalid packed offsets).
    """
    if IS_VARLEN:
        i_n = tl.load(chunk_indices + i_c * 2)
        i_t = tl.load(chunk_indices + i_c * 2 + 1)
        ok = (i_n >= 0) & (i_n < N) & (i_t >= 0)
        i_n = tl.where(ok, i_n, 0)
        i_t = tl.where(ok, i_t, 0)
        bos, eos = seq_bounds(cu_seqlens, i_n, T, True)
        slot = bos // BT + i_n + i_t
        work = ok & (bos + i_t * BT < eos)
    else:
        i_t = i_c
        bos = i_b.to(tl.int64) * T
        eos = bos + T
        slot = i_b * tl.cdiv(T, BT) + i_t
        work = i_t >= 0
    return bos, eos, i_t, slot, work


@triton.jit
def offset_int(x, OFF64: tl.constexpr):
    """x in the integer type of a kernel's element offsets: int64 when the host found an offset of the
    call that needs it (``OFF64``, :func:`gdn2.fast.utils.needs_int64`), else int32, whose [rows, cols]
    offset tiles hold one register per element instead of two."""
    if OFF64:
        return x.to(tl.int64)
    else:
        return x.to(tl.int32)


@triton.jit
def exp_reduced(x):
    """e^x in float32 to a few roundings wherever e^x is a normal float32 (x >= −87), as 2^n·e^r with
    n = round(x·log₂e) and r = x − n·ln 2 (ln 2 in two parts, the first exact in any product with n), so
    |r| <= ln(2)/2. The GPU's exp scales x by log₂e first; that product's rounding alone is a relative
    error of |x|·2^-24 in e^x."""
    n = tl.floor(x * 1.4426950408889634 + 0.5)
    r = (x - n * 0.693145751953125) - n * 1.4286068202862268e-06
    return tl.exp(r) * tl.exp2(n)


@triton.jit
def softplus(x):
    """log(1 + e^x) in float32 to about one rounding for every x: x itself above 20; below, log1p(y),
    y = e^x, as log(u)·y/(u − 1) with u = 1 + y rounded (y itself where u rounds to 1). log(1 + y)
    alone keeps only the absolute accuracy of 1 + y, a relative error up to e^-x·2^-24, which reaches
    the gates of slowly decaying channels (dt_bias near log(dt) for small dt) and is total below −17."""
    y = exp_reduced(tl.minimum(x, 20.0))
    u = 1.0 + y
    return tl.where(x > 20.0, x, tl.where(u == 1.0, y, tl.log(u) * (y / tl.where(u == 1.0, 1.0, u - 1.0))))


@triton.jit
def gate(x, A_log_h):
    """The in-op gate in float32: g = −exp(A_log)·softplus(x), x = g_raw + dt_bias."""
    return -tl.exp(A_log_h) * softplus(x)


@triton.jit
def load_gate(g, off, mask, i_h, o_k, m_k, A_log, dt_bias, K: tl.constexpr,
              USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr):
    """A float32 tile of the log-decay g at offsets ``off``; with USE_GATE, the gate of the raw input
    (dt_bias of key channels ``o_k``). Masked entries are 0 (no decay)."""
    return apply_gate(tl.load(g + off, mask=mask, other=0.0), mask, i_h, o_k, m_k, A_log, dt_bias, K,
                      USE_GATE, HAS_DT_BIAS)


@triton.jit
def apply_gate(b_g, mask, i_h, o_k, m_k, A_log, dt_bias, K: tl.constexpr,
               USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr):
    """:func:`load_gate` of a tile already loaded (masked entries 0), in float32."""
    b_g = b_g.to(tl.float32)
    if USE_GATE:
        if HAS_DT_BIAS:
            b_g += tl.load(dt_bias + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)
        b_g = tl.where(mask, gate(b_g, tl.load(A_log + i_h).to(tl.float32)), 0.0)
    return b_g


@triton.jit
def gate_value(x, m, SIGMOID: tl.constexpr, SCALE: tl.constexpr):
    """An erase or write gate from its loaded tile: with SIGMOID the tile holds logits and the gate is
    SCALE·σ(x) (SCALE 2 lets the erase gate reach negative eigenvalues); masked entries are 0."""
    if SIGMOID:
        x = tl.where(m, SCALE * tl.sigmoid(x), 0.0)
    return x


@triton.jit
def exp_where(x, m):
    """exp(x) where m holds, else 0; masked lanes never reach the exponential (no inf on padding)."""
    return tl.where(m, tl.exp(tl.where(m, x, 0.0)), 0.0)


@triton.jit
def nonfinite(x):
    """1 if the tile holds a NaN or an infinity, else 0: x·0 is 0 for every finite x and NaN otherwise."""
    return (tl.sum(x * 0.0) != 0.0).to(tl.int32)


@triton.jit
def not_log_decay(g):
    """1 if the tile of log-decays holds a value above 0 or a NaN (−inf, a full reset, is allowed), else 0."""
    return (tl.sum(tl.where(g <= 0.0, 0.0, 1.0)) != 0.0).to(tl.int32)


@triton.jit
def flag_bad_offsets(cu_seqlens, i_n, N, T):
    """F_CU if the raw offsets of sequence i_n break 0 = cu[0] <= cu[i_n] <= cu[i_n + 1] <= cu[N] = T."""
    bos = tl.load(cu_seqlens + i_n).to(tl.int64)
    eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    bad = (bos > eos) | (bos < 0) | (eos > T) | ((i_n == 0) & (bos != 0)) | ((i_n == N - 1) & (eos != T))
    return tl.where(bad, F_CU, 0)


@triton.jit
def raise_flags(flags, bits):
    """OR ``bits`` into the call's flag word (one atomic, only when a bit is set)."""
    if bits != 0:
        tl.atomic_or(flags, bits)
