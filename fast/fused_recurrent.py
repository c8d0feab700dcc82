"""The Triton decoding operator ``fused_recurrent_gdn2``: the recurrence token by token, one launch per call.

Each program keeps one [K, BV] block of a value head's state in registers for all T tokens of its
sequence, so the state is read once and written once per call however many tokens it holds
(decoding, T = 1, or a short multi-token prefill). Reference: ``gdn2.ops.recurrent.recurrent_step``.

A decoding step at small batch costs what the host does around the launch; a model that decodes
with low latency per token captures its whole step in a CUDA graph (the docs page "Decoding" shows
how). The launch here is Triton's public one.
"""

import contextlib
from numbers import Real

import torch
import triton
import triton.language as tl
from jaxtyping import Float, Integer
from torch import Tensor

from gdn2.ops._contract import erase_gate_scale

from . import checks
from .config import DecodeLaunch
from .contract import contiguous, validated
from .jit import (
    F_B,
    F_G,
    F_H0,
    F_K,
    F_Q,
    F_V,
    F_W,
    flag_bad_offsets,
    gate,
    gate_value,
    nonfinite,
    not_log_decay,
    raise_flags,
    seq_bounds,
)
from .utils import empty

__all__ = ["fused_recurrent_gdn2", "fused_recurrent_fwd_kernel", "decode_launch"]


