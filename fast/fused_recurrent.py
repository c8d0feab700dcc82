"""The Triton decoding operator ``fused_recurrent_gdn2``: SPEC §2 token by token, one launch per call.

Each program keeps one [K, BV] block of a value head's state in registers for all T tokens of
its sequence, so the state is read once and written once per call however many tokens it holds
(decoding, T = 1, or a short multi-token prefill).

At batch 1 the state is 1 MiB and the kernel takes a few µs, so a decoding step costs what the host
does around the launch. A call of a configuration seen before (same shapes, dtypes, devices and
flags) therefore takes a short path: its check is one dictionary lookup (the key holds every fact
that SPEC §5's check reads, and a key is stored only after a call with it passed the full check),
its two outputs are fresh allocations, and the compiled kernel is launched directly with raw pointers,
which skips the JIT's argument binding and the launcher's per-tensor pointer queries. Any other call
gets the full check (SPEC §5's named errors), contiguous copies where needed and a launch through
the JIT, which compiles on first use.
"""

import contextlib
import os
from collections.abc import Callable
from typing import NamedTuple, no_type_check

import torch
import triton
import triton.language as tl
from jaxtyping import Float, Integer
from torch import Tensor

from gdn2.ops._contract import check_inputs

from . import utils
from .chunk import check_triton_inputs, contiguous
from .chunk_fwd import _gate

__all__ = ["fused_recurrent_gdn2", "fused_recurrent_fwd_kernel"]


