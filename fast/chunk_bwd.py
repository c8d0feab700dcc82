"""The chunk backward's driver: the reverse state pass, then the local gradients of every chunk.

    chunk_bwd_state_kernel            dS_end of every chunk, dR, dh0              state_bwd.py
    chunk_bwd_local_wy_kernel         output, state and WY paths; dA → dT, dv, dw  local_bwd.py
    chunk_bwd_local_pairwise_kernel   pairwise products, dg, in-op gate and norm   local_bwd.py

Reference: ``gdn2.ops.chunk_bwd`` (``chunk_bwd_state``, ``chunk_bwd_local``). The kernels read the
forward's intermediates (:class:`gdn2.fast.chunk_fwd.ChunkForward`), saved or recomputed.
"""

import torch
import triton
from torch import Tensor

from .chunk_fwd import CHUNK_SIZE, ChunkForward
from .config import BackwardConfig
from .jit import EXP_MAX
from .local_bwd import chunk_bwd_local_pairwise_kernel, chunk_bwd_local_wy_kernel
from .state_bwd import chunk_bwd_state_kernel
from .utils import empty, needs_int64

__all__ = ["chunk_gdn2_bwd", "chunk_bwd_state", "chunk_bwd_local", "BC"]

#: sub-chunk size of the pairwise kernel (tl.dot needs at least 16 rows)
BC = 16


def _dot_precision(dtype: torch.dtype, K: int) -> str:
    """Product precision of the backward kernels for float32 inputs (16-bit inputs take 16-bit operands).

    Near-float32 products are needed: plain tf32 would take most of the float32 tolerance. "ieee" at
    K ≤ 32 and "tf32x3" above: each of them failed with Triton 3.6 in the other range
    (benchmarks/triton_faults.py)."""
    if dtype != torch.float32:
        return "tf32"
    return "tf32x3" if K > 32 else "ieee"


def chunk_bwd_state(saved: ChunkForward, do: Tensor, dht: Tensor | None, initial_state: Tensor | None,
                    cu_seqlens: Tensor | None, config: BackwardConfig) -> tuple[Tensor, Tensor, Tensor | None]:
    """(dS_end [NSLOT, HV, K, V], dR [B, T, HV, V], dh0 or None): the reverse state pass.

    dS_end of slot i is the gradient of that chunk's end state (unused slots of a packed batch stay
    unwritten). The state gradient is held as tiles of BKH rows, two for K > BKH: 128 on a GPU, where
    other heights faulted with Triton 3.6; the interpreter takes the smallest tile that covers K. The
    V-block is 64 when the (sequence, head) pairs alone fill the GPU, else 32 (more, shorter programs).
    """
    B, T, H, K = saved.Y.shape
    HV, V = do.shape[2], do.shape[3]
    dev = do.device
    N = cu_seqlens.numel() - 1 if cu_seqlens is not None else B
    dS_end = empty((saved.h.shape[0], HV, K, V), do.dtype, dev)
    dR = empty((B, T, HV, V), do.dtype, dev)
    dh0 = empty((N, HV, K, V), torch.float32, dev) if initial_state is not None else None
    c = config.state
    BKH = c.BKH or (128 if do.is_cuda else min(128, max(16, triton.next_power_of_2(K))))
    BVp = max(16, triton.next_power_of_2(V))
    BV = c.BV or (64 if BVp >= 64 and N * HV >= 128 else 32)
    chunk_bwd_state_kernel[(triton.cdiv(V, BV), N * HV)](
        saved.Qg, saved.Kt, saved.Y, saved.G, saved.Aqk, do, dht, dS_end, dR, dh0, cu_seqlens, T,
        H=H, HV=HV, K=K, V=V, BT=CHUNK_SIZE, BK=BKH * triton.cdiv(K, BKH), BKH=BKH, BV=BV,
        PREC=config.precision or _dot_precision(do.dtype, K), USE_DHT=dht is not None, USE_DH0=dh0 is not None,
        IS_VARLEN=cu_seqlens is not None, num_warps=c.num_warps or (4 if K <= 128 else 8),
        num_stages=c.num_stages or (2 if K <= 128 else 1),
    )
    return dS_end, dR, dh0


