"""The layer's causal depthwise short convolution and its SiLU in Triton: ``short_conv`` and ``short_conv_step``.

    y_t = SiLU( Σ_{s=0}^{W-1} weight[:, W-1-s] ⊙ x_{t-s} ),   x_{t-s} = the cached state or 0 before the start

Reference: :class:`gdn2.conv.ShortConvolution` (the same taps, packed sequences and conv state). The
layer calls it once for each of q, k and v, each its own contiguous projection; x may also be a column
slice of a wider tensor (any token stride, channels contiguous), read in place, so several inputs with
their channels side by side can share one call with their weights concatenated.

Kernels: the forward (``short_conv_fwd_kernel``) and the final conv state (``short_conv_state_kernel``,
only with ``output_final_state``); the backward (``short_conv_bwd_kernel``: dx and per-program partial
sums of dweight) and the initial state's gradient (``short_conv_bwd_h0_kernel``, only when the initial
state requires grad); decoding (``short_conv_step_kernel``, the state updated in place). All of them
compute in float32 registers; the weight and the initial state are first rounded to x's dtype, as the
reference rounds them (``weight.to(x.dtype)``). The backward recomputes the pre-activation from x, so
nothing but the inputs is kept between forward and backward.

Packed sequences: each token finds its sequence by a binary search of ``cu_seqlens`` in the kernel
(⌈log₂ N⌉ rounds of loads from an array that stays in L1), so there is no per-token table and no host
synchronisation. The offsets are clamped into ``0 <= bos <= eos <= T`` (``jit.seq_bounds``) and every
read is masked to its sequence, so bad offsets never address memory outside the tensors; their values
are not checked here (that needs a host synchronisation): the chunk operator of the same layer call
reports them (:mod:`gdn2.fast.checks`).
"""

import contextlib
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

from gdn2.ops._contract import check_cu_seqlens

from .config import ConvBwdLaunch, ConvLaunch, ConvStateBwdLaunch, ConvStateLaunch, ConvStepLaunch
from .jit import offset_int, seq_bounds
from .utils import empty, needs_int64

__all__ = ["short_conv", "short_conv_step", "conv_fwd", "conv_bwd", "conv_step", "MAX_CONV_SIZE",
           "short_conv_fwd_kernel", "short_conv_state_kernel", "short_conv_bwd_kernel",
           "short_conv_bwd_h0_kernel", "short_conv_step_kernel"]

#: largest number of taps W: the backward holds W taps, W − 1 later gradients and W partial sums of
#: dweight per channel in registers
MAX_CONV_SIZE = 8

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --8<-- [start:helpers]
@triton.jit
def token_sequences(cu_seqlens, o_t, T, N, n_steps, IS_VARLEN: tl.constexpr):
    """Sequence index (int64, one per token) of the flattened token indices ``o_t``.

    Dense: o_t // T. Packed: the last n in [0, N) with cu_seqlens[n] <= o_t (so an empty sequence is
    skipped), by a binary search of ``n_steps`` = ⌈log₂ N⌉ rounds; every index read is in [0, N).
    """
    if IS_VARLEN:
        lo = tl.zeros_like(o_t)
        hi = tl.zeros_like(o_t) + (N - 1)
        for _ in range(n_steps):
            go = lo < hi
            mid = (lo + hi + 1) // 2
            up = tl.load(cu_seqlens + mid).to(tl.int64) <= o_t
            lo = tl.where(go & up, mid, lo)
            hi = tl.where(go & ~up, mid - 1, hi)
        return lo
    else:
        return o_t // T


@triton.jit
def token_rows(i_n, bos, u, stride_b, stride_t, IS_VARLEN: tl.constexpr):
    """Offset in x of flattened token ``u`` of sequence ``i_n`` (which starts at ``bos``): x may be a
    strided view (token stride ``stride_t``, batch stride ``stride_b``), channels contiguous."""
    if IS_VARLEN:
        return u * stride_t
    else:
        return i_n * stride_b + (u - bos) * stride_t


@triton.jit
def rounded(v, x):
    """v rounded to x's dtype, in float32: the reference reads the weight and the state as x's dtype."""
    return v.to(x.dtype.element_ty).to(tl.float32)


@triton.jit
def tap(x, h0, off_x, pos, off_h, m, s, stride_t, W: tl.constexpr, HAS_H0: tl.constexpr):
    """The float32 input x̃_{t−s} of a tile of tokens t at positions ``pos`` [BT] in their sequences:
    x_{t−s} when t − s is inside the sequence, else column W−1+pos−s of the initial state (rounded to
    x's dtype) when there is one, else 0. ``off_x`` [BT, BD]: offsets of x_t; ``off_h`` [BT, BD]: offsets
    of the initial state's row (sequence, channel); ``m`` [BT, BD]: the tokens and channels that exist."""
    b_x = tl.load(x + off_x - s * stride_t, mask=m & (pos >= s)[:, None], other=0.0).to(tl.float32)
    if HAS_H0:
        j = W - 1 + pos - s
        m_h = m & ((pos < s) & (j >= 0))[:, None]
        b_x += rounded(tl.load(h0 + off_h + j[:, None], mask=m_h, other=0.0), x)
    return b_x


