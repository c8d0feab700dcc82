"""The operator contract (docs page "The operator contract"): argument checks, dtypes and the in-op extras.

Every backend takes ``(q, k, v, g, b, w, scale=None, initial_state=None, output_final_state=False,
cu_seqlens=None, *, extras)`` and returns ``(o, final_state)``. This module turns bad input into a
``ValueError`` (``TypeError`` for dtypes) that names the argument, what it got and what was
expected, and applies the keyword-only extras that backends share: the in-op L2 norm of q and k and
the in-op gate ``g = -exp(A_log) * softplus(g_raw + dt_bias)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["Dims", "check_inputs", "check_cu_seqlens", "check_packed_offsets", "check_cu_seqlens_values",
           "check_finite", "check_log_decay", "compute_dtype", "l2norm", "gate_from_raw", "erase_gate_scale",
           "gates_from_logits", "split_sequences", "empty_output"]


@dataclass(frozen=True)
class Dims:
    """Sizes of one call, in the symbols of the notation page."""

    B: int
    T: int
    H: int
    HV: int
    K: int
    V: int
    N: int  # number of sequences: B, or len(cu_seqlens) - 1 when packed

    @property
    def G(self) -> int:
        """Value heads per key head (GVA group size)."""
        return self.HV // self.H


def _shape(x: Tensor) -> str:
    return "[" + ", ".join(str(s) for s in x.shape) + "]"


def _check_tensor(name: str, x: object, rank: int, float_only: bool = True) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if float_only and not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype (float16, bfloat16, float32, float64), got {x.dtype}")
    if x.dim() != rank:
        raise ValueError(f"{name} must have rank {rank}, got shape {_shape(x)}")
    return x


def check_inputs(
    q: object,
    k: object,
    v: object,
    g: object,
    b: object,
    w: object,
    scale: object,
    initial_state: object,
    cu_seqlens: object,
    A_log: object = None,
    dt_bias: object = None,
    check_values: bool = True,
) -> Dims:
    """Validate one call against the contract and return its sizes.

    Arguments are typed ``object`` on purpose: this function is the type check, and its errors name
    the argument, what it got and what was expected.

    ``check_values`` also inspects tensor contents (cu_seqlens from 0 to T without decreasing, g <= 0
    and not NaN, every other input finite); that costs a device synchronisation, so the Triton backend
    checks values inside its kernels instead (``gdn2.fast.checks``). With ``A_log`` the raw g may be any
    value: the op checks the gate's result (:func:`check_log_decay`).
    """
    _check_tensor("q", q, 4)
    B, T, H, K = q.shape
    for name, x in (("k", k), ("g", g), ("b", b)):
        _check_tensor(name, x, 4)
        if x.shape != q.shape:
            raise ValueError(f"{name} must have the shape of q [B, T, H, K] = {_shape(q)}, got {_shape(x)}")
    _check_tensor("v", v, 4)
    if v.shape[:2] != q.shape[:2]:
        raise ValueError(
            f"v must have shape [B, T, HV, V] with B, T = {B}, {T} as in q, got {_shape(v)}"
        )
    HV, V = v.shape[2], v.shape[3]
    if min(H, K, V) < 1:
        raise ValueError(f"H, K and V must be positive, got H={H}, K={K}, V={V}")
    if HV % H != 0:
        raise ValueError(f"v has HV = {HV} value heads, which must be a multiple of H = {H} key heads (GVA)")
    _check_tensor("w", w, 4)
    if w.shape != v.shape:
        raise ValueError(f"w must have the shape of v [B, T, HV, V] = {_shape(v)}, got {_shape(w)}")
    if k.dtype != q.dtype or v.dtype != q.dtype:
        raise TypeError(f"q, k and v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    device = q.device
    for name, x in (("k", k), ("v", v), ("g", g), ("b", b), ("w", w)):
        if x.device != device:
            raise ValueError(f"{name} is on {x.device}, expected q's device {device}")
    if scale is not None:
        if isinstance(scale, bool) or not isinstance(scale, Real):
            raise TypeError(f"scale must be a real number or None, got {type(scale).__name__}")
        if not math.isfinite(scale):
            raise ValueError(f"scale must be finite, got {scale}")

    N = B
    if cu_seqlens is not None:
        N = check_cu_seqlens(cu_seqlens, T, check_values=False)
        if B != 1:
            raise ValueError(f"cu_seqlens requires B == 1 (sequences packed along T), got q of shape {_shape(q)}")
        if cu_seqlens.device != device and cu_seqlens.device.type != "cpu":
            raise ValueError(f"cu_seqlens is on {cu_seqlens.device}, expected q's device {device} or the CPU")
        if check_values:
            check_cu_seqlens_values(cu_seqlens, T)
    if initial_state is not None:
        _check_tensor("initial_state", initial_state, 4)
        if tuple(initial_state.shape) != (N, HV, K, V):
            raise ValueError(
                f"initial_state must have shape [N, HV, K, V] = [{N}, {HV}, {K}, {V}], got {_shape(initial_state)}"
            )
        if initial_state.device != device:
            raise ValueError(f"initial_state is on {initial_state.device}, expected q's device {device}")
    if dt_bias is not None and A_log is None:
        raise ValueError("dt_bias was given without A_log: the in-op gate needs A_log")
    if A_log is not None:
        _check_tensor("A_log", A_log, 1)
        if A_log.shape[0] != H:
            raise ValueError(f"A_log must have shape [H] = [{H}], got {_shape(A_log)}")
        if dt_bias is not None:
            if not isinstance(dt_bias, Tensor) or not dt_bias.is_floating_point():
                raise TypeError("dt_bias must be a floating torch.Tensor")
            if dt_bias.numel() != H * K or dt_bias.dim() not in (1, 2):
                raise ValueError(f"dt_bias must have shape [H*K] = [{H * K}] or [H, K], got {_shape(dt_bias)}")
    if check_values:
        for name, x in (("q", q), ("k", k), ("v", v), ("b", b), ("w", w), ("initial_state", initial_state)):
            if x is not None:
                check_finite(name, x)
        if A_log is None:
            check_log_decay(g)
    return Dims(B=B, T=T, H=H, HV=HV, K=K, V=V, N=N)


def check_cu_seqlens(cu_seqlens: object, T: int, check_values: bool = True) -> int:
    """The packed offsets' contract on their own: an int32/int64 tensor [N + 1], N >= 1, and (with
    ``check_values``, a host read) from 0 to T without decreasing. Returns N."""
    _check_tensor("cu_seqlens", cu_seqlens, 1, float_only=False)
    if cu_seqlens.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"cu_seqlens must be int32 or int64, got {cu_seqlens.dtype}")
    if cu_seqlens.numel() < 2:
        raise ValueError(f"cu_seqlens must hold N+1 >= 2 offsets, got shape {_shape(cu_seqlens)}")
    if check_values:
        check_cu_seqlens_values(cu_seqlens, T)
    return cu_seqlens.numel() - 1


def check_packed_offsets(cu_seqlens: object, T: int) -> int:
    """:func:`check_cu_seqlens` for the layers and the model, its values read on the host except while
    compiling or capturing a CUDA graph (where a host read is not allowed; the operator flags bad
    values then). Returns N."""
    capturing = isinstance(cu_seqlens, Tensor) and cu_seqlens.is_cuda and torch.cuda.is_current_stream_capturing()
    return check_cu_seqlens(cu_seqlens, T, check_values=not torch.compiler.is_compiling() and not capturing)


def check_cu_seqlens_values(cu_seqlens: Tensor, T: int) -> None:
    """ValueError unless the packed offsets run from 0 to T without decreasing (reads them on the host)."""
    cs = cu_seqlens.tolist()
    if cs[0] != 0 or cs[-1] != T or any(a > c for a, c in zip(cs[:-1], cs[1:])):
        raise ValueError(f"cu_seqlens must be non-decreasing from 0 to T = {T}, got {cs if len(cs) <= 16 else cs[:16]}")


def _first(mask: Tensor) -> list[int]:
    return mask.nonzero()[0].tolist()


def check_finite(name: str, x: Tensor) -> None:
    """ValueError naming ``name`` and the first position if x holds a NaN or an infinity."""
    bad = ~torch.isfinite(x)
    if bad.any():
        raise ValueError(f"{name} holds non-finite values (NaN or ±inf): {int(bad.sum())} of them, the first at "
                         f"index {_first(bad)} (= {x[tuple(_first(bad))].item()})")


def check_log_decay(g: Tensor) -> None:
    """ValueError unless every g <= 0 and none is NaN (g = −inf, a full reset of the state, is allowed)."""
    bad = ~(g <= 0)
    if bad.any():
        raise ValueError(f"g is a log-decay and must be <= 0 and not NaN everywhere (after the in-op gate, if any), "
                         f"got {g[tuple(_first(bad))].item()} at index {_first(bad)}")


def compute_dtype(x: Tensor) -> torch.dtype:
    """float64 stays float64 (the ground truth); every other dtype is computed in float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def l2norm(x: Tensor, eps: float = 1e-6) -> Tensor:
    """x / sqrt(sum(x^2) + eps) over the last axis, computed in x's compute dtype."""
    xf = x.to(compute_dtype(x))
    return (xf * torch.rsqrt((xf * xf).sum(-1, keepdim=True) + eps)).to(x.dtype)