def chunk_bwd_local(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor, scale: float, cu_seqlens: Tensor | None,
    saved: ChunkForward, do: Tensor, dR: Tensor, dS_end: Tensor, config: BackwardConfig, *,
    use_qk_l2norm_in_kernel: bool = False, A_log: Tensor | None = None, dt_bias: Tensor | None = None,
    b_scale: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None]:
    """(dq, dk, dv, dg, db, dw, dA_log, ddt_bias): every gradient of every chunk given dS_end and dR,
    with the in-op L2-norm and gate backward applied (dA_log, ddt_bias None without them)."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    BT, dev, f32 = CHUNK_SIZE, q.device, torch.float32
    varlen = cu_seqlens is not None
    N = cu_seqlens.numel() - 1 if varlen else B
    grid_t = saved.chunk_indices.shape[0] if varlen else triton.cdiv(T, BT)
    BK = max(16, triton.next_power_of_2(K))
    BVp = max(16, triton.next_power_of_2(V))
    prec = config.precision or _dot_precision(q.dtype, K)
    l2, gate = use_qk_l2norm_in_kernel, A_log is not None
    logits = dict(SIGMOID=b_scale > 0, B_SCALE=float(b_scale or 1.0))

    dq_p, dk_p, db_p, dG_p = (empty((B, T, H, K), f32, dev) for _ in range(4))
    dv, dw = empty(v.shape, v.dtype, dev), empty(w.shape, w.dtype, dev)
    dM, dT = empty((B, T, H, BT), f32, dev), empty((B, T, H, BT), f32, dev)
    off64 = needs_int64(q, v, dM, saved.h)      # the largest tensors of each shape the two kernels index
    c = config.local_wy
    chunk_bwd_local_wy_kernel[(grid_t, B * H)](
        q, k, b, saved.G, v, w, saved.A, saved.h, saved.R, do, dR, dS_end,
        dq_p, dk_p, db_p, dG_p, dv, dw, dM, dT, saved.q_rstd, saved.k_rstd,
        cu_seqlens, saved.chunk_indices, scale, T, N,
        H=H, HV=HV, K=K, V=V, BT=BT, BK=c.BK or min(BK, 64), BV=c.BV or min(BVp, 64), PREC=prec, L2NORM=l2,
        IS_VARLEN=varlen, OFF64=off64, num_warps=c.num_warps, num_stages=c.num_stages, **logits,
    )

    dq, dk, db = empty(q.shape, q.dtype, dev), empty(k.shape, k.dtype, dev), empty(b.shape, b.dtype, dev)
    dg = empty(g.shape, g.dtype, dev)
    dA_log_part = empty((grid_t * B, H), f32, dev) if gate else None          # every program writes its row
    ddt_part = empty((grid_t * B, H, K), f32, dev) if gate else None
    chunk_bwd_local_pairwise_kernel[(grid_t, B * H)](
        q, k, b, saved.G, dM, dT, dq_p, dk_p, db_p, dG_p, dq, dk, db, dg,
        saved.q_rstd, saved.k_rstd, g if gate else None, A_log, dt_bias, dA_log_part, ddt_part,
        cu_seqlens, saved.chunk_indices, T, N,
        H=H, K=K, BT=BT, BC=BC, BK=BK, EXP_MAX=EXP_MAX, PREC=prec, L2NORM=l2, GATE=gate,
        HAS_DT_BIAS=dt_bias is not None, IS_VARLEN=varlen, OFF64=off64, **logits, **config.pairwise.meta(),
    )
    dA_log = dA_log_part.sum(0).to(A_log.dtype) if gate else None
    ddt_bias = ddt_part.sum(0).reshape(dt_bias.shape).to(dt_bias.dtype) if gate and dt_bias is not None else None
    return dq, dk, dv, dg, db, dw, dA_log, ddt_bias


def chunk_gdn2_bwd(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor, scale: float, initial_state: Tensor | None,
    cu_seqlens: Tensor | None, saved: ChunkForward, do: Tensor, dht: Tensor | None, *,
    use_qk_l2norm_in_kernel: bool = False, A_log: Tensor | None = None, dt_bias: Tensor | None = None,
    b_scale: float = 0.0, config: BackwardConfig | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Gradients of :func:`gdn2.fast.chunk_fwd.chunk_gdn2_fwd` from its intermediates.

    ``q, k, v, g, b, w, initial_state, cu_seqlens`` and the keyword options are the forward's (contiguous;
    g is the raw gate when ``A_log`` is given); ``saved`` is the forward's result with ``save=True``;
    ``do`` [B, T, HV, V] and ``dht`` [N, HV, K, V] (or None) are the incoming gradients. Returns
    ``(dq, dk, dv, dg, db, dw, dh0, dA_log, ddt_bias)`` in the dtypes of their inputs; dh0, dA_log and
    ddt_bias are None where the forward had no such input. With ``b_scale`` > 0 (b and w given as logits),
    db and dw are the gradients of the logits.
    """
    config = config or BackwardConfig()
    do = do.contiguous()
    dht = None if dht is None else dht.contiguous()
    dS_end, dR, dh0 = chunk_bwd_state(saved, do, dht, initial_state, cu_seqlens, config)
    # the state stage's operands are dead from here; when the caller handed over the only reference
    # (recompute), dropping them lowers the peak memory of the local stage
    saved = saved._replace(o=None, Y=None, Qg=None, Kt=None, Aqk=None, U=None, gC=None)
    dq, dk, dv, dg, db, dw, dA_log, ddt_bias = chunk_bwd_local(
        q, k, v, g, b, w, scale, cu_seqlens, saved, do, dR, dS_end, config,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias, b_scale=b_scale,
    )
    if dh0 is not None:
        dh0 = dh0.to(initial_state.dtype)
    return dq, dk, dv, dg, db, dw, dh0, dA_log, ddt_bias