@triton.jit
def tap_weight(weight, x, o_d, m_d, c, W: tl.constexpr):
    """Column ``c`` of the [D, W] weight for channels ``o_d``, rounded to x's dtype, in float32."""
    return rounded(tl.load(weight + o_d * W + c, mask=m_d, other=0.0), x)
# --8<-- [end:helpers]


# --8<-- [start:short_conv_fwd_kernel]
@triton.jit(do_not_specialize=["T", "N", "n_tokens", "n_steps"])
def short_conv_fwd_kernel(
    x,                       # [B, T, D] input (token stride stride_t, batch stride stride_b, channels contiguous)
    weight,                  # [D, W] taps, any float dtype (rounded to x's dtype)
    h0,                      # [N, D, W-1] initial conv state, oldest input first (HAS_H0)
    y,                       # out [B, T, D] contiguous, x's dtype
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    stride_b, stride_t, T, N, D,
    n_tokens,                # B·T
    n_steps,                 # ⌈log₂ N⌉: rounds of the packed binary search
    W: tl.constexpr, BT: tl.constexpr, BD: tl.constexpr, CHANNELS_FIRST: tl.constexpr,
    ACTIVATION: tl.constexpr, HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr, OFF64: tl.constexpr,
):
    """y for BT consecutive tokens and BD channels.

    Grid: (B·cdiv(T, BT), cdiv(D, BD)) dense, each program inside one sequence (found by one scalar
    division per program); (cdiv(T, BT), cdiv(D, BD)) packed, where a tile of the one row may span
    sequences and each token finds its own. CHANNELS_FIRST: the same tiles on a grid of one axis,
    the channel tile varying fastest. Tap s of token t reads x_{t−s} only inside t's sequence
    (the initial state or 0 before its start). The W taps are W loads of [BT, BD] tiles shifted by one
    token each, so the program reads BT + W − 1 rows of x from memory and the other loads hit the cache.
    FLOPs: 2·W per output, plus the SiLU. Bytes: x read once and y written once (2·D each per token in
    16-bit), plus the W·D weight.
    """
    if CHANNELS_FIRST:
        n_d = tl.cdiv(D, BD)
        i_t, i_d = tl.program_id(0) // n_d, tl.program_id(0) % n_d
    else:
        i_t, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    if IS_VARLEN:
        o_t = i_t.to(tl.int64) * BT + tl.arange(0, BT)                # token index in the one row
        m_t = o_t < n_tokens
        i_n = token_sequences(cu_seqlens, o_t, T, N, n_steps, IS_VARLEN)
        bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
        pos = o_t - bos                                               # position inside the sequence
    else:
        # a sequence index per token would be a 64-bit division per row (a subroutine of about 80
        # instructions on the GPU) before any load could start
        n_tiles = tl.cdiv(T, BT)
        i_n = (i_t // n_tiles).to(tl.int64) + tl.zeros([BT], tl.int64)    # the program's sequence, per row
        pos = (i_t % n_tiles).to(tl.int64) * BT + tl.arange(0, BT)
        m_t = pos < T
        o_t = i_n * T + pos                                           # token index in the flattened B·T
    m = m_t[:, None] & m_d[None, :]
    off_x = offset_int(token_rows(i_n, o_t - pos, o_t, stride_b, stride_t, IS_VARLEN), OFF64)[:, None] + o_d[None, :]
    off_h = (i_n * D * (W - 1))[:, None] + (o_d * (W - 1))[None, :]

    b_a = tl.zeros([BT, BD], tl.float32)
    for s in tl.static_range(W):                                      # tap s reads x_{t−s} with weight[:, W−1−s]
        b_w = tap_weight(weight, x, o_d, m_d, W - 1 - s, W)
        b_a += b_w[None, :] * tap(x, h0, off_x, pos, off_h, m, s, stride_t, W, HAS_H0)
    if ACTIVATION:
        b_a = b_a * tl.sigmoid(b_a)
    tl.store(y + offset_int(o_t * D, OFF64)[:, None] + o_d[None, :], b_a.to(y.dtype.element_ty), mask=m)
# --8<-- [end:short_conv_fwd_kernel]


# --8<-- [start:short_conv_state_kernel]
@triton.jit(do_not_specialize=["T", "N"])
def short_conv_state_kernel(
    x,                       # [B, T, D] input (token stride stride_t, batch stride stride_b, channels contiguous)
    h0,                      # [N, D, W-1] initial conv state (HAS_H0)
    ht,                      # out [N, D, W-1] final conv state, x's dtype
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    stride_b, stride_t, T, N, D,
    W: tl.constexpr, BR: tl.constexpr, WP: tl.constexpr,
    HAS_H0: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """The final conv state of BR rows (sequence n, channel d) of the N·D: the last W−1 inputs.

    Grid: (cdiv(N·D, BR),). Column j of row (n, d) is input len_n − (W−1) + j of sequence n: a token of
    x when that position is >= 0, else column len_n + j of the initial state (or 0), so a sequence
    shorter than W−1 tokens (empty ones too) keeps the older part of its state. A [BR, WP] tile, WP the
    next power of two >= W−1; the rows are contiguous in ht. No FLOPs; bytes: the state written once,
    and about as much of x (or of the initial state) read.
    """
    i_r = tl.program_id(0)
    o_r = i_r.to(tl.int64) * BR + tl.arange(0, BR)
    o_w = tl.arange(0, WP)
    m_r = o_r < N * D
    i_n, o_d = tl.minimum(o_r // D, N - 1), o_r % D                   # the grid's spare rows read row N − 1
    bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    p = (eos - bos - (W - 1))[:, None] + o_w[None, :]                 # position in the sequence of column j
    m = m_r[:, None] & (o_w < W - 1)[None, :]
    off_x = token_rows(i_n, bos, bos, stride_b, stride_t, IS_VARLEN)[:, None] + p * stride_t + o_d[:, None]
    b_s = tl.load(x + off_x, mask=m & (p >= 0), other=0.0)
    if HAS_H0:
        b_h = tl.load(h0 + o_r[:, None] * (W - 1) + (W - 1) + p, mask=m & (p < 0), other=0.0)
        b_s = tl.where(p >= 0, b_s, b_h.to(x.dtype.element_ty))
    tl.store(ht + o_r[:, None] * (W - 1) + o_w[None, :], b_s.to(ht.dtype.element_ty), mask=m)
# --8<-- [end:short_conv_state_kernel]


# --8<-- [start:short_conv_bwd_kernel]
@triton.jit
def where_all(cond, m):
    """m where the scalar cond holds, else all false (a select: Triton's interpreter turns a block and a
    scalar combined with & into int32, which tl.load refuses as a mask)."""
    return tl.where(cond, m, False)


@triton.jit
def x_tap(x, h0, row, t, s, bos, i_n, o_d, m_d, D, stride_t, W: tl.constexpr, HAS_H0: tl.constexpr):
    """x̃_{t−s} for channels o_d, float32 [BD]: x of token t − s (row offset ``row`` − s·stride_t) when it is
    inside the sequence that starts at bos, else column W−1+(t−bos)−s of sequence i_n's initial state
    (rounded to x's dtype) when there is one, else 0."""
    inside = t - s >= bos
    b_x = tl.load(x + row - s * stride_t + o_d, mask=where_all(inside, m_d), other=0.0).to(tl.float32)
    if HAS_H0:
        j = W - 1 + (t - bos) - s
        b_h = tl.load(h0 + (i_n * D + o_d) * (W - 1) + j, mask=where_all((t - s < bos) & (j >= 0), m_d), other=0.0)
        b_x += rounded(b_h, x)
    return b_x


@triton.jit(do_not_specialize=["T", "N", "n_tokens", "n_steps", "L"])
def short_conv_bwd_kernel(
    x,                       # [B, T, D] input (token stride stride_t, batch stride stride_b, channels contiguous)
    weight,                  # [D, W] taps, any float dtype (rounded to x's dtype)
    h0,                      # [N, D, W-1] initial conv state (HAS_H0)
    dy,                      # [B, T, D] contiguous, gradient of y
    dht,                     # [N, D, W-1] contiguous, gradient of the final conv state (HAS_DHT)
    dx,                      # out [B, T, D] contiguous, x's dtype
    dw_part,                 # out [P, D, W] float32: this program's partial sum of dweight (NEED_DW)
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    stride_b, stride_t, T, N, D,
    n_tokens,                # B·T
    n_steps,                 # ⌈log₂ N⌉: rounds of the packed binary search
    L,                       # tokens per program, consecutive
    W: tl.constexpr, BD: tl.constexpr,
    ACTIVATION: tl.constexpr, HAS_H0: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
    NEED_DW: tl.constexpr,
):
    """dx for L consecutive tokens of the flattened B·T and BD channels, and their part of dweight.

    Grid: (P = cdiv(B·T, L), cdiv(D, BD)). With the pre-activation a_t = Σ_s c_s ⊙ x̃_{t−s} (c_s =
    weight[:, W−1−s]) recomputed from x (never stored) and g_t = dy_t ⊙ SiLU'(a_t): dx_u = Σ_r c_r ⊙ g_{u+r}
    over the tokens u + r of u's sequence, plus the final state's gradient for the last W−1 tokens of each
    sequence; dweight[:, W−1−s] = Σ_t g_t ⊙ x̃_{t−s}. The program walks its tokens one at a time from the
    last down, each step a [BD] row per tensor: it loads the W taps of x̃ (all but the oldest were loaded by
    the step before, so they hit the cache) and dy, computes g once, and keeps the W−1 later g in
    registers (``later``), which is all dx_u needs; the walk starts W−1 tokens past the program's own, whose
    g it computes and does not store. Token-axis work is in registers of one thread: no shuffles, no
    reductions across threads. dweight's W columns are summed in registers over the program's tokens and
    stored once; the host sums the P partials. x, dy and dx each cross memory about once (2·D bytes per
    token each in 16-bit); one sigmoid and about 6·W FLOPs per element.
    """
    i_p, i_d = tl.program_id(0), tl.program_id(1)
    o_d = i_d * BD + tl.arange(0, BD)
    m_d = o_d < D
    t0 = i_p.to(tl.int64) * L
    t1 = tl.minimum(t0 + L, n_tokens)                                # the program owns tokens [t0, t1)
    t_top = tl.minimum(t1 + (W - 1), n_tokens) - 1
    i_n = token_sequences(cu_seqlens, t_top, T, N, n_steps, IS_VARLEN)
    bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    c = ()
    for s in tl.static_range(W):
        c = c + (tap_weight(weight, x, o_d, m_d, W - 1 - s, W),)
    later = ()                                                       # later[r] = g_{t+1+r}
    for _ in tl.static_range(W - 1):
        later = later + (tl.zeros([BD], tl.float32),)
    dw = ()                                                          # dw[s]: Σ_t g_t x̃_{t−s}
    for _ in tl.static_range(W):
        dw = dw + (tl.zeros([BD], tl.float32),)
    for i in range(t_top - t0 + 1):
        t = t_top - i
        while (t < bos) & (i_n > 0):                                  # into an earlier (non-empty) sequence
            i_n -= 1
            bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
        row = token_rows(i_n, bos, t, stride_b, stride_t, IS_VARLEN)
        taps = ()
        b_a = tl.zeros([BD], tl.float32)
        for s in tl.static_range(W):
            b_x = x_tap(x, h0, row, t, s, bos, i_n, o_d, m_d, D, stride_t, W, HAS_H0)
            taps = taps + (b_x,)
            b_a += c[s] * b_x
        b_g = tl.load(dy + t * D + o_d, mask=m_d, other=0.0).to(tl.float32)
        if ACTIVATION:                                                # SiLU'(a) = σ(a)·(1 + a·(1 − σ(a)))
            b_sig = tl.sigmoid(b_a)
            b_g = b_g * b_sig * (1.0 + b_a * (1.0 - b_sig))
        b_dx = c[0] * b_g
        for r in tl.static_range(W - 1):                              # token t + 1 + r reads x_t through tap 1 + r
            b_dx += tl.where(t + 1 + r < eos, c[r + 1] * later[r], 0.0)
        if HAS_DHT:                                                   # the last W−1 inputs are the final state
            j = t - eos + (W - 1)                                     # < W−1 unless bad offsets put t past eos
            b_dht = tl.load(dht + (i_n * D + o_d) * (W - 1) + j, mask=where_all((j >= 0) & (j < W - 1), m_d), other=0.0)
            b_dx += b_dht.to(tl.float32)
        own = t < t1
        tl.store(dx + t * D + o_d, b_dx.to(dx.dtype.element_ty), mask=where_all(own, m_d))
        if NEED_DW:
            b_go = tl.where(own, b_g, 0.0)
            summed = ()
            for s in tl.static_range(W):
                summed = summed + (dw[s] + b_go * taps[s],)
            dw = summed
        if W > 1:
            shifted = (b_g,)
            for r in tl.static_range(W - 2):
                shifted = shifted + (later[r],)
            later = shifted
    if NEED_DW:
        p_dw = dw_part + i_p.to(tl.int64) * D * W + o_d * W
        for s in tl.static_range(W):
            tl.store(p_dw + (W - 1 - s), dw[s], mask=m_d)
# --8<-- [end:short_conv_bwd_kernel]


# --8<-- [start:short_conv_bwd_h0_kernel]
@triton.jit(do_not_specialize=["T", "N"])
def short_conv_bwd_h0_kernel(
    x,                       # [B, T, D] input (token stride stride_t, batch stride stride_b, channels contiguous)
    weight,                  # [D, W] taps, any float dtype (rounded to x's dtype)
    h0,                      # [N, D, W-1] initial conv state
    dy,                      # [B, T, D] contiguous, gradient of y
    dht,                     # [N, D, W-1] contiguous, gradient of the final conv state (HAS_DHT)
    dh0,                     # out [N, D, W-1] contiguous, h0's dtype
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    stride_b, stride_t, T, N, D,
    W: tl.constexpr, BR: tl.constexpr, WP: tl.constexpr,
    ACTIVATION: tl.constexpr, HAS_DHT: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """The initial state's gradient for BR rows (sequence n, channel d) of the N·D.

    Grid: (cdiv(N·D, BR),). Column i of the state is the input at position i − (W−1), read by tap
    s = q − i + W − 1 of the tokens q = 0 … i of the sequence: dh0[:, i] = Σ_{q<=i, q<len}
    weight[:, i−q] ⊙ g_q, with g_q recomputed as in the backward kernel, plus the final state's gradient
    at column i − len when the sequence is shorter than W − 1 (the state passes through). A [BR, WP]
    tile, WP the next power of two >= W−1. FLOPs and bytes: about W² per row for the first W−1 tokens.
    """
    i_r = tl.program_id(0)
    o_r = i_r.to(tl.int64) * BR + tl.arange(0, BR)
    o_w = tl.arange(0, WP)
    m_r = o_r < N * D
    i_n, o_d = tl.minimum(o_r // D, N - 1), o_r % D                   # the grid's spare rows read row N − 1
    bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
    off_x = token_rows(i_n, bos, bos, stride_b, stride_t, IS_VARLEN) + o_d    # x at position 0
    off_h = o_r * (W - 1)
    b_dh = tl.zeros([BR, WP], tl.float32)
    for q in tl.static_range(W - 1):                                  # the first W−1 tokens read the state
        m_q = m_r & (q < eos - bos)
        b_a = tl.zeros([BR], tl.float32)
        for s in tl.static_range(W):
            b_w = tap_weight(weight, x, o_d, m_r, W - 1 - s, W)
            if q >= s:
                b_a += b_w * tl.load(x + off_x + (q - s) * stride_t, mask=m_q, other=0.0).to(tl.float32)
            else:
                b_a += b_w * rounded(tl.load(h0 + off_h + (W - 1 + q - s), mask=m_q, other=0.0), x)
        b_g = tl.load(dy + (bos + q) * D + o_d, mask=m_q, other=0.0).to(tl.float32)
        if ACTIVATION:
            b_sig = tl.sigmoid(b_a)
            b_g = b_g * b_sig * (1.0 + b_a * (1.0 - b_sig))
        m_w = m_r[:, None] & ((o_w >= q) & (o_w < W - 1))[None, :]
        b_ws = rounded(tl.load(weight + o_d[:, None] * W + (o_w - q)[None, :], mask=m_w, other=0.0), x)
        b_dh += b_ws * b_g[:, None]                                   # column i gets weight[:, i−q]·g_q
    m = m_r[:, None] & (o_w < W - 1)[None, :]
    if HAS_DHT:
        j = o_w[None, :] - (eos - bos)[:, None]
        b_dh += tl.load(dht + off_h[:, None] + j, mask=m & (j >= 0), other=0.0).to(tl.float32)
    tl.store(dh0 + off_h[:, None] + o_w[None, :], b_dh.to(dh0.dtype.element_ty), mask=m)
# --8<-- [end:short_conv_bwd_h0_kernel]


# --8<-- [start:short_conv_step_kernel]
@triton.jit(do_not_specialize=["N"])
def short_conv_step_kernel(
    x,                       # [N, D] one token per sequence (sequence stride stride_n, channels contiguous)
    weight,                  # [D, W] taps, any float dtype (rounded to x's dtype)
    state,                   # [N, D, W-1] contiguous conv state, updated in place
    y,                       # out [N, D] contiguous, x's dtype
    stride_n, N, D,
    W: tl.constexpr, BR: tl.constexpr, WP: tl.constexpr, ACTIVATION: tl.constexpr,
):
    """One decoding step for BR channels of one sequence.

    Grid: (N, cdiv(D, BR)): a program's sequence is its grid index, not a 64-bit division per row.
    y = SiLU(weight[:, W−1] ⊙ x + Σ_{s>=1} weight[:, W−1−s] ⊙ state[:, W−1−s]), summed in the forward
    kernel's order, so prefill then steps give the forward's y bit for bit. The state is written back
    shifted by one with x appended, as a [BR, WP] tile (WP the next power of two >= W−1). Every program
    owns its rows, and a barrier separates the loads of the old state from the stores of the new one,
    which other threads of the program may hold. FLOPs: 2·W per row; bytes: the state read and written
    once, x read and y written once.
    """
    i_n, i_d = tl.program_id(0).to(tl.int64), tl.program_id(1)
    o_d = i_d * BR + tl.arange(0, BR)
    o_r = i_n * D + o_d                              # row (sequence, channel) of the state
    o_w = tl.arange(0, WP)
    m_r = o_d < D
    m = m_r[:, None] & (o_w < W - 1)[None, :]
    off_s = o_r[:, None] * (W - 1) + o_w[None, :]
    b_x = tl.load(x + i_n * stride_n + o_d, mask=m_r, other=0.0)
    b_a = tl.zeros([BR], tl.float32)
    for s in tl.static_range(W):                     # the taps in the forward kernel's order, for the same sums
        if s == 0:
            b_v = b_x.to(tl.float32)
        else:
            b_v = rounded(tl.load(state + o_r * (W - 1) + (W - 1 - s), mask=m_r, other=0.0), x)
        b_a += tap_weight(weight, x, o_d, m_r, W - 1 - s, W) * b_v
    b_next = tl.load(state + off_s + 1, mask=m & (o_w < W - 2)[None, :], other=0.0)  # column j+1 moves to j
    if ACTIVATION:
        b_a = b_a * tl.sigmoid(b_a)
    tl.store(y + o_r, b_a.to(y.dtype.element_ty), mask=m_r)
    b_next = tl.where(o_w[None, :] == W - 2, b_x[:, None].to(b_next.dtype), b_next)
    tl.debug_barrier()
    tl.store(state + off_s, b_next, mask=m)
# --8<-- [end:short_conv_step_kernel]


def _pow2_at_least(n: int, lo: int = 1) -> int:
    return max(lo, triton.next_power_of_2(max(n, 1)))


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 for the interpreter's CPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def fwd_launch(D: int, T: int | None = None) -> ConvLaunch:
    """The forward's launch: 8 tokens by up to 128 channels (fewer for narrow D), two warps; for dense
    input of T < 8 tokens per sequence (a program stays inside one), the power of two >= T. Small
    programs: each holds a few registers for a short time, so many are in flight on every SM, and the
    kernel is bound by memory, which wants as many loads in flight as the SMs can hold
    (``benchmarks/profile_kernels.py --variants``: the kernel inside the layer under other launches)."""
    BT = 8 if T is None else min(8, _pow2_at_least(T, 1))
    return ConvLaunch(BT=BT, BD=min(128, _pow2_at_least(D, 16)), num_warps=2)


def bwd_launch(n_tokens: int, D: int, W: int, device: torch.device, BD: int = 128) -> ConvBwdLaunch:
    """The backward's launch: one warp for a row of up to 128 channels (four per thread), and enough
    consecutive tokens per program (at least 4·W, so that the W−1 tokens walked past its own stay a small
    share) that the grid is about 24 programs per SM: one wave of one-warp programs at this kernel's
    registers, the most warps there are to hide each step's load latency, and a few float32 partial sums
    of dweight ([P, D, W]) per SM rather than one per token."""
    BD = min(BD, _pow2_at_least(D, 16))
    programs_t = max(1, triton.cdiv(24 * _sm_count(device), triton.cdiv(D, BD)))
    return ConvBwdLaunch(BD=BD, tokens=max(4 * W, triton.cdiv(n_tokens, programs_t)), num_warps=1)


def _n_steps(N: int) -> int:
    """Rounds of the packed binary search over N sequences: ⌈log₂ N⌉."""
    return max(N - 1, 0).bit_length()


def _device(x: Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


def _rows(x: Tensor) -> Tensor:
    """x itself when its channels are contiguous (any token stride); else one contiguous copy."""
    return x if x.shape[-1] <= 1 or x.stride(-1) == 1 else x.contiguous()


def conv_fwd(x: Tensor, weight: Tensor, cu_seqlens: Tensor | None, initial_state: Tensor | None,
             output_final_state: bool, activation: bool, launch: ConvLaunch | None = None,
             state_launch: ConvStateLaunch | None = None) -> tuple[Tensor, Tensor | None]:
    """The forward driver (arguments already checked): (y [B, T, D], final state [N, D, W−1] or None).

    Cost: one launch, plus one for the final state; no host synchronisation.
    """
    x = _rows(x)
    B, T, D = x.shape
    W = weight.shape[1]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    weight, h0 = weight.contiguous(), None if initial_state is None else initial_state.contiguous()
    y = empty((B, T, D), x.dtype, x.device)
    ht = empty((N, D, W - 1), x.dtype, x.device) if output_final_state else None
    tile = launch or fwd_launch(D, None if cu_seqlens is not None else T)
    with _device(x):
        if B * T and D:
            tiles, n_d = triton.cdiv(T, tile.BT) * (1 if cu_seqlens is not None else B), triton.cdiv(D, tile.BD)
            short_conv_fwd_kernel[(tiles * n_d,) if tile.CHANNELS_FIRST else (tiles, n_d)](
                x, weight, h0, y, cu_seqlens, x.stride(0), x.stride(1), T, N, D, B * T, _n_steps(N),
                W=W, BT=tile.BT, BD=tile.BD, CHANNELS_FIRST=tile.CHANNELS_FIRST, ACTIVATION=bool(activation),
                HAS_H0=h0 is not None,
                IS_VARLEN=cu_seqlens is not None, OFF64=needs_int64(x, y), num_warps=tile.num_warps,
                num_stages=tile.num_stages)
        if ht is not None and ht.numel():
            rows = state_launch or ConvStateLaunch()
            short_conv_state_kernel[(triton.cdiv(N * D, rows.BR),)](
                x, h0, ht, cu_seqlens, x.stride(0), x.stride(1), T, N, D,
                W=W, BR=rows.BR, WP=_pow2_at_least(W - 1), HAS_H0=h0 is not None,
                IS_VARLEN=cu_seqlens is not None, num_warps=rows.num_warps, num_stages=rows.num_stages)
    return y, ht


def conv_bwd(dy: Tensor, dht: Tensor | None, x: Tensor, weight: Tensor, cu_seqlens: Tensor | None,
             initial_state: Tensor | None, activation: bool, need_dweight: bool = True, need_dh0: bool = False,
             launch: ConvBwdLaunch | None = None, h0_launch: ConvStateBwdLaunch | None = None,
             ) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The backward driver: (dx [B, T, D] in x's dtype, dweight [D, W] in weight's dtype or None,
    dh0 [N, D, W−1] in the initial state's dtype or None). ``dht`` is the final state's gradient or None.

    Cost: one launch, plus one for dh0; a [P, D, W] float32 buffer of partial sums of dweight and one
    sum over P (about 24 programs per SM); no host synchronisation.
    """
    x = _rows(x)
    B, T, D = x.shape
    W = weight.shape[1]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    weight, h0 = weight.contiguous(), None if initial_state is None else initial_state.contiguous()
    dy = dy.contiguous()
    if dht is not None:
        dht = dht.contiguous()
    tile = launch or bwd_launch(B * T, D, W, x.device)
    L = tile.tokens or bwd_launch(B * T, D, W, x.device, tile.BD).tokens
    P = triton.cdiv(B * T, L)
    dx = empty((B, T, D), x.dtype, x.device)
    dw_part = empty((P, D, W), torch.float32, x.device) if need_dweight else None
    dh0 = empty(h0.shape, h0.dtype, x.device) if need_dh0 and h0 is not None else None
    with _device(x):
        if B * T and D:
            short_conv_bwd_kernel[(P, triton.cdiv(D, tile.BD))](
                x, weight, h0, dy, dht, dx, dw_part, cu_seqlens, x.stride(0), x.stride(1), T, N, D, B * T,
                _n_steps(N), L, W=W, BD=tile.BD, ACTIVATION=bool(activation), HAS_H0=h0 is not None,
                HAS_DHT=dht is not None, IS_VARLEN=cu_seqlens is not None, NEED_DW=bool(need_dweight),
                num_warps=tile.num_warps, num_stages=tile.num_stages)
        if dh0 is not None and dh0.numel():
            rows = h0_launch or ConvStateBwdLaunch()
            short_conv_bwd_h0_kernel[(triton.cdiv(N * D, rows.BR),)](
                x, weight, h0, dy, dht, dh0, cu_seqlens, x.stride(0), x.stride(1), T, N, D,
                W=W, BR=rows.BR, WP=_pow2_at_least(W - 1), ACTIVATION=bool(activation),
                HAS_DHT=dht is not None, IS_VARLEN=cu_seqlens is not None,
                num_warps=rows.num_warps, num_stages=rows.num_stages)
    dweight = None
    if need_dweight:
        dweight = dw_part.sum(0).to(weight.dtype) if P else torch.zeros_like(weight)
    return dx, dweight, dh0


def conv_step(x: Tensor, weight: Tensor, state: Tensor, activation: bool,
              launch: ConvStepLaunch | None = None) -> Tensor:
    """The decoding driver (arguments already checked): y [N, 1, D]; ``state`` updated in place.

    Cost: one launch; no allocation but y, no host synchronisation (capturable in a CUDA graph).
    """
    x2 = x.reshape(x.shape[0], x.shape[-1]) if x.dim() == 3 else x        # a view: one token per sequence
    x2 = _rows(x2)
    N, D = x2.shape
    W = weight.shape[1]
    weight = weight.contiguous()
    y = empty((N, 1, D), x.dtype, x.device)
    rows = launch or ConvStepLaunch()
    if N * D:
        with _device(x):
            short_conv_step_kernel[(N, triton.cdiv(D, rows.BR))](
                x2, weight, state, y, x2.stride(0), N, D, W=W, BR=rows.BR, WP=_pow2_at_least(W - 1),
                ACTIVATION=bool(activation), num_warps=rows.num_warps, num_stages=rows.num_stages)
    return y


# ----------------------------------------------------------------------------------------------- custom ops


@torch.library.custom_op("gdn2::short_conv_fwd", mutates_args=())
def short_conv_fwd_op(x: Tensor, weight: Tensor, cu_seqlens: Tensor | None, initial_state: Tensor | None,
                      output_final_state: bool, activation: bool) -> tuple[Tensor, Tensor]:
    """(y, final state or an empty [0] tensor)."""
    y, ht = conv_fwd(x, weight, cu_seqlens, initial_state, output_final_state, activation)
    return y, ht if ht is not None else x.new_empty(0)


@short_conv_fwd_op.register_fake
def _(x, weight, cu_seqlens, initial_state, output_final_state, activation):
    B, T, D = x.shape
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    return x.new_empty(B, T, D), x.new_empty(N, D, weight.shape[1] - 1) if output_final_state else x.new_empty(0)


@torch.library.custom_op("gdn2::short_conv_bwd", mutates_args=())
def short_conv_bwd_op(dy: Tensor, dht: Tensor | None, x: Tensor, weight: Tensor, cu_seqlens: Tensor | None,
                      initial_state: Tensor | None, activation: bool, need_dweight: bool,
                      need_dh0: bool) -> tuple[Tensor, Tensor, Tensor]:
    """(dx, dweight or an empty [0] tensor, dh0 or an empty [0] tensor)."""
    dx, dw, dh0 = conv_bwd(dy, dht, x, weight, cu_seqlens, initial_state, activation, need_dweight, need_dh0)
    return dx, dw if dw is not None else weight.new_empty(0), dh0 if dh0 is not None else x.new_empty(0)


@short_conv_bwd_op.register_fake
def _(dy, dht, x, weight, cu_seqlens, initial_state, activation, need_dweight, need_dh0):
    dw = torch.empty_like(weight, memory_format=torch.contiguous_format) if need_dweight else weight.new_empty(0)
    dh0 = (torch.empty_like(initial_state, memory_format=torch.contiguous_format)
           if need_dh0 and initial_state is not None else x.new_empty(0))
    return x.new_empty(x.shape), dw, dh0


def _setup_context(ctx, inputs, output):
    x, weight, cu_seqlens, initial_state, output_final_state, activation = inputs
    ctx.save_for_backward(x, weight, cu_seqlens, initial_state)
    ctx.output_final_state, ctx.activation = output_final_state, activation


def _backward(ctx, dy, dht):
    x, weight, cu_seqlens, initial_state = ctx.saved_tensors
    need_dw, need_dh0 = ctx.needs_input_grad[1], initial_state is not None and ctx.needs_input_grad[3]
    dx, dw, dh0 = torch.ops.gdn2.short_conv_bwd(
        dy, dht if ctx.output_final_state else None, x, weight, cu_seqlens, initial_state, ctx.activation,
        need_dw, need_dh0)
    return dx, dw if need_dw else None, None, dh0 if need_dh0 else None, None, None


short_conv_fwd_op.register_autograd(_backward, setup_context=_setup_context)


@torch.library.custom_op("gdn2::short_conv_step", mutates_args=("state",))
def short_conv_step_op(x: Tensor, weight: Tensor, state: Tensor, activation: bool) -> Tensor:
    """y [N, 1, D]; ``state`` shifted by one token, x appended."""
    return conv_step(x, weight, state, activation)


@short_conv_step_op.register_fake
def _(x, weight, state, activation):
    return x.new_empty(x.shape[0], 1, x.shape[-1])


# ------------------------------------------------------------------------------------------- public API


def _tensor(name: str, t, optional: bool = False) -> None:
    if t is None and optional:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor{' or None' if optional else ''}, got {type(t).__name__}")


def _flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def _check_x(name: str, x: Tensor) -> None:
    if x.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {x.dtype}")
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton short convolution needs CUDA tensors, got {name} on {x.device} "
                         "(or set TRITON_INTERPRET=1 before importing gdn2.fast to interpret on the CPU)")


def _check_weight(weight: Tensor, D: int, device: torch.device) -> int:
    if weight.dim() != 2 or weight.shape[0] != D:
        raise ValueError(f"weight must be [D, W] = [{D}, W], got shape {tuple(weight.shape)} "
                         "(a Conv1d weight [D, 1, W] is weight[:, 0])")
    W = weight.shape[1]
    if not 1 <= W <= MAX_CONV_SIZE:
        raise ValueError(f"weight's W (conv_size) must be in 1..{MAX_CONV_SIZE}, got {W}")
    if not weight.is_floating_point():
        raise TypeError(f"weight must be a floating-point tensor, got {weight.dtype}")
    if weight.device != device:
        raise ValueError(f"weight must be on x's device {device}, got {weight.device}")
    return W


def _check_state(name: str, state: Tensor, shape: tuple[int, ...], device: torch.device) -> None:
    if tuple(state.shape) != shape:
        raise ValueError(f"{name} must be [N, D, W-1] = {list(shape)}, got shape {tuple(state.shape)}")
    if state.dtype not in _DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16 or float32, got {state.dtype}")
    if state.device != device:
        raise ValueError(f"{name} must be on x's device {device}, got {state.device}")


def short_conv(
    x: Tensor,
    weight: Tensor,
    cu_seqlens: Tensor | None = None,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    activation: bool = True,
) -> tuple[Tensor, Tensor | None]:
    """Causal depthwise short convolution with SiLU: the forward of :class:`gdn2.conv.ShortConvolution`.

    Args:
        x: [B, T, D] float16, bfloat16 or float32; the channels contiguous, the token stride free (a
            column slice ``proj[..., :D]`` is read in place; other layouts are copied once).
        weight: [D, W], W in 1..8, any float dtype; rounded to x's dtype as the reference does.
        cu_seqlens: [N + 1] int32/int64 packed offsets on x's device (B must be 1). Their values are not
            checked (no host synchronisation): they are clamped, so bad ones never address memory
            outside the tensors.
        initial_state: [N, D, W−1], the last W−1 inputs of each sequence, oldest first (or None: zeros).
        output_final_state: also return the last W−1 inputs of each sequence.
        activation: apply the SiLU (else return the convolution itself).

    Returns:
        (y [B, T, D] contiguous in x's dtype, final state [N, D, W−1] in x's dtype or None).

    Differentiable in x, weight and initial_state (and through the final state). Cost: one launch
    forward (two with the final state), one backward (two when the initial state needs its gradient).
    """
    _tensor("x", x)
    if x.dim() != 3:
        raise ValueError(f"x must be [B, T, D], got shape {tuple(x.shape)}")
    _check_x("x", x)
    B, T, D = x.shape
    _tensor("weight", weight)
    W = _check_weight(weight, D, x.device)
    N = B
    if cu_seqlens is not None:
        N = check_cu_seqlens(cu_seqlens, T, check_values=False)
        if B != 1:
            raise ValueError(f"packed sequences (cu_seqlens) need x as one row, B = 1, got B = {B}")
        if cu_seqlens.device != x.device:
            raise ValueError(f"cu_seqlens must be on x's device {x.device}, got {cu_seqlens.device}")
    _tensor("initial_state", initial_state, optional=True)
    if initial_state is not None:
        _check_state("initial_state", initial_state, (N, D, W - 1), x.device)
    output_final_state, activation = _flag("output_final_state", output_final_state), _flag("activation", activation)
    y, ht = torch.ops.gdn2.short_conv_fwd(x, weight, cu_seqlens, initial_state, output_final_state, activation)
    return y, ht if output_final_state else None


def short_conv_step(x: Tensor, weight: Tensor, state: Tensor, activation: bool = True) -> Tensor:
    """One decoding step of :func:`short_conv`: one token per sequence, the conv state updated in place.

    Args:
        x: [N, 1, D] or [N, D], float16, bfloat16 or float32, channels contiguous.
        weight: [D, W], W in 1..8, any float dtype.
        state: [N, D, W−1] contiguous, float16, bfloat16 or float32: the last W−1 inputs of each
            sequence, oldest first. It is shifted by one token and x is appended, in place.
        activation: apply the SiLU.

    Returns:
        y [N, 1, D] in x's dtype. Forward only. Capturable in a CUDA graph: no host synchronisation and no
        allocation but y.
    """
    _tensor("x", x)
    if x.dim() not in (2, 3) or (x.dim() == 3 and x.shape[1] != 1):
        raise ValueError(f"x must be [N, 1, D] or [N, D] (one token per sequence), got shape {tuple(x.shape)}")
    _check_x("x", x)
    N, D = x.shape[0], x.shape[-1]
    _tensor("weight", weight)
    W = _check_weight(weight, D, x.device)
    _tensor("state", state)
    _check_state("state", state, (N, D, W - 1), x.device)
    if not state.is_contiguous():
        raise ValueError("state must be contiguous: it is updated in place")
    activation = _flag("activation", activation)
    return torch.ops.gdn2.short_conv_step(x, weight, state, activation)
