"""The chunk forward's driver: allocate, launch stages (1)-(3), launch stages (4)-(5), return.

    chunk_intra_diag_kernel, chunk_intra_offdiag_kernel   (1) G, (2) T, A = (I + T)⁻¹ and A_qk   intra_fwd.py
    chunk_wy_fwd_kernel                                    (3) Y = A Ē, U = A Z, Q_γ, K_tail, γ_C  intra_fwd.py
    chunk_state_output_fwd_kernel                          (4) R, S_C and (5) O                    state_fwd.py

The chunk size is 64: the intra kernels are built from four 16×16 sub-chunks.
"""

import functools
from dataclasses import replace
from typing import NamedTuple

import torch
import triton
from torch import Tensor

from . import checks
from .config import ForwardConfig
from .intra_fwd import chunk_intra_diag_kernel, chunk_intra_offdiag_kernel, chunk_wy_fwd_kernel
from .jit import EXP_MAX
from .state_fwd import chunk_state_output_fwd_kernel
from .utils import empty, needs_int64, prepare_chunk_indices

__all__ = ["CHUNK_SIZE", "ChunkForward", "INTRA", "WY", "SAVED", "chunk_gdn2_fwd", "forward_config"]

#: the one chunk size of the Triton backend
CHUNK_SIZE = 64


class ChunkForward(NamedTuple):
    """What :func:`chunk_gdn2_fwd` returns. Layouts are token-major like the inputs.

    Always: ``o`` [B, T, HV, V] (q's dtype) and ``final_state`` [N, HV, K, V] float32 or None; the
    products of stages (1)-(2), named by :data:`INTRA`: ``A``, ``Aqk``, ``q_rstd``, ``k_rstd`` and, with
    the in-op gate, ``g_gate``. With ``save=True`` (else None), also the rest of what a backward reads;
    with ``save="wy"``, all of it but the state pass's ``R`` and ``h`` (C = 64; a chunk of sequence n
    starts at token bos_n + i_t·C; rows past the sequence end are unwritten):

    - ``G`` [B, T, H, K] float32: chunk-local cumulative log-decay G_r (after the in-op gate).
    - ``A`` [B, T, H, C] float32: row r of chunk i_t's A = (I + T)⁻¹ sits at token t0 + r.
    - ``Aqk`` [B, T, H, C] q's dtype: scale·q_r k_s exp(G_r − G_s) for s ≤ r, 0 above (same layout).
    - ``Y``, ``Qg`` (= scale·γ⊙q), ``Kt`` (= exp(G_C − G)⊙k) [B, T, H, K]; ``U``, ``R`` (= U − Y S₀)
      [B, T, HV, V]: q's dtype.
    - ``gC`` [NSLOT, H, K] float32: γ_C = exp(G of the chunk's last token).
    - ``h`` [NSLOT, HV, K, V] float32: the state S₀ at the start of every chunk.
    - ``q_rstd``, ``k_rstd`` [B, T, H] float32: 1/sqrt(‖x‖² + 1e-6), 1 without the in-op L2 norm.
    - ``g_gate`` [B, T, H, K] float32, with the in-op gate only: its log-decay g per token.
    - ``chunk_indices`` (int32 [NSLOT, 2], packed input only): see :func:`gdn2.fast.utils.prepare_chunk_indices`.

    Chunk slots: dense, chunk i_t of sequence n is slot n·ceil(T/C) + i_t (NSLOT = B·ceil(T/C)); packed,
    bos_n // C + n + i_t (NSLOT = T // C + N; slots between sequences are unused).
    """

    o: Tensor
    final_state: Tensor | None
    G: Tensor | None = None
    A: Tensor | None = None
    Aqk: Tensor | None = None
    Y: Tensor | None = None
    Qg: Tensor | None = None
    Kt: Tensor | None = None
    U: Tensor | None = None
    R: Tensor | None = None
    gC: Tensor | None = None
    h: Tensor | None = None
    q_rstd: Tensor | None = None
    k_rstd: Tensor | None = None
    chunk_indices: Tensor | None = None
    g_gate: Tensor | None = None


