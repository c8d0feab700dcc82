"""The Triton backend's chunkwise operator ``chunk_gdn2`` and its autograd Function.

``forward`` runs the forward driver (:mod:`gdn2.fast.chunk_fwd`) through a custom op; the backward
(:mod:`gdn2.fast.chunk_bwd`) reruns the forward stages whose intermediates were not kept. By default
(``recompute="partial"``) the forward keeps the products of stages (1)-(2) (6C + 8 bytes per token and
head, 4K more with the in-op gate) and the backward reruns stages (3)-(5) only.
"""

from numbers import Real

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from gdn2.ops._contract import check_recompute, erase_gate_scale

from . import custom_op  # noqa: F401  (registers gdn2::chunk_gdn2_fwd / _bwd)
from .chunk_fwd import CHUNK_SIZE
from .contract import check_chunk_indices, contiguous, validated

__all__ = ["chunk_gdn2", "ChunkGDN2Function", "RECOMPUTE"]

#: ``recompute`` value → what the forward keeps for the backward (``custom_op.KEEP``)
RECOMPUTE = {True: "inputs", "partial": "intra", "states": "wy", False: "all"}


class ChunkGDN2Function(torch.autograd.Function):
    """Autograd wrapper of the two custom ops, so the Function traces under ``torch.compile(fullgraph=True)``.

    ``keep`` (``custom_op.KEEP``) names what the forward keeps: ``"inputs"`` (the backward reruns the
    whole forward), ``"intra"`` (it reruns stages (3)-(5)), ``"wy"`` (it reruns the state pass (4)) or
    ``"all"`` (it reruns nothing).
    """

    @staticmethod
    def forward(ctx, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
                scale, output_final_state, use_qk_l2norm_in_kernel, b_scale, keep):
        o, final_state, saved = torch.ops.gdn2.chunk_gdn2_fwd(
            q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
            scale, output_final_state, use_qk_l2norm_in_kernel, b_scale, keep,
        )
        ctx.save_for_backward(q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, *saved)
        ctx.scale = scale
        ctx.use_qk_l2norm_in_kernel = use_qk_l2norm_in_kernel
        ctx.b_scale = b_scale
        ctx.keep = keep
        return o, final_state if output_final_state else None

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, *saved = ctx.saved_tensors
        grads = torch.ops.gdn2.chunk_gdn2_bwd(
            do, dht, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, saved,
            ctx.scale, ctx.use_qk_l2norm_in_kernel, ctx.b_scale, ctx.keep,
        )
        dq, dk, dv, dg, db, dw = grads[:6]
        # the optional gradients follow in this order, each present only with its input (indexing,
        # not list.pop: Dynamo traces the starred rest as a tuple)
        i = 6
        dh0 = dA_log = ddt_bias = None
        if initial_state is not None:
            dh0, i = grads[i], i + 1
        if A_log is not None:
            dA_log, i = grads[i], i + 1
        if dt_bias is not None:
            ddt_bias = grads[i]
        return (dq, dk, dv, dg, db, dw, dA_log, ddt_bias, dh0) + (None,) * 7


@validated
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
    chunk_size: int = CHUNK_SIZE,
    chunk_indices: Integer[Tensor, "NC 2"] | None = None,
    recompute: bool | str = "partial",
    use_gate_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Chunkwise Gated DeltaNet-2 in Triton: the contract of :func:`gdn2.ops.chunk_gdn2`.

    ``chunk_size`` must be 64, the Triton backend's one chunk size. ``chunk_indices`` (optional, with
    ``cu_seqlens``) must be ``gdn2.fast.utils.prepare_chunk_indices(cu_seqlens, 64, T)``: the op builds and
    caches that table itself and computes with it; a table passed otherwise is compared with it on the
    device. The call never synchronises with the host (bad values are raised as gdn2.fast.checks
    describes).
    ``use_gate_sigmoid_in_kernel`` takes b and w as logits and applies σ (2σ for b with
    ``allow_neg_eigval``) inside the kernels, gradient included.
    ``recompute`` trades memory for the backward's time: ``True`` keeps only the inputs and the backward
    reruns the whole forward; ``"partial"`` (the default) keeps A, A_qk, 1/‖q‖ and 1/‖k‖ (and the in-op
    gate's g) and the backward reruns stages (3)-(5) only; ``"states"`` keeps every intermediate but the
    state pass's (the chunk states and R; the gate's g is then not needed) and the backward reruns that
    pass only; ``False`` keeps every intermediate. A call autograd does not record keeps nothing.
    Cost: four launches forward, three backward, plus the forward's last two (``"partial"``), its last
    one (``"states"``) or all four (``True``) again.
    """
    if isinstance(chunk_size, bool) or chunk_size != CHUNK_SIZE:
        raise ValueError(f"chunk_size must be {CHUNK_SIZE} for the Triton backend, got {chunk_size!r}")
    check_recompute(recompute)
    if chunk_indices is not None:
        check_chunk_indices(chunk_indices, cu_seqlens, q, CHUNK_SIZE)
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    b_scale = erase_gate_scale(use_gate_sigmoid_in_kernel, allow_neg_eigval) or 0.0
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(-1)
    q, k, v, g, b, w, A_log, dt_bias, initial_state = map(
        contiguous, (q, k, v, g, b, w, A_log, dt_bias, initial_state))
    # a call autograd does not record has no backward to keep anything for: it runs the forward that
    # writes no intermediates (inference under "states" or False would otherwise write them)
    recorded = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (q, k, v, g, b, w, A_log, dt_bias, initial_state))
    return ChunkGDN2Function.apply(
        q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
        scale, bool(output_final_state), bool(use_qk_l2norm_in_kernel), b_scale,
        RECOMPUTE[recompute] if recorded else "inputs",
    )