# --8<-- [start:fused_recurrent_fwd_kernel]
@triton.jit(do_not_specialize=["T", "n_tiles"])
def fused_recurrent_fwd_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]
    A_log, dt_bias,          # in-op gate: A_log [H], dt_bias [H·K] (read with USE_GATE)
    h0,                      # initial state [N, HV, K, V] float32 (HAS_H0)
    o,                       # out [B, T, HV, V] in q's dtype
    ht,                      # out final state [N, HV, K, V] float32 (STORE_FINAL)
    flags,                   # [1] int32: bad-input bits (jit.FLAG_BITS)
    cu_seqlens,              # [N + 1] packed offsets (IS_VARLEN)
    scale, T, N,
    n_tiles,                 # cdiv(V, BV)·N·HV state blocks, taken in turn by the grid's programs
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, L2NORM: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr,
    SIGMOID: tl.constexpr, B_SCALE: tl.constexpr,
):
    """All tokens of one sequence for one value head and one block of BV value columns, per state block.

    Grid (programs,): program p takes the state blocks p, p + programs, … of the cdiv(V, BV)·N·HV, block
    i being value columns (i mod cdiv(V, BV))·BV.. of pair (sequence, value head) i div cdiv(V, BV).
    A block's state S [BK, BV] (float32) is loaded once, then per token the key-side rows q, k, g, b [K]
    of key head i_hv div (HV/H) and v, w [BV]; S stays in registers until the final store. Per token:
    S̄ = Diag(α) S, r = S̄ᵀ(b⊙k), S = S̄ + k (w⊙v − r)ᵀ, o = Sᵀ(scale·q): 8·K·BV FLOPs. Bytes: 8·K·V
    (state in and out, float32) per sequence and value head, plus per token the inputs and o once.
    """
    NV: tl.constexpr = (V + BV - 1) // BV
    o_k = tl.arange(0, BK)
    m_k = o_k < K
    first, step = tl.program_id(0), tl.num_programs(0)
    for i in range(0, tl.cdiv(n_tiles - first, step)):
        tile = first + i * step
        i_v, i_nh = tile % NV, tile // NV
        i_n, i_hv = i_nh // HV, i_nh % HV
        i_h = i_hv // (HV // H)
        bos, eos = seq_bounds(cu_seqlens, i_n, T, IS_VARLEN)
        o_v = i_v * BV + tl.arange(0, BV)
        m_v = o_v < V
        off_S = i_nh.to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]
        m_S = m_k[:, None] & m_v[None, :]
        bad = tl.zeros([], tl.int32)
        if IS_VARLEN:
            if (i_v == 0) & (i_hv == 0):
                bad |= flag_bad_offsets(cu_seqlens, i_n, N, T)

        b_S = tl.zeros([BK, BV], tl.float32)
        if HAS_H0:
            b_S += tl.load(h0 + off_S, mask=m_S, other=0.0).to(tl.float32)
            bad |= nonfinite(b_S) * F_H0
        if USE_GATE:
            b_alog = tl.load(A_log + i_h).to(tl.float32)
            b_bias = tl.zeros([BK], tl.float32)
            if HAS_DT_BIAS:
                b_bias += tl.load(dt_bias + i_h * K + o_k, mask=m_k, other=0.0).to(tl.float32)

        off_key = (bos * H + i_h) * K + o_k                     # offsets of this token's rows, advanced per token
        off_val = (bos * HV + i_hv) * V + o_v
        for _ in range(eos - bos):
            b_q = tl.load(q + off_key, mask=m_k, other=0.0).to(tl.float32)
            b_k = tl.load(k + off_key, mask=m_k, other=0.0).to(tl.float32)
            b_g = tl.load(g + off_key, mask=m_k, other=0.0).to(tl.float32)
            b_b = tl.load(b + off_key, mask=m_k, other=0.0).to(tl.float32)
            b_v = tl.load(v + off_val, mask=m_v, other=0.0).to(tl.float32)
            b_w = tl.load(w + off_val, mask=m_v, other=0.0).to(tl.float32)
            if USE_GATE:
                b_g = tl.where(m_k, gate(b_g + b_bias, b_alog), 0.0)
            bad |= ((nonfinite(b_q) * F_Q) | (nonfinite(b_k) * F_K) | (not_log_decay(b_g) * F_G)
                    | (nonfinite(b_b) * F_B) | (nonfinite(b_v) * F_V) | (nonfinite(b_w) * F_W))
            b_b = gate_value(b_b, m_k, SIGMOID, B_SCALE)
            b_w = gate_value(b_w, m_v, SIGMOID, 1.0)
            if L2NORM:
                b_q = b_q * tl.rsqrt(tl.sum(b_q * b_q) + 1e-6)
                b_k = b_k * tl.rsqrt(tl.sum(b_k * b_k) + 1e-6)
            b_S = b_S * tl.exp(b_g)[:, None]                           # decay first, per key channel
            b_r = tl.sum((b_b * b_k)[:, None] * b_S, 0)                # read along the erase direction
            b_S = b_S + b_k[:, None] * (b_w * b_v - b_r)[None, :]      # write the gated value minus the read
            b_o = tl.sum((scale * b_q)[:, None] * b_S, 0)
            tl.store(o + off_val, b_o.to(o.dtype.element_ty), mask=m_v)
            off_key += H * K
            off_val += HV * V
        if STORE_FINAL:
            tl.store(ht + off_S, b_S, mask=m_S)
        raise_flags(flags, bad)
# --8<-- [end:fused_recurrent_fwd_kernel]


def _block_k(K: int) -> int:
    """The kernel's BK: the whole key axis in one block, a power of two of at least 16."""
    return max(16, triton.next_power_of_2(K))