# --8<-- [start:fused_recurrent_fwd_kernel]
@triton.jit(do_not_specialize=["T", "n_tiles"])
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def fused_recurrent_fwd_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]
    A_log, dt_bias,          # in-kernel gate: A_log [H], dt_bias [H*K] (read only with USE_GATE)
    h0,                      # initial state [N, HV, K, V] float32 (HAS_H0)
    o,                       # output [B, T, HV, V] in q's dtype
    ht,                      # final state [N, HV, K, V] float32 (STORE_FINAL)
    cu_seqlens,              # [N+1] sequence offsets (IS_VARLEN)
    scale, T,
    n_tiles,                 # cdiv(V, BV)·N·HV state blocks, taken in turn by the grid's programs
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, L2NORM: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr,
    STREAM_STATE: tl.constexpr,  # the state is read and written once: load it past L1, store it streaming
    PREFETCH: tl.constexpr,      # load the program's next state block before updating this one
    STAGES: tl.constexpr,        # software-pipelining depth of the loop over blocks
):
    """All tokens of one sequence for one value head and one block of BV value columns, per state block.

    Grid: (programs,); program p takes the state blocks p, p + programs, ... of the cdiv(V, BV)·N·HV,
    block i being value columns (i % cdiv(V, BV))·BV.. of pair (sequence, value head) i // cdiv(V, BV);
    with one program per block (small batches) each takes one, with 8 per SM (many pairs, see
    ``_launch_config``) each loops. A block's state S [BK, BV] (float32) is
    loaded once, then per token the key-side rows q, k, g, b [K] of key head i_hv // (HV/H) and v, w [BV];
    S never leaves registers until the final store. Per token: S̄ = Diag(α) S, r = S̄ᵀ(b⊙k),
    S = S̄ + k (w⊙v − r)ᵀ, o = Sᵀ(scale·q): 8·K·BV FLOPs. Bytes: 8·K·V (state in and out, float32)
    per sequence and value head, plus per token 2·(4K + 3V) for 16-bit q, k, b, v, w, o (g float32).
    """
    NV: tl.constexpr = (V + BV - 1) // BV
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    first, step = tl.program_id(0), tl.num_programs(0)
    if HAS_H0 and PREFETCH:
        p_next, m_next = _state_block(first, n_tiles, K, V, BK, BV)
        b_next = tl.load(h0 + p_next, mask=m_next, other=0.0).to(tl.float32)
    for i in tl.range(0, tl.cdiv(n_tiles - first, step), num_stages=STAGES):
        tile = first + i * step
        i_v, i_nh = tile % NV, tile // NV
        i_n, i_hv = i_nh // HV, i_nh % HV
        i_h = i_hv // (HV // H)
        if IS_VARLEN:
            bos = tl.load(cu_seqlens + i_n).to(tl.int64)
            eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
        else:
            bos = i_n.to(tl.int64) * T
            eos = bos + T
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        p_S, m_kv = _state_block(tile, n_tiles, K, V, BK, BV)

        b_S = tl.zeros([BK, BV], tl.float32)
        if HAS_H0:
            if PREFETCH:
                b_S += b_next
                p_next, m_next = _state_block(tile + step, n_tiles, K, V, BK, BV)
                b_next = tl.load(h0 + p_next, mask=m_next, other=0.0).to(tl.float32)
            elif STREAM_STATE:
                b_S += tl.load(h0 + p_S, mask=m_kv, other=0.0, cache_modifier=".cg").to(tl.float32)
            else:
                b_S += tl.load(h0 + p_S, mask=m_kv, other=0.0).to(tl.float32)
        if USE_GATE:
            b_alog = tl.load(A_log + i_h).to(tl.float32)
            b_bias = tl.zeros([BK], tl.float32)
            if HAS_DT_BIAS:
                b_bias += tl.load(dt_bias + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)

        p_key = (bos * H + i_h) * K + o_k                     # row pointers, advanced per token
        p_val = (bos * HV + i_hv) * V + o_v
        for _ in range(eos - bos):
            b_q = tl.load(q + p_key, mask=m_k, other=0.0).to(tl.float32)
            b_k = tl.load(k + p_key, mask=m_k, other=0.0).to(tl.float32)
            b_g = tl.load(g + p_key, mask=m_k, other=0.0).to(tl.float32)
            b_b = tl.load(b + p_key, mask=m_k, other=0.0).to(tl.float32)
            b_v = tl.load(v + p_val, mask=m_v, other=0.0).to(tl.float32)
            b_w = tl.load(w + p_val, mask=m_v, other=0.0).to(tl.float32)
            if L2NORM:
                b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q) + 1e-6)
                b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k) + 1e-6)
            if USE_GATE:
                b_g = tl.where(m_k, _gate(b_g, b_alog, b_bias), 0.0)
            b_S = b_S * tl.exp(b_g)[:, None]                           # decay first, per key channel
            b_r = tl.sum((b_b * b_k)[:, None] * b_S, 0)                # read along the erase direction
            b_S = b_S + b_k[:, None] * (b_w * b_v - b_r)[None, :]      # write the gated value minus the read
            b_o = tl.sum((scale * b_q)[:, None] * b_S, 0)
            tl.store(o + p_val, b_o.to(o.dtype.element_ty), mask=m_v)
            p_key += H * K
            p_val += HV * V
        if STORE_FINAL:
            if STREAM_STATE:
                tl.store(ht + p_S, b_S, mask=m_kv, cache_modifier=".cs")
            else:
                tl.store(ht + p_S, b_S, mask=m_kv)


