"""The Triton forward and backward as ``torch.library`` custom ops, so ``chunk_gdn2`` compiles.

``gdn2::chunk_gdn2_fwd`` runs :func:`gdn2.fast.chunk_fwd.chunk_gdn2_fwd` and returns ``(o, final_state,
saved)``; what ``saved`` holds depends on ``keep`` (:data:`KEEP`): nothing (``"inputs"``), the products
of stages (1)-(2) named by :data:`gdn2.fast.chunk_fwd.INTRA` (``"intra"``; ``g_gate`` only with the
in-op gate), those and the products of stage (3) named by :data:`gdn2.fast.chunk_fwd.WY` (``"wy"``; no
``g_gate``, which only stage (3) reads), or every intermediate named by
:data:`gdn2.fast.chunk_fwd.SAVED` (``"all"``).
``gdn2::chunk_gdn2_bwd`` takes the incoming gradients, the forward's inputs, ``saved`` and ``keep``,
reruns the forward stages whose intermediates were not kept, and returns the gradients of the
differentiable inputs. Both ops have fake (meta) implementations, so ``torch.compile(fullgraph=True)``
traces through them without running a kernel.
"""

import torch
import triton
from torch import Tensor

from .chunk_bwd import chunk_gdn2_bwd
from .chunk_fwd import CHUNK_SIZE, INTRA, SAVED, WY, ChunkForward, chunk_gdn2_fwd
from .utils import prepare_chunk_indices

__all__ = ["KEEP", "chunk_gdn2_fwd_op", "chunk_gdn2_bwd_op"]

#: what the forward keeps for the backward, from least memory to least recomputation
KEEP = ("inputs", "intra", "wy", "all")


def _kept_names(keep: str, gate: bool) -> tuple[str, ...]:
    if keep not in KEEP:
        raise ValueError(f"keep must be one of {KEEP}, got {keep!r}")
    if keep == "all":
        return SAVED
    if keep == "intra":
        return INTRA if gate else INTRA[:-1]
    if keep == "wy":
        return INTRA[:-1] + WY
    return ()


def _n_sequences(q: Tensor, cu_seqlens: Tensor | None) -> int:
    return q.shape[0] if cu_seqlens is None else cu_seqlens.shape[0] - 1


@torch.library.custom_op("gdn2::chunk_gdn2_fwd", mutates_args=())
def chunk_gdn2_fwd_op(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    A_log: Tensor | None, dt_bias: Tensor | None, initial_state: Tensor | None,
    cu_seqlens: Tensor | None, chunk_indices: Tensor | None,
    scale: float, output_final_state: bool, use_qk_l2norm_in_kernel: bool, b_scale: float, keep: str,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """(o, final_state or an empty [0] tensor, the intermediates ``keep`` names). b_scale > 0: b and w are
    logits, b = b_scale·σ(b), w = σ(w)."""
    out = chunk_gdn2_fwd(
        q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens, chunk_indices,
        use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias, b_scale=b_scale,
        save={"all": True, "wy": "wy"}.get(keep, False),
    )
    ht = out.final_state if output_final_state else q.new_empty(0, dtype=torch.float32)
    return out.o, ht, [getattr(out, f) for f in _kept_names(keep, A_log is not None)]


@chunk_gdn2_fwd_op.register_fake
def _(q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
      scale, output_final_state, use_qk_l2norm_in_kernel, b_scale, keep):
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    N = _n_sequences(q, cu_seqlens)
    f32 = torch.float32
    o = q.new_empty(B, T, HV, V)
    ht = q.new_empty(N, HV, K, V, dtype=f32) if output_final_state else q.new_empty(0, dtype=f32)
    C = CHUNK_SIZE
    n_slots = B * triton.cdiv(T, C) if cu_seqlens is None else T // C + N
    shapes = {"G": ((B, T, H, K), f32), "A": ((B, T, H, C), f32), "Aqk": ((B, T, H, C), q.dtype),
              "Y": ((B, T, H, K), q.dtype), "Qg": ((B, T, H, K), q.dtype), "Kt": ((B, T, H, K), q.dtype),
              "U": ((B, T, HV, V), q.dtype), "R": ((B, T, HV, V), q.dtype), "gC": ((n_slots, H, K), f32),
              "h": ((n_slots, HV, K, V), f32),
              "q_rstd": ((B, T, H), f32), "k_rstd": ((B, T, H), f32), "g_gate": ((B, T, H, K), f32)}
    return o, ht, [q.new_empty(*shapes[f][0], dtype=shapes[f][1]) for f in _kept_names(keep, A_log is not None)]


@torch.library.custom_op("gdn2::chunk_gdn2_bwd", mutates_args=())
def chunk_gdn2_bwd_op(
    do: Tensor, dht: Tensor | None,
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
    A_log: Tensor | None, dt_bias: Tensor | None, initial_state: Tensor | None,
    cu_seqlens: Tensor | None, chunk_indices: Tensor | None, saved: list[Tensor],
    scale: float, use_qk_l2norm_in_kernel: bool, b_scale: float, keep: str,
) -> list[Tensor]:
    """[dq, dk, dv, dg, db, dw] + [dh0 if initial_state] + [dA_log if A_log] + [ddt_bias if dt_bias]."""
    l2 = use_qk_l2norm_in_kernel
    if cu_seqlens is not None:      # the table the forward used (a caller's was checked against it there)
        chunk_indices = prepare_chunk_indices(cu_seqlens, CHUNK_SIZE, q.shape[1])
    kept = ChunkForward(None, None, **dict(zip(_kept_names(keep, A_log is not None), saved)),
                        chunk_indices=chunk_indices)
    # a rerun forward is passed inline, so the backward holds its only reference and frees what its second
    # stage does not read; it starts at stage (3) when the products of (1)-(2) were kept, at the state pass
    # when those of (3) were too
    grads = chunk_gdn2_bwd(
        q, k, v, g, b, w, scale, initial_state, cu_seqlens,
        kept if keep == "all" else
        chunk_gdn2_fwd(q, k, v, g, b, w, scale, initial_state, False, cu_seqlens, chunk_indices,
                       use_qk_l2norm_in_kernel=l2, A_log=A_log, dt_bias=dt_bias, b_scale=b_scale, save=True,
                       kept=kept if keep in ("intra", "wy") else None, need_o=False, check=False),
        do, dht, use_qk_l2norm_in_kernel=l2, A_log=A_log, dt_bias=dt_bias, b_scale=b_scale)
    return [x for x in grads if x is not None]


@chunk_gdn2_bwd_op.register_fake
def _(do, dht, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, saved,
      scale, use_qk_l2norm_in_kernel, b_scale, keep):
    out = [torch.empty_like(x) for x in (q, k, v, g, b, w)]
    return out + [torch.empty_like(x) for x in (initial_state, A_log, dt_bias) if x is not None]
