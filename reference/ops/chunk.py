"""The chunkwise operator ``chunk_gdn2``: the WY-form forward stages (:mod:`gdn2.ops.chunk_fwd`) with
the hand-written gate-aware backward (:mod:`gdn2.ops.chunk_bwd`), on the [B, T, H, K] layout.

The stage functions are importable from here too (``from gdn2.ops.chunk import chunk_intra_t``).
"""

from numbers import Real

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from . import chunk_fwd
from ._contract import (
    check_log_decay,
    compute_dtype,
    empty_output,
    erase_gate_scale,
    gate_from_raw,
    gates_from_logits,
    l2norm,
)
from ._typing import shape_checked
from .chunk_bwd import chunk_bwd_local, chunk_bwd_state
from .chunk_fwd import *  # noqa: F403  (the stage functions, importable from here too)
from .chunk_fwd import G_FLOOR, chunk_forward, from_chunks, pairwise_decay, to_chunks

__all__ = ["chunk_gdn2", "ChunkGDN2Function", *chunk_fwd.__all__]


# --8<-- [start:ChunkGDN2Function]
class ChunkGDN2Function(torch.autograd.Function):
    """Autograd Function on the chunked layout: forward by the five stages, backward by hand.

    Inputs: q, k, g, b [N, H, NC, C, K]; v, w [N, H, Gr, NC, C, V]; h0 [N, H, Gr, K, V]; scale.
    Outputs: o [N, H, Gr, NC, C, V] and the final state [N, H, Gr, K, V]. The backward recomputes
    the forward intermediates (least memory) instead of saving them.
    """

    @staticmethod
    def forward(ctx, q, k, g, b, v, w, h0, scale):
        o, ht, _ = chunk_forward(q, k, v, g, b, w, scale, h0)
        ctx.save_for_backward(q, k, g, b, v, w, h0)
        ctx.scale = scale
        return o, ht

    @staticmethod
    def backward(ctx, do, dht):
        q, k, g, b, v, w, h0 = ctx.saved_tensors
        scale = ctx.scale
        do = torch.zeros_like(v) if do is None else do.to(v.dtype)
        dht = torch.zeros_like(h0) if dht is None else dht.to(h0.dtype)
        _, _, (G, A, Y, U, S0, R) = chunk_forward(q, k, v, g, b, w, scale, h0)
        gamma = torch.exp(G).to(q.dtype)
        decay = pairwise_decay(G, strict=False).to(q.dtype)
        A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, decay)
        k_tail = torch.exp(G[..., -1:, :] - G).to(k.dtype) * k
        dS_end, dR, dh0 = chunk_bwd_state(scale * gamma * q, k_tail, gamma[..., -1, :], Y, A_qk, do, dht)
        dq, dk, dg, db, dv, dw = chunk_bwd_local(q, k, g, b, v, w, scale, G, A, Y, S0, R, dS_end, dR, do)
        dg = torch.where(g > G_FLOOR, dg, 0.0)                          # G counts g below the floor as the floor
        return dq, dk, dg, db, dv, dw, dh0, None
# --8<-- [end:ChunkGDN2Function]


@shape_checked
def chunk_gdn2(
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
    chunk_size: int = 64,
    use_gate_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Chunkwise Gated DeltaNet-2 with the hand-written gate-aware backward.

    Same contract as :func:`gdn2.ops.recurrent_gdn2`; ``chunk_size`` is any positive integer and T
    need not be a multiple of it. Multiply-adds per chunk: C²·K (T and A_qk, lower halves) + C³/6
    (forward substitution) + C²·K/2 (Y) per key head, and C²·V (U and A_qk R, lower halves) + 3·C·K·V
    (Y S_0, Q_γ S_0, the state update) per value head; memory holds one state per chunk.
    """
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    dt = compute_dtype(q)
    N = B if cu_seqlens is None else cu_seqlens.numel() - 1
    scale = K ** -0.5 if scale is None else float(scale)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if A_log is not None:
        g = gate_from_raw(g, A_log, dt_bias)
        if not torch.compiler.is_compiling():
            check_log_decay(g)
    b_scale = erase_gate_scale(use_gate_sigmoid_in_kernel, allow_neg_eigval)
    if b_scale is not None:
        b, w = gates_from_logits(b, w, b_scale)
    h0 = (torch.zeros(N, HV, K, V, dtype=dt, device=q.device) if initial_state is None
          else initial_state.to(dt))
    if B * T == 0 or N == 0:
        return empty_output(v, q, k, g, b, w, dtype=q.dtype), (h0.clone() if output_final_state else None)
    C = chunk_size
    key_side = [to_chunks(x.to(dt), cu_seqlens, C, H)[:, :, 0] for x in (q, k, g, b)]  # [N, H, NC, C, K]
    val_side = [to_chunks(x.to(dt), cu_seqlens, C, H) for x in (v, w)]                 # [N, H, Gr, NC, C, V]
    o, ht = ChunkGDN2Function.apply(*key_side, *val_side, h0.view(N, H, HV // H, K, V), scale)
    o = from_chunks(o, cu_seqlens, T).to(q.dtype)
    return o, (ht.reshape(N, HV, K, V) if output_final_state else None)