#: the intermediates the backward reads, in the order the custom op hands them over
SAVED = ("G", "A", "Aqk", "Y", "Qg", "Kt", "R", "h", "q_rstd", "k_rstd")
#: the products of stages (1)-(2): given back to the driver (``kept=``), they let it start at stage (3).
#: ``g_gate`` (the in-op gate's g) comes last and only with the gate.
INTRA = ("A", "Aqk", "q_rstd", "k_rstd", "g_gate")
#: the products of stage (3) (with G): given back to the driver with those of (1)-(2) but ``g_gate``, which
#: only stage (3) reads, they let it start at the state pass
WY = ("G", "Y", "Qg", "Kt", "U", "gC")


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _state_block_v(programs: int, BVp: int, K: int, save: bool = False, itemsize: int = 2,
                   n_sm: int = 132) -> tuple[int, int]:
    """(BV, num_warps) of the state kernel for ``programs`` = N·HV (sequence, value head) pairs.

    A program walks its sequence's chunks in order and its shared memory leaves one program per SM, so
    the time is about waves × chunks × per-chunk latency, and the per-chunk latency grows with BV:
    16-bit inputs take the narrowest BV whose programs fit in one wave. When none does: BV 64 (4 warps)
    while there are at most two waves' worth of (sequence, value head) pairs, as on a packed row of a
    few documents, where a wave and a bit of BV 128's long steps cost more than BV 64's shorter ones
    (``benchmarks/profile_kernels.py --variants``); else BV 128 (8 warps).
    float32 inputs take BV 64 or 32 when there are many programs, else 16. K > 128 takes at most 32,
    and 16 when saving or in float32: wider blocks need more shared memory than an H200 has
    (tests/test_fast_launch_limits.py)."""
    if K > 128:
        return (16 if save or itemsize > 2 else 32), 4
    if itemsize > 2:
        for bv in (64, 32):
            if bv <= BVp and programs * triton.cdiv(BVp, bv) >= 264:
                return bv, 4
        return 16, 4
    widths = [bv for bv in (16, 32, 64, 128) if bv <= BVp]
    bv = next((bv for bv in widths if programs * triton.cdiv(BVp, bv) <= n_sm), None)
    if bv is None:
        bv = 64 if 64 in widths and programs <= 2 * n_sm else widths[-1]
    return bv, 8 if bv == 128 else 4


def _state_stages(BV: int, K: int, itemsize: int) -> int:
    """Pipeline stages of the state kernel. Its loads do not depend on the state, so the next chunk's can
    be in flight while the current chunk's products run. With two stages the compiler issues them after
    those products; three issue them a step ahead. Three are taken where the third buffer is held within
    an H100's or H200's shared memory by tests/test_fast_launch_limits.py: 16-bit inputs with K <= 128 at
    BV <= 32, the launches of few long sequences, where the walk's latency is most of the kernel's time."""
    return 3 if itemsize <= 2 and K <= 128 and BV <= 32 else 2


def forward_config(config: ForwardConfig | None, K: int, V: int, N: int, HV: int, itemsize: int, save: bool,
                   device: torch.device) -> ForwardConfig:
    """``config`` (or the defaults) with every None field replaced by the rule's choice for this call."""
    config = config or ForwardConfig()
    BKp, BVp = max(16, triton.next_power_of_2(K)), max(16, triton.next_power_of_2(V))
    n_sm = _sm_count(device.index if device.index is not None else torch.cuda.current_device()) \
        if device.type == "cuda" else 132
    BV, warps = _state_block_v(N * HV, BVp, K, save, itemsize, n_sm)
    s = config.state
    BKH = s.BKH or min(BKp, 128)
    state_BV = s.BV or BV
    if 2 * BKH < K:
        raise ValueError(f"StateLaunch.BKH = {BKH} must be at least K / 2 = {K / 2}: the state is one or two tiles")
    # The WY kernel's value tile is never narrower than its key tile: with bfloat16 operands a narrower one
    # read shared memory out of bounds (a compiler fault, benchmarks/triton_faults.py: wy-bf16-BV-below-BK).
    wy_BK = config.wy.BK or min(64, BKp)
    return ForwardConfig(
        diag=config.diag,
        offdiag=replace(config.offdiag, BK=config.offdiag.BK or min(32, BKp)),
        wy=replace(config.wy, BK=wy_BK, BV=config.wy.BV or max(min(128, BVp), wy_BK)),
        state=replace(s, BV=state_BV, BKH=BKH, num_warps=s.num_warps or warps,
                      num_stages=s.num_stages or _state_stages(state_BV, K, itemsize)),
        precision=config.precision,
    )