def gate_from_raw(g_raw: Tensor, A_log: Tensor, dt_bias: Tensor | None) -> Tensor:
    """The in-op gate g = -exp(A_log) * softplus(g_raw + dt_bias), in float32 (float64 stays)."""
    dt = compute_dtype(g_raw)
    H, K = g_raw.shape[-2], g_raw.shape[-1]
    x = g_raw.to(dt)
    if dt_bias is not None:
        x = x + dt_bias.to(dt).reshape(H, K)
    return -torch.exp(A_log.to(dt)).reshape(H, 1) * F.softplus(x)


def check_recompute(recompute: object) -> bool | str:
    """``recompute`` of the Triton operator (and of the layers that pass it on): True, False, "partial" or
    "states"."""
    if not (isinstance(recompute, bool) or (isinstance(recompute, str) and recompute in ("partial", "states"))):
        raise ValueError(f"recompute must be True, False, 'partial' or 'states', got {recompute!r}")
    return recompute


def erase_gate_scale(use_gate_sigmoid_in_kernel: object, allow_neg_eigval: object) -> float | None:
    """The scale s of the erase gate b = s·σ(b_logit) (2 with negative eigenvalues), or None when b and w
    are gates already; named errors for anything else."""
    flags = (("use_gate_sigmoid_in_kernel", use_gate_sigmoid_in_kernel), ("allow_neg_eigval", allow_neg_eigval))
    for name, flag in flags:
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if allow_neg_eigval and not use_gate_sigmoid_in_kernel:
        raise ValueError("allow_neg_eigval applies to gates given as logits: set use_gate_sigmoid_in_kernel=True "
                         "(or pass b in [0, 2] directly)")
    if not use_gate_sigmoid_in_kernel:
        return None
    return 2.0 if allow_neg_eigval else 1.0


