"""The Triton decoding operator ``fused_recurrent_gdn2``: SPEC §2 token by token, one launch per call.

Each program keeps one [K, BV] block of a value head's state in registers for all T tokens of
its sequence, so the state is read once and written once per call however many tokens it holds
(decoding, T = 1, or a short multi-token prefill). The host side is kept to a few cheap shape
checks and two allocations: at B = 1 the call costs little more than the launch itself.
"""


import os
from typing import no_type_check

import torch
import triton
import triton.language as tl
from jaxtyping import Float, Integer
from torch import Tensor

from .chunk import contiguous, validated
from .chunk_fwd import _gate
from .utils import empty

__all__ = ["fused_recurrent_gdn2", "fused_recurrent_fwd_kernel"]


# --8<-- [start:fused_recurrent_fwd_kernel]
@triton.jit(do_not_specialize=["T"])
@no_type_check  # keeps jaxtyping's test-time import hook off the kernels
def fused_recurrent_fwd_kernel(
    q, k, v, g, b, w,        # inputs: q, k, g, b [B, T, H, K]; v, w [B, T, HV, V]
    A_log, dt_bias,          # in-kernel gate: A_log [H], dt_bias [H*K] (read only with USE_GATE)
    h0,                      # initial state [N, HV, K, V] float32 (HAS_H0)
    o,                       # output [B, T, HV, V] in q's dtype
    ht,                      # final state [N, HV, K, V] float32 (STORE_FINAL)
    cu_seqlens,              # [N+1] sequence offsets (IS_VARLEN)
    scale, T,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
    USE_GATE: tl.constexpr, HAS_DT_BIAS: tl.constexpr, L2NORM: tl.constexpr,
    HAS_H0: tl.constexpr, STORE_FINAL: tl.constexpr, IS_VARLEN: tl.constexpr,
):
    """All tokens of one sequence for one value head and one block of BV value columns.

    Grid: (cdiv(V, BV), N·HV). The program loads its state block S [BK, BV] (float32) once, then
    per token the key-side rows q, k, g, b [K] of key head i_hv // (HV/H) and v, w [BV]; S never
    leaves registers until the final store. Per token: S̄ = Diag(α) S, r = S̄ᵀ(b⊙k),
    S = S̄ + k (w⊙v − r)ᵀ, o = Sᵀ(scale·q): 8·K·BV FLOPs. Bytes: 8·K·V (state in and out, float32)
    per sequence and value head, plus per token 2·(4K + 3V) for 16-bit q, k, b, v, w, o (g float32).
    """
    i_v, i_nh = tl.program_id(0), tl.program_id(1)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)
    if IS_VARLEN:
        bos = tl.load(cu_seqlens + i_n).to(tl.int64)
        eos = tl.load(cu_seqlens + i_n + 1).to(tl.int64)
    else:
        bos = i_n.to(tl.int64) * T
        eos = bos + T

    o_k = tl.arange(0, BK)
    m_k = o_k < K
    o_v = i_v * BV + tl.arange(0, BV)
    m_v = o_v < V
    m_kv = m_k[:, None] & m_v[None, :]
    p_S = (i_n * HV + i_hv).to(tl.int64) * K * V + o_k[:, None] * V + o_v[None, :]

    b_S = tl.zeros([BK, BV], tl.float32)
    if HAS_H0:
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
        tl.store(ht + p_S, b_S, mask=m_kv)
# --8<-- [end:fused_recurrent_fwd_kernel]




def _block_v(programs: int, V: int) -> int:
    """Value-column block: small blocks when few (sequence, head) pairs must fill the GPU."""
    BVp = max(16, triton.next_power_of_2(V))
    if programs >= 1024:
        return min(64, BVp)
    return min(16 if programs < 256 else 32, BVp)


@validated
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
    value head (read once, written once) plus the token inputs; one launch.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = B if cu_seqlens is None else cu_seqlens.shape[0] - 1
    scale = K ** -0.5 if scale is None else float(scale)
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(-1)
    q, k, v, g, b, w, A_log, dt_bias, initial_state = map(
        contiguous, (q, k, v, g, b, w, A_log, dt_bias, initial_state))
    o = empty((B, T, HV, V), q.dtype, q.device)
    ht = empty((N, HV, K, V), torch.float32, q.device) if output_final_state else None
    args = (q, k, v, g, b, w, A_log, dt_bias, initial_state, o, ht, cu_seqlens, scale, T)
    # The launch itself: the compiled kernel of a configuration is cached and launched directly,
    # which skips the JIT's per-call argument binding (tens of µs for this many arguments).
    # The key holds everything the JIT specialises on: dtypes, sizes, flags and 16-byte alignment.
    key = (q.device.index, q.dtype, g.dtype, b.dtype, w.dtype, H, HV, K, V, N, use_qk_l2norm_in_kernel,
           output_final_state, *(x is None or x.data_ptr() % 16 == 0 for x in args[:12]),
           None if A_log is None else A_log.dtype, None if dt_bias is None else dt_bias.dtype,
           None if initial_state is None else initial_state.dtype, None if cu_seqlens is None else cu_seqlens.dtype)
    hit = _LAUNCHES.get(key)
    if hit is not None and _DIRECT_LAUNCH and knobs.runtime.launch_enter_hook is None:
        kernel, grid, meta = hit
        kernel.run(*grid, _get_stream(), kernel.function, kernel.packed_metadata, None, None, None, *args, *meta)
        return o, ht
    BV = _block_v(N * HV, V)
    grid = (triton.cdiv(V, BV), N * HV, 1)
    meta = dict(H=H, HV=HV, K=K, V=V, BK=max(16, triton.next_power_of_2(K)), BV=BV,
                USE_GATE=A_log is not None, HAS_DT_BIAS=dt_bias is not None, L2NORM=bool(use_qk_l2norm_in_kernel),
                HAS_H0=initial_state is not None, STORE_FINAL=bool(output_final_state),
                IS_VARLEN=cu_seqlens is not None)
    kernel = fused_recurrent_fwd_kernel[grid](*args, **meta, num_warps=4 if K * BV >= 4096 else 2)
    if _DIRECT_LAUNCH:
        _LAUNCHES[key] = (kernel, grid, tuple(meta.values()))
    return o, ht


def _direct_launch_supported() -> bool:
    """Direct launches of a compiled kernel rely on the launcher of Triton >= 3.4 (all arguments in order)."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        return False
    major, minor = (int(x) for x in triton.__version__.split(".")[:2])
    return (major, minor) >= (3, 4)


_DIRECT_LAUNCH = _direct_launch_supported()
_LAUNCHES: dict = {}
if _DIRECT_LAUNCH:
    from triton import knobs
    from triton.runtime.driver import driver

    def _get_stream():
        return driver.active.get_current_stream(driver.active.get_current_device())