def chunk_gdn2_fwd(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    scale: float,
    initial_state: Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: Tensor | None = None,
    chunk_indices: Tensor | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Tensor | None = None,
    dt_bias: Tensor | None = None,
    b_scale: float = 0.0,
    save: bool | str = False,
    kept: ChunkForward | None = None,
    need_o: bool = True,
    check: bool = True,
    config: ForwardConfig | None = None,
) -> ChunkForward:
    """Run the chunk forward on validated, contiguous inputs (see :class:`ChunkForward`).

    No checks and no host synchronisation here (``gdn2.fast.chunk_gdn2`` validates). ``A_log`` given
    means g is the raw gate; ``b_scale`` > 0 means b and w are logits (b = b_scale·σ(b), w = σ(w));
    ``save`` keeps the intermediates for a backward (``"wy"``: all but the state pass's, see
    :class:`ChunkForward`); ``kept``, products of an earlier call on the same inputs, skips the stages
    that made them: those of (1)-(2) (:data:`INTRA`) skip stages (1)-(2), and with those of (3) as well
    (:data:`WY`), stage (3) too; ``need_o=False`` skips the
    output (``o`` is None then: a backward reruns the forward for its intermediates, not for o);
    ``check=False`` skips the per-element checks of the input values (a backward's rerun reads inputs
    that its forward has checked); ``config`` overrides launch settings.
    """
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    BT, dev, dt, f32 = CHUNK_SIZE, q.device, q.dtype, torch.float32
    is_varlen = cu_seqlens is not None
    N = cu_seqlens.numel() - 1 if is_varlen else B
    if is_varlen:
        n_slots = T // BT + N
        grid = (n_slots, H)
    else:
        n_slots = B * triton.cdiv(T, BT)
        grid = (triton.cdiv(T, BT), B * H)
    if save not in (False, True, "wy"):
        raise ValueError(f"save must be False, True or 'wy', got {save!r}")
    save_states = save is True             # the state pass writes h and R
    cfg = forward_config(config, K, V, N, HV, q.element_size(), save_states, dev)
    # float32 inputs get float32 products; bfloat16 inputs take bfloat16 operands where every factor
    # is ≤ 1 (LOWP); float16 keeps tf32 there, since its exponent range underflows strong decay
    dot_prec = (cfg.precision or "ieee") if dt == f32 else "tf32"
    lowp = dt == torch.bfloat16
    flags = checks.flag_word(dev)
    if is_varlen:   # the table of these offsets (cached); a caller's must equal it
        table = prepare_chunk_indices(cu_seqlens, BT, T)
        if check and chunk_indices is not None and chunk_indices is not table:
            checks.flag_if_different(flags, "chunk_indices", chunk_indices, table)
        chunk_indices = table
    plain = dict(IS_VARLEN=is_varlen, SIGMOID=b_scale > 0, B_SCALE=float(b_scale or 1.0))
    gate = dict(plain, USE_GATE=A_log is not None, HAS_DT_BIAS=dt_bias is not None)
    # ---- stages (1)-(2): the in-op gate is evaluated once, by the first kernel; the others read its
    # float32 result as g
    if kept is None:
        g_gate = empty((B, T, H, K), f32, dev) if A_log is not None else None
        Aqk = empty((B, T, H, BT), dt, dev)
        A = empty((B, T, H, BT), f32, dev)
        q_rstd, k_rstd = empty((B, T, H), f32, dev), empty((B, T, H), f32, dev)
        chunk_intra_diag_kernel[(grid[0] * 4, grid[1])](
            q, k, g, b, A_log, dt_bias, g_gate, Aqk, A, q_rstd, k_rstd, flags, cu_seqlens, chunk_indices, scale,
            T, N, H=H, K=K, EXP_MAX=EXP_MAX, L2NORM=use_qk_l2norm_in_kernel, DOT_PREC=dot_prec, CHECK=check,
            **gate, **cfg.diag.meta())
        g_log = g if g_gate is None else g_gate
        chunk_intra_offdiag_kernel[grid](
            q, k, g_log, b, Aqk, A, q_rstd, k_rstd, cu_seqlens, chunk_indices, scale,
            T, N, H=H, K=K, DOT_PREC=dot_prec, LOWP=lowp, OFF64=needs_int64(q, A), **plain, **cfg.offdiag.meta())
    else:
        A, Aqk, q_rstd, k_rstd, g_gate = (getattr(kept, f) for f in INTRA)
        if kept.Y is None and (g_gate is None) != (A_log is None):
            raise ValueError("kept= must come from a call with the same in-op gate (g_gate with A_log only)")
        g_log = g if g_gate is None else g_gate

    # ---- stage (3)
    if kept is not None and kept.Y is not None:
        G, Y, Qg, Kt, U, gC = (getattr(kept, f) for f in WY)
    else:
        Y, Qg, Kt = (empty((B, T, H, K), dt, dev) for _ in range(3))
        U = empty((B, T, HV, V), dt, dev)
        gC = empty((n_slots, H, K), f32, dev)
        G = empty((B, T, H, K), f32, dev) if save else None
        wy = cfg.wy   # no more programs per chunk than it has key tiles or value tiles
        wy = replace(wy, NP=max(1, min(wy.NP, max(triton.cdiv(K, wy.BK), (HV // H) * triton.cdiv(V, wy.BV)))))
        chunk_wy_fwd_kernel[(grid[0], grid[1], wy.NP)](
            q, k, v, g_log, b, w, A, q_rstd, k_rstd, Y, Qg, Kt, U, gC, G, flags,
            cu_seqlens, chunk_indices, scale, T, N,
            H=H, HV=HV, K=K, V=V, SAVE=bool(save), DOT_PREC=dot_prec, LOWP=lowp, CHECK=check, **plain,
            **wy.meta())

    # ---- stages (4)-(5)
    o = empty((B, T, HV, V), dt, dev) if need_o else None
    ht = empty((N, HV, K, V), f32, dev) if output_final_state else None
    h = empty((n_slots, HV, K, V), f32, dev) if save_states else None
    R = empty((B, T, HV, V), dt, dev) if save_states else None
    st = cfg.state
    BKH = st.BKH
    chunk_state_output_fwd_kernel[(triton.cdiv(V, st.BV), N * HV)](
        Y, Qg, Kt, Aqk, U, gC, initial_state, o, ht, h, R, flags, cu_seqlens, T, N,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=BKH * triton.cdiv(K, BKH), HAS_H0=initial_state is not None,
        STORE_O=need_o, STORE_FINAL=output_final_state, IS_VARLEN=is_varlen, SAVE=save_states, DOT_PREC=dot_prec,
        **st.meta())
    checks.settle(flags)
    products = dict(A=A, Aqk=Aqk, q_rstd=q_rstd, k_rstd=k_rstd, g_gate=g_gate, chunk_indices=chunk_indices)
    if not save:
        return ChunkForward(o, ht, **products)
    return ChunkForward(o, ht, G=G, Y=Y, Qg=Qg, Kt=Kt, U=U, R=R, gC=gC, h=h, **products)