def gates_from_logits(b: Tensor, w: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """The in-op gate activations, in the compute dtype: b = scale·σ(b_logit), w = σ(w_logit)."""
    dt = compute_dtype(b)
    return scale * torch.sigmoid(b.to(dt)), torch.sigmoid(w.to(dt))


def split_sequences(x: Tensor, cu_seqlens: Tensor | None) -> list[Tensor]:
    """[B, T, ...] -> list of [T_i, ...], one per sequence (packed input split at cu_seqlens)."""
    if cu_seqlens is None:
        return list(x.unbind(0))
    bounds = cu_seqlens.tolist()
    return [x[0, s:e] for s, e in zip(bounds[:-1], bounds[1:])]


def empty_output(v: Tensor, *inputs: Tensor | None, dtype: torch.dtype) -> Tensor:
    """o of a call without tokens: v's shape (no elements) in ``dtype``, computed from v and from every
    other input that requires a gradient, so that each gets a gradient of zeros, as in a call with
    tokens, and not none: data-parallel training (DDP) expects a gradient of every parameter on every
    rank, and a batch that is all padding reaches the op as a call without tokens."""
    o = (v * 0).to(dtype)
    for x in inputs:
        if x is not None and x.requires_grad:
            o = o + x.sum().to(dtype) * 0
    return o
