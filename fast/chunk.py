"""The Triton backend's chunkwise operator ``chunk_gdn2`` (SPEC §3, §5) and its autograd Function.

The Function is small on purpose: ``forward`` runs :func:`gdn2.fast.chunk_fwd.chunk_gdn2_fwd`
and saves the inputs; the backward recomputes the intermediates it needs with that driver
(``save=True``), so nothing chunk-sized stays alive between forward and backward.
"""

import functools
import os

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from gdn2.ops._contract import check_inputs

from . import custom_op  # noqa: F401  (registers gdn2::chunk_gdn2_fwd / _bwd)
from .utils import MAX_HEAD_DIM

__all__ = ["chunk_gdn2", "ChunkGDN2Function", "validated"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class ChunkGDN2Function(torch.autograd.Function):
    """Autograd wrapper: Triton forward, Triton backward (``fast/chunk_bwd.py``), both as custom ops
    (``fast/custom_op.py``) so the Function traces under ``torch.compile(fullgraph=True)``.

    ``recompute=True`` saves only the inputs and reruns the forward driver in the backward;
    ``recompute=False`` keeps the forward's intermediates (more memory, one forward pass less).
    """

    @staticmethod
    def forward(ctx, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
                scale, output_final_state, use_qk_l2norm_in_kernel, chunk_size, recompute):
        o, final_state, saved = torch.ops.gdn2.chunk_gdn2_fwd(
            q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
            scale, output_final_state, use_qk_l2norm_in_kernel, chunk_size, not recompute,
        )
        ctx.save_for_backward(q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, *saved)
        ctx.scale = scale
        ctx.use_qk_l2norm_in_kernel = use_qk_l2norm_in_kernel
        ctx.chunk_size = chunk_size
        return o, final_state if output_final_state else None

    @staticmethod
    def backward(ctx, do, dht):
        q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, *saved = ctx.saved_tensors
        grads = torch.ops.gdn2.chunk_gdn2_bwd(
            do, dht, q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices, saved,
            ctx.scale, ctx.use_qk_l2norm_in_kernel, ctx.chunk_size,
        )
        dq, dk, dv, dg, db, dw = grads[:6]
        # the optional gradients follow in this order, each present only with its input (indexing,
        # not list.pop: Dynamo of torch 2.11 traces the starred rest as a tuple)
        i = 6
        dh0 = dA_log = ddt_bias = None
        if initial_state is not None:
            dh0, i = grads[i], i + 1
        if A_log is not None:
            dA_log, i = grads[i], i + 1
        if dt_bias is not None:
            ddt_bias = grads[i]
        return (dq, dk, dv, dg, db, dw, dA_log, ddt_bias, dh0) + (None,) * 7


def check_triton_inputs(q: Tensor, v: Tensor) -> None:
    """What the Triton kernels need beyond SPEC §5: 16/32-bit q, k, v, K and V <= 256, GPU tensors."""
    if q.dtype not in _DTYPES:
        raise TypeError(f"q, k, v must be float16, bfloat16 or float32 for the Triton backend, got {q.dtype}")
    K, V = q.shape[3], v.shape[3]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(f"the Triton backend supports K, V <= {MAX_HEAD_DIM}, got K={K}, V={V}")
    if not q.is_cuda and not _INTERPRET:
        raise ValueError(f"the Triton backend needs CUDA tensors, got q on {q.device} "
                         "(or set TRITON_INTERPRET=1 before importing gdn2.fast to interpret on the CPU)")


def contiguous(x: Tensor | None) -> Tensor | None:
    return x if x is None or x.is_contiguous() else x.contiguous()


def _plain_call(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias) -> bool:
    """True for the common call that surely passes every check: dense, no gate parameters, tensors
    of the right ranks, shapes, dtypes and device. A few attribute reads (about 2 µs), so decoding
    does not pay for the full contract check (about 9 µs); anything else takes the full check."""
    try:
        if cu_seqlens is not None or A_log is not None or dt_bias is not None or (scale is not None and (
                isinstance(scale, bool) or not isinstance(scale, (int, float)))):
            return False
        s, vs, dev = q.shape, v.shape, q.device
        if (len(s) != 4 or len(vs) != 4 or k.shape != s or g.shape != s or b.shape != s or w.shape != vs
                or vs[:2] != s[:2] or vs[2] % s[2] or not 0 < s[3] <= MAX_HEAD_DIM or not 0 < vs[3] <= MAX_HEAD_DIM
                or q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype
                or not (g.is_floating_point() and b.is_floating_point() and w.is_floating_point())
                or not (q.is_cuda or _INTERPRET)
                or k.device != dev or v.device != dev or g.device != dev or b.device != dev or w.device != dev):
            return False
        if initial_state is not None:
            return (initial_state.shape == (s[0], vs[2], s[3], vs[3]) and initial_state.device == dev
                    and initial_state.is_floating_point())
        return True
    except AttributeError:
        return False


def validated(fn):
    """Run the SPEC §5 checks (no device sync) and the Triton limits before ``fn`` is entered.

    The checks come first so that bad input gets the contract's named ValueError/TypeError even
    where the jaxtyping annotations of ``fn`` are enforced (the test suite's import hook).
    """

    @functools.wraps(fn)
    def op(q, k, v, g, b, w, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, *,
           use_qk_l2norm_in_kernel=False, A_log=None, dt_bias=None, **extras):
        if not _plain_call(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias):
            check_inputs(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias, check_values=False)
            check_triton_inputs(q, v)
        return fn(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens,
                  use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias, **extras)

    return op


@validated
def chunk_gdn2(
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
    chunk_size: int = 64,
    chunk_indices: Integer[Tensor, "NC 2"] | None = None,
    recompute: bool = True,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Chunkwise Gated DeltaNet-2 in Triton: same contract as :func:`gdn2.ops.chunk_gdn2` (SPEC §5).

    ``chunk_size`` is 16, 32 or 64. With ``cu_seqlens``, pass ``chunk_indices =
    gdn2.fast.utils.prepare_chunk_indices(cu_seqlens, chunk_size, T)`` computed once per batch to
    skip a few small launches; either way the call never synchronises with the host.
    Cost: two kernel launches; about 4·C·K + 2·C·V + 6·K·V FLOPs per token and value head, and
    about 3× the bytes of reading the inputs and writing o once (see ``benchmarks/NOTES.md``).
    """
    if isinstance(chunk_size, bool) or chunk_size not in (16, 32, 64):
        raise ValueError(f"chunk_size must be 16, 32 or 64 for the Triton backend, got {chunk_size!r}")
    scale = q.shape[3] ** -0.5 if scale is None else float(scale)
    if dt_bias is not None:
        dt_bias = dt_bias.reshape(-1)
    q, k, v, g, b, w, A_log, dt_bias, initial_state = map(
        contiguous, (q, k, v, g, b, w, A_log, dt_bias, initial_state))
    o, final_state = ChunkGDN2Function.apply(
        q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens, chunk_indices,
        scale, bool(output_final_state), bool(use_qk_l2norm_in_kernel), chunk_size, bool(recompute),
    )
    return o, final_state
