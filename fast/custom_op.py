"""The Triton forward and backward as ``torch.library`` custom ops, so ``chunk_gdn2`` compiles.

``gdn2::chunk_gdn2_fwd`` runs :func:`gdn2.fast.chunk_fwd.chunk_gdn2_fwd` and returns ``(o,
final_state, saved)``; ``saved`` holds the intermediates of :class:`~gdn2.fast.chunk_fwd.ChunkForward`
when the caller keeps them (``save=True``) and is empty otherwise. ``gdn2::chunk_gdn2_bwd`` takes
the incoming gradients, the forward's inputs and ``saved`` (recomputing the intermediates with the
forward driver when it is empty) and returns the gradients of the differentiable inputs. Both ops
have fake (meta) implementations, so ``torch.compile(fullgraph=True)`` traces through them without
running a kernel; the autograd Function in :mod:`gdn2.fast.chunk` calls them.
"""

import torch
from torch import Tensor

from .chunk_bwd import chunk_gdn2_bwd
from .chunk_fwd import ChunkForward, chunk_gdn2_fwd
from .utils import prepare_chunk_indices

__all__ = ["chunk_gdn2_fwd_op", "chunk_gdn2_bwd_op", "saved_fields"]


def saved_fields(use_qk_l2norm_in_kernel: bool) -> tuple[str, ...]:
    """Names of the ChunkForward intermediates the backward reads, in the order ``saved`` holds them."""
    fields = ("G", "A", "Aqk", "Y", "Qg", "Kt", "R", "h")
    return fields + ("q_rstd", "k_rstd") if use_qk_l2norm_in_kernel else fields


def _n_sequences(q: Tensor, cu_seqlens: Tensor | None) -> int:
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


def _n_slots(q: Tensor, cu_seqlens: Tensor | None, chunk_size: int) -> int:
    B, T = q.shape[0], q.shape[1]
    if cu_seqlens is None:
        return B * (-(-T // chunk_size))
    return T // chunk_size + _n_sequences(q, cu_seqlens)


@torch.library.custom_op("gdn2::chunk_gdn2_fwd", mutates_args=())
def chunk_gdn2_fwd_op(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    A_log: Tensor | None, dt_bias: Tensor | None, initial_state: Tensor | None,
    cu_seqlens: Tensor | None, chunk_indices: Tensor | None,
    scale: float, output_final_state: bool, use_qk_l2norm_in_kernel: bool, chunk_size: int, save: bool,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(o, final_state or an empty [0] tensor, the intermediates named by saved_fields when save)."""
    out = chunk_gdn2_fwd(
        q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias,
        chunk_size=chunk_size, save=save,
    )
    ht = out.final_state if output_final_state else q.new_empty(0, dtype=torch.float32)
    saved = [getattr(out, f) for f in saved_fields(use_qk_l2norm_in_kernel)] if save else []
    return out.o, ht, saved


@chunk_gdn2_fwd_op.register_fake
def _(q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
      scale, output_final_state, use_qk_l2norm_in_kernel, chunk_size, save):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = _n_sequences(q, cu_seqlens)
    f32 = torch.float32
    o = q.new_empty(B, T, HV, V)
    ht = q.new_empty(N, HV, K, V, dtype=f32) if output_final_state else q.new_empty(0, dtype=f32)
    if not save:
        return o, ht, []
    key, mat = (B, T, H, K), (B, T, H, chunk_size)
    saved = [q.new_empty(key, dtype=f32), q.new_empty(mat, dtype=f32), q.new_empty(mat),
             q.new_empty(key), q.new_empty(key), q.new_empty(key), q.new_empty(B, T, HV, V),
             q.new_empty(_n_slots(q, cu_seqlens, chunk_size), HV, K, V, dtype=f32)]
    if use_qk_l2norm_in_kernel:
        saved += [q.new_empty(B, T, H, dtype=f32), q.new_empty(B, T, H, dtype=f32)]
    return o, ht, saved


@torch.library.custom_op("gdn2::chunk_gdn2_bwd", mutates_args=())
def chunk_gdn2_bwd_op(
    do: Tensor, dht: Tensor | None,
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    A_log: Tensor | None, dt_bias: Tensor | None, initial_state: Tensor | None,
    cu_seqlens: Tensor | None, chunk_indices: Tensor | None, saved: list[Tensor],
    scale: float, use_qk_l2norm_in_kernel: bool, chunk_size: int,
) -> list[Tensor]:
    """[dq, dk, dv, dg, db, dw] + [dh0 if initial_state] + [dA_log if A_log] + [ddt_bias if dt_bias]."""
    l2 = use_qk_l2norm_in_kernel
    if cu_seqlens is not None and chunk_indices is None:
        chunk_indices = prepare_chunk_indices(cu_seqlens, chunk_size, q.shape[1])
    if saved:
        fwd = ChunkForward(None, None, **dict(zip(saved_fields(l2), saved)), chunk_indices=chunk_indices)
        grads = chunk_gdn2_bwd(q, k, v, g, b, w, scale, initial_state, cu_seqlens, fwd, do, dht,
                               use_qk_l2norm_in_kernel=l2, A_log=A_log, dt_bias=dt_bias, chunk_size=chunk_size)
    else:
        # recompute: the forward driver again, keeping its intermediates this time; passed inline so the
        # backward holds the only reference and frees what its second stage does not read
        grads = chunk_gdn2_bwd(
            q, k, v, g, b, w, scale, initial_state, cu_seqlens,
            chunk_gdn2_fwd(q, k, v, g, b, w, scale, initial_state, False, cu_seqlens, chunk_indices,
                           use_qk_l2norm_in_kernel=l2, A_log=A_log, dt_bias=dt_bias, chunk_size=chunk_size,
                           save=True),
            do, dht, use_qk_l2norm_in_kernel=l2, A_log=A_log, dt_bias=dt_bias, chunk_size=chunk_size)
    return [x for x in grads if x is not None]


@chunk_gdn2_bwd_op.register_fake
def _(do, dht, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, saved,
      scale, use_qk_l2norm_in_kernel, chunk_size):
    out = [torch.empty_like(x) for x in (q, k, v, g, b, w)]
    return out + [torch.empty_like(x) for x in (initial_state, A_log, dt_bias) if x is not None]