def decode_launch(pairs: int, K: int, V: int) -> DecodeLaunch:
    """The launch for ``pairs`` = N·HV (sequence, value head) pairs.

    Few pairs (small batches): BV = 16, so each head's state is spread over V/16 programs and more of
    the card loads it in parallel. Many pairs: BV = 32 and 8 programs per SM, each taking every
    (8·SMs)-th state block in turn: a [128, 32] block on one warp takes nearly all the registers a thread
    may hold, so 8 such programs fill an SM, and programs that stay resident skip the block scheduler's
    launch of a new program per block. One warp per [K, BV] tile of up to 4096 elements, more above. Tiles smaller
    than [128, 32] keep one program per block.
    """
    if pairs < 256:
        return DecodeLaunch(BV=min(16, max(8, triton.next_power_of_2(V))), num_warps=1)
    BK, BV = _block_k(K), min(32, max(8, triton.next_power_of_2(V)))
    num_warps = max(1, BK * BV // 4096)
    return DecodeLaunch(BV=BV, num_warps=num_warps, programs_per_sm=8 if BK * BV == 4096 * num_warps else None)


def _sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of a CUDA device (4 for the interpreter's CPU)."""
    return torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4


@validated
def fused_recurrent_gdn2(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: Real | None = None,
    initial_state: Float[Tensor, "N HV K V"] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Float[Tensor, " H"] | None = None,
    dt_bias: Float[Tensor, "..."] | None = None,
    launch: DecodeLaunch | None = None,
    use_gate_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
    inplace_final_state: bool = False,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Token-by-token Gated DeltaNet-2 in one Triton launch: the contract of
    :func:`gdn2.ops.fused_recurrent_gdn2`. Forward only (decoding and short prefill); capturable in a
    CUDA graph. ``launch`` overrides the launch settings of :func:`decode_launch`; ``use_gate_sigmoid_in_kernel``
    takes b and w as logits (σ applied in the kernel, 2σ for b with ``allow_neg_eigval``).
    ``inplace_final_state`` writes the final state over ``initial_state`` (float32, contiguous) and returns
    it: a decoding loop then keeps its state where it lies, as a CUDA graph needs (each program reads its
    block of the state before it writes it back, so nothing is read after it was overwritten).

    Cost: 8·K·V FLOPs per token and value head; 8·K·V bytes of float32 state per sequence and value
    head (read once, written once) plus the token inputs; one launch.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    scale = K ** -0.5 if scale is None else float(scale)
    b_scale = erase_gate_scale(use_gate_sigmoid_in_kernel, allow_neg_eigval)
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(-1)
    if inplace_final_state and initial_state is not None and not initial_state.is_contiguous():
        raise ValueError("inplace_final_state needs a contiguous initial_state")
    q, k, v, g, b, w, A_log, dt_bias, initial_state = map(
        contiguous, (q, k, v, g, b, w, A_log, dt_bias, initial_state))
    o = empty((B, T, HV, V), q.dtype, q.device)
    ht = empty((N, HV, K, V), torch.float32, q.device) if output_final_state else None
    if inplace_final_state:
        if initial_state is None or initial_state.dtype != torch.float32 or not output_final_state:
            raise ValueError("inplace_final_state needs a float32 initial_state and output_final_state=True")
        ht = initial_state
    if launch is not None and not isinstance(launch, DecodeLaunch):
        raise TypeError(f"launch must be a gdn2.fast.config.DecodeLaunch or None, got {type(launch).__name__}")
    tile = launch or decode_launch(N * HV, K, V)
    n_tiles = triton.cdiv(V, tile.BV) * N * HV
    programs = min(n_tiles, tile.programs_per_sm * _sm_count(q.device)) if tile.programs_per_sm else n_tiles
    flags = checks.flag_word(q.device)
    with torch.cuda.device(q.device) if q.is_cuda else contextlib.nullcontext():
        fused_recurrent_fwd_kernel[(programs,)](
            q, k, v, g, b, w, A_log, dt_bias, initial_state, o, ht, flags, cu_seqlens, scale, T, N, n_tiles,
            H=H, HV=HV, K=K, V=V, BK=_block_k(K), BV=tile.BV, USE_GATE=A_log is not None,
            HAS_DT_BIAS=dt_bias is not None, L2NORM=bool(use_qk_l2norm_in_kernel),
            HAS_H0=initial_state is not None, STORE_FINAL=bool(output_final_state),
            IS_VARLEN=cu_seqlens is not None, SIGMOID=b_scale is not None, B_SCALE=b_scale or 1.0,
            num_warps=tile.num_warps, num_stages=tile.num_stages)
    checks.settle(flags)
    return o, ht
