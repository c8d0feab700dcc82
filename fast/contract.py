"""The operator contract on the Triton backend's host side: argument checks before a launch.

Both operators take the arguments of the reference (see the docs page "The operator contract") and
check shapes, dtypes and devices on the host here, with the reference's named errors. Values
(finiteness, the sign of g, packed offsets) are checked by the kernels that read them
(:mod:`gdn2.fast.checks`), except packed offsets given on the CPU, which are checked here.
"""

import functools
import math
import os

import torch
from torch import Tensor

from gdn2.ops._contract import check_cu_seqlens_values, check_inputs, empty_output

from .utils import MAX_HEAD_DIM

__all__ = ["validated", "check_triton_inputs", "contiguous", "empty_result"]

_INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_triton_inputs(q: Tensor, v: Tensor) -> None:
    """What the kernels need beyond the contract: 16/32-bit q, k, v, K and V <= 256, GPU tensors
    (or the interpreter), and no bfloat16 under the interpreter, whose tl.dot is wrong on it."""
    if q.dtype not in _DTYPES:
        raise TypeError(f"q, k, v must be float16, bfloat16 or float32 for the Triton backend, got {q.dtype}")
    K, V = q.shape[3], v.shape[3]
    if K > MAX_HEAD_DIM or V > MAX_HEAD_DIM:
        raise ValueError(f"the Triton backend supports K, V <= {MAX_HEAD_DIM}, got K={K}, V={V}")
    if not q.is_cuda and not _INTERPRET:
        raise ValueError(f"the Triton backend needs CUDA tensors, got q on {q.device} "
                         "(or set TRITON_INTERPRET=1 before importing gdn2.fast to interpret on the CPU)")
    if not q.is_cuda and q.dtype == torch.bfloat16:
        raise TypeError("q, k, v in bfloat16 cannot run on Triton's CPU interpreter (its tl.dot is wrong on "
                        "bfloat16 operands); use float32 or float16 there, or a GPU")


def check_chunk_indices(chunk_indices: object, cu_seqlens: Tensor | None, q: Tensor, chunk_size: int) -> None:
    """A caller's chunk table: an int32/int64 tensor [T // chunk_size + N, 2] on q's device, given with
    ``cu_seqlens``. Its values are compared with the offsets' own table on the device, by the forward."""
    if not isinstance(chunk_indices, Tensor):
        raise TypeError(f"chunk_indices must be a tensor or None, got {type(chunk_indices).__name__}")
    if cu_seqlens is None:
        raise ValueError("chunk_indices describes packed sequences: pass cu_seqlens with it")
    if chunk_indices.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"chunk_indices must be int32 or int64, got {chunk_indices.dtype}")
    want = (q.shape[1] // chunk_size + cu_seqlens.numel() - 1, 2)
    if tuple(chunk_indices.shape) != want:
        raise ValueError(f"chunk_indices must have shape [T // {chunk_size} + N, 2] = {list(want)} (from "
                         f"gdn2.fast.utils.prepare_chunk_indices), got {list(chunk_indices.shape)}")
    if chunk_indices.device != q.device:
        raise ValueError(f"chunk_indices must be on q's device {q.device}, got {chunk_indices.device}")


def contiguous(x: Tensor | None) -> Tensor | None:
    return x if x is None or x.is_contiguous() else x.contiguous()


def _plain_call(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias) -> bool:
    """True for the common call that surely passes every check: dense, no gate parameters, tensors of
    the right ranks, shapes, dtypes and device, none empty. A few attribute reads, so decoding does
    not pay for the full contract check; anything else takes the full check."""
    try:
        if cu_seqlens is not None or A_log is not None or dt_bias is not None or (scale is not None and (
                isinstance(scale, bool) or not isinstance(scale, (int, float)) or not -math.inf < scale < math.inf)):
            return False
        s, vs, dev = q.shape, v.shape, q.device
        if (len(s) != 4 or len(vs) != 4 or k.shape != s or g.shape != s or b.shape != s or w.shape != vs
                or vs[:2] != s[:2] or not (s[0] and s[1] and s[2]) or vs[2] % s[2]
                or not 0 < s[3] <= MAX_HEAD_DIM or not 0 < vs[3] <= MAX_HEAD_DIM
                or q.dtype not in _DTYPES or k.dtype != q.dtype or v.dtype != q.dtype
                or not (g.is_floating_point() and b.is_floating_point() and w.is_floating_point())
                or not (q.is_cuda or (_INTERPRET and q.dtype != torch.bfloat16))
                or k.device != dev or v.device != dev or g.device != dev or b.device != dev or w.device != dev):
            return False
        if initial_state is not None:
            return (initial_state.shape == (s[0], vs[2], s[3], vs[3]) and initial_state.device == dev
                    and initial_state.is_floating_point())
        return True
    except AttributeError:
        return False


def empty_result(q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor, A_log: Tensor | None,
                 dt_bias: Tensor | None, initial_state: Tensor | None, output_final_state: bool, N: int):
    """(o, final_state) of a call with no tokens: o is empty (every input gets a gradient of zeros,
    ``gdn2.ops._contract.empty_output``), each final state is its initial state."""
    o = empty_output(v, q, k, g, b, w, A_log, dt_bias, dtype=q.dtype)
    if not output_final_state:
        return o, None
    if initial_state is not None:
        return o, initial_state.to(torch.float32, copy=True)
    return o, torch.zeros(N, v.shape[2], q.shape[3], v.shape[3], dtype=torch.float32, device=q.device)


def validated(fn):
    """Run the contract's checks (no device synchronisation) and the Triton limits before ``fn``.

    The checks come first so that bad input gets the contract's named ValueError/TypeError even where
    the jaxtyping annotations of ``fn`` are enforced. Packed offsets on the CPU are checked here and
    moved to q's device; a call without tokens returns at once.
    """

    @functools.wraps(fn)
    def op(q, k, v, g, b, w, scale=None, initial_state=None, output_final_state=False, cu_seqlens=None, *,
           use_qk_l2norm_in_kernel=False, A_log=None, dt_bias=None, **extras):
        if not isinstance(output_final_state, bool) or not isinstance(use_qk_l2norm_in_kernel, bool):
            name, flag = (("output_final_state", output_final_state) if not isinstance(output_final_state, bool)
                          else ("use_qk_l2norm_in_kernel", use_qk_l2norm_in_kernel))
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
        if not _plain_call(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias):
            dims = check_inputs(q, k, v, g, b, w, scale, initial_state, cu_seqlens, A_log, dt_bias,
                                check_values=False)
            check_triton_inputs(q, v)
            if cu_seqlens is not None and cu_seqlens.device != q.device:
                check_cu_seqlens_values(cu_seqlens, dims.T)
                cu_seqlens = cu_seqlens.to(q.device)
            if dims.B * dims.T == 0 or dims.N == 0:
                return empty_result(q, k, v, g, b, w, A_log, dt_bias, initial_state, output_final_state, dims.N)
        return fn(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens,
                  use_qk_l2norm_in_kernel=use_qk_l2norm_in_kernel, A_log=A_log, dt_bias=dt_bias, **extras)

    return op