@triton.jit
@no_type_check
def _state_block(tile, n_tiles, K: tl.constexpr, V: tl.constexpr, BK: tl.constexpr, BV: tl.constexpr):
    """Offsets [BK, BV] into an [N, HV, K, V] state of block ``tile`` (see the kernel), and their mask
    (all false for a block past the last)."""
    NV: tl.constexpr = (V + BV - 1) // BV
    o_k = tl.arange(0, BK)
    o_v = (tile % NV) * BV + tl.arange(0, BV)
    p = (tile // NV).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
    return p, (o_k < K)[:, None] & (o_v < tl.where(tile < n_tiles, V, 0))[None, :]
# --8<-- [end:fused_recurrent_fwd_kernel]


class Tile(NamedTuple):
    """How ``fused_recurrent_fwd_kernel`` is launched: what ``_launch_config`` returns."""

    BV: int                        # value columns per state block
    num_warps: int
    stream_state: bool = False     # cache hints on the state's one load (.cg) and one store (.cs)
    programs_per_sm: int = 0       # 0: one program per state block; else this many programs per SM, each
                                   # taking every (programs)-th block
    prefetch: bool = False         # with programs_per_sm: load the next block's state during this one's update
    stages: int = 1                # with programs_per_sm: Triton's pipelining depth of the loop over blocks


def _launch_config(programs: int, K: int, V: int) -> Tile:
    """The launch for ``programs`` = N·HV (sequence, value head) pairs.

    Few pairs (small batches): BV = 16, so each head's state is spread over V/16 programs and more
    of the card loads it in parallel. Many pairs: BV = 32, and 8 programs per SM, each taking every
    (8·SMs)-th state block in turn, instead of one program per block: a [128, 32] block on one warp
    needs 254 registers per thread, so 8 programs fill an SM, and programs that stay resident skip the
    block scheduler's launch of a new program per block. One warp per [K, BV] state tile up to 4096
    elements (128 registers of state per thread), more above. Measured on an H200
    (``benchmarks/bench_decode.py``, device µs at H = 16, K = V = 128; the peer 4.1 / 6.8 / 44.0 / 153.9):
    B = 1 2.8, B = 8 5.3 (BV 16, 1 warp); B = 64 40.7, B = 256 145.9 (BV 32, 1 warp, 8 per SM), against
    40.8 and 159.4 with one program per block. At B = 256, 16 per SM (two rounds of resident programs)
    take 148.0, but 12 / 6 / 4 per SM 158.9 / 163.9 / 188.7 (a last round part full, or too few
    programs in flight). Cache hints on the state (161.2), prefetching the next block's state (219.4:
    104 spills) and Triton's pipelining of the loop over blocks (146.1) did not help. Smaller tiles
    (K < 128) keep one program per block: fewer registers let more programs fit, and 8 per SM was not
    measured there; K = 256 (two warps per program) takes the rule of K = 128, also unmeasured.
    ``benchmarks/bench_decode.py`` replaces this function to sweep the other launches.
    """
    if programs < 256:
        return Tile(min(16, max(8, triton.next_power_of_2(V))), 1)
    BK, BV = _block_k(K), min(32, max(8, triton.next_power_of_2(V)))
    num_warps = max(1, BK * BV // 4096)
    return Tile(BV, num_warps, programs_per_sm=8 if BK * BV == 4096 * num_warps else 0)


def _block_k(K: int) -> int:
    """The kernel's BK: the whole key axis in one block, a power of two of at least 16."""
    return max(16, triton.next_power_of_2(K))


class _Launch(NamedTuple):
    """What a call of a known configuration needs besides its tensors: one value of ``_LAUNCHES``."""

    run: Callable                   # the compiled kernel's launcher
    grid: tuple[int, int]           # (programs, 1)
    function: int                   # the compiled kernel's CUDA function handle
    metadata: object                # its packed launch metadata
    constexprs: tuple               # H, HV, K, V, BK, BV and the nine launch flags, in the kernel's order
    T: int
    n_tiles: int
    scale: float                    # the default scale K^-1/2
    ht_shape: tuple | None          # (N, HV, K, V), or None without output_final_state
    ht_like_h0: bool                # the final state can be allocated as empty_like(initial_state)
    device: torch.device


@no_type_check  # the contract's checks must come first (named errors); _launch_new carries the checked annotations
def fused_recurrent_gdn2(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: float | None = None,
    initial_state: Float[Tensor, "N HV K V"] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Float[Tensor, " H"] | None = None,
    dt_bias: Float[Tensor, "..."] | None = None,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Token-by-token Gated DeltaNet-2 in one Triton launch: same contract as
    :func:`gdn2.ops.fused_recurrent_gdn2` (SPEC §5). Forward only (decoding and short prefill).

    Cost: 8·K·V FLOPs per token and value head; 8·K·V bytes of float32 state per sequence and
    value head (read once, written once) plus the token inputs; one launch. On the host, a call of
    a configuration seen before reads each tensor's shape, dtype, device, contiguity and address
    once and allocates the outputs; nothing else.
    """
    h0, cu = initial_state, cu_seqlens
    try:
        dev = q.get_device()
        key = (q.shape, k.shape, v.shape, g.shape, b.shape, w.shape, q.dtype, k.dtype, v.dtype, g.dtype, b.dtype,
               w.dtype, dev, k.get_device(), v.get_device(), g.get_device(), b.get_device(), w.get_device(),
               type(scale), output_final_state, use_qk_l2norm_in_kernel,
               None if h0 is None else (h0.shape, h0.dtype, h0.get_device()),
               None if A_log is None else (A_log.shape, A_log.dtype, A_log.get_device()),
               None if dt_bias is None else (dt_bias.shape, dt_bias.dtype, dt_bias.get_device()),
               None if cu is None else (cu.shape, cu.dtype, cu.get_device()))
        hit = _LAUNCHES.get(key)
    except (AttributeError, TypeError):  # not a tensor, or an unhashable flag: the full check names it
        key = hit = None
    if hit is None:
        check_inputs(q, k, v, g, b, w, scale, h0, cu, A_log, dt_bias, check_values=False)
        check_triton_inputs(q, v)
    elif (q.is_contiguous() and k.is_contiguous() and v.is_contiguous() and g.is_contiguous()
          and b.is_contiguous() and w.is_contiguous() and (h0 is None or h0.is_contiguous())
          and (A_log is None or A_log.is_contiguous()) and (dt_bias is None or dt_bias.is_contiguous())
          and (cu is None or cu.is_contiguous())):
        run, grid, function, metadata, constexprs, T, n_tiles, scale0, ht_shape, ht_like_h0, device = hit
        p_q, p_k, p_v = q.data_ptr(), k.data_ptr(), v.data_ptr()
        p_g, p_b, p_w = g.data_ptr(), b.data_ptr(), w.data_ptr()
        p_a = None if A_log is None else A_log.data_ptr()
        p_d = None if dt_bias is None else dt_bias.data_ptr()
        p_h = None if h0 is None else h0.data_ptr()
        p_c = None if cu is None else cu.data_ptr()
        # The compiled kernel assumes 16-byte aligned pointers (as the JIT found them); the outputs are
        # fresh allocations, aligned by the allocator. Launch hooks (profilers) need the JIT's path.
        enter, leave = _RUNTIME.launch_enter_hook, _RUNTIME.launch_exit_hook
        if (not (p_q | p_k | p_v | p_g | p_b | p_w | (p_a or 0) | (p_d or 0) | (p_h or 0) | (p_c or 0)) & 15
                and dev == _current_device() and not getattr(enter, "calls", enter)
                and not getattr(leave, "calls", leave)):
            o = torch.empty_like(v)                                                  # [B, T, HV, V], q's dtype
            if ht_shape is None:
                ht = None
            else:
                ht = torch.empty_like(h0) if ht_like_h0 else torch.empty(ht_shape, dtype=torch.float32, device=device)
            if utils.POISON_OUTPUTS:
                o.fill_(float("nan"))
                if ht is not None:
                    ht.fill_(float("nan"))
            run(grid[0], grid[1], 1, _current_stream(dev), function, metadata, None, None, None,
                p_q, p_k, p_v, p_g, p_b, p_w, p_a, p_d, p_h, o.data_ptr(), None if ht is None else ht.data_ptr(),
                p_c, scale0 if scale is None else float(scale), T, n_tiles, *constexprs)
            return o, ht
        key = None                                                               # known, just not launchable directly
    else:
        key = None
    return _launch_new(key, q, k, v, g, b, w, scale, h0, output_final_state, cu,
                       use_qk_l2norm_in_kernel, A_log, dt_bias)


def _launch_new(
    key: tuple | None,
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: float | None,
    initial_state: Float[Tensor, "N HV K V"] | None,
    output_final_state: bool,
    cu_seqlens: Integer[Tensor, " Np1"] | None,
    use_qk_l2norm_in_kernel: bool,
    A_log: Float[Tensor, " H"] | None,
    dt_bias: Float[Tensor, "..."] | None,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """A checked call off the short path: contiguous inputs, a launch through the JIT (which compiles
    on first use), and, when ``key`` is given and the launch can be repeated directly, its entry."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    scale = K ** -0.5 if scale is None else float(scale)
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(-1)
    q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens = map(
        contiguous, (q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens))
    o = utils.empty((B, T, HV, V), q.dtype, q.device)
    ht = utils.empty((N, HV, K, V), torch.float32, q.device) if output_final_state else None
    tile = _launch_config(N * HV, K, V)
    n_tiles = triton.cdiv(V, tile.BV) * N * HV
    grid = (min(n_tiles, tile.programs_per_sm * _sm_count(q.device)) if tile.programs_per_sm else n_tiles, 1)
    persistent = grid[0] < n_tiles
    meta = dict(H=H, HV=HV, K=K, V=V, BK=_block_k(K), BV=tile.BV,   # the kernel's order
                USE_GATE=A_log is not None, HAS_DT_BIAS=dt_bias is not None, L2NORM=bool(use_qk_l2norm_in_kernel),
                HAS_H0=initial_state is not None, STORE_FINAL=bool(output_final_state),
                IS_VARLEN=cu_seqlens is not None, STREAM_STATE=tile.stream_state,
                PREFETCH=persistent and tile.prefetch, STAGES=tile.stages if persistent else 1)
    args = (q, k, v, g, b, w, A_log, dt_bias, initial_state, o, ht, cu_seqlens, scale, T, n_tiles)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        kernel = fused_recurrent_fwd_kernel[grid](*args, **meta, num_warps=tile.num_warps)
    if key is not None and _DIRECT_LAUNCH and all(x is None or x.data_ptr() % 16 == 0 for x in args[:12]):
        if len(_LAUNCHES) >= _MAX_LAUNCHES:                                     # bound the cache, never hit in practice
            _LAUNCHES.clear()
        _LAUNCHES[key] = _Launch(
            kernel.run, grid, kernel.function, kernel.packed_metadata, tuple(meta.values()), T, n_tiles, K ** -0.5,
            (N, HV, K, V) if output_final_state else None,
            initial_state is not None and initial_state.dtype == torch.float32, q.device)
    return o, ht


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 for the interpreter's CPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


def _direct_launch_supported() -> bool:
    """Direct launches of a compiled kernel rely on the launcher of Triton >= 3.4 (all arguments in
    order, constexprs included), its knobs, and PyTorch's raw current-stream query (a CUDA build)."""
    if os.environ.get("TRITON_INTERPRET") == "1" or _current_stream is None or _RUNTIME is None:
        return False
    major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    return (major, minor) >= (3, 4)


#: the current CUDA device and its current stream (the capture stream inside a CUDA graph capture),
#: as plain C calls: the Triton driver's getters add a few Python layers around the same queries
_current_device = getattr(torch._C, "_cuda_getDevice", None)
_current_stream = getattr(torch._C, "_cuda_getCurrentRawStream", None)
#: where Triton keeps its launch hooks: chains since Triton 3.5 (empty without a profiler), before that a
#: function or None
_RUNTIME = getattr(getattr(triton, "knobs", None), "runtime", None)
_DIRECT_LAUNCH = _direct_launch_supported()
_LAUNCHES: dict[tuple, _Launch] = {}
_MAX_LAUNCHES = 1024
