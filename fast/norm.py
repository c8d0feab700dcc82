"""The layer's gated output norm in Triton: y = RMSNorm(o) · weight · SiLU(z) over the last axis V.

Reference: :class:`gdn2.norm.GatedRMSNorm`. ``o`` and ``z`` are [..., V] (the layer's [B, T, HV, V], one
row per token and value head), ``weight`` [V] is shared by the heads. Both kernels work on tiles of BR
rows × all V columns, in float32 whatever the inputs' dtype; y, do and dz come back in the dtypes of
o, o and z, dweight in weight's. One launch forward; one launch backward plus one sum of its
per-program partial dweights.

The backward recomputes 1/rms from o, which it loads anyway, instead of saving it: the reduction is on
chip and costs no bytes, where saving it costs a [rows] float32 write, its read, and a tensor held from
forward to backward.

The inputs are read through their strides, as [rows / H, H, V] with H the size of the next-to-last
axis (the layer's value heads): z, a view of a projection output with a larger token stride (a column
slice of a wider tensor), is read in place, and so are an o or an incoming gradient that are not
contiguous. Only a tensor whose leading axes cannot be viewed that way is copied first.
"""

import contextlib
import functools
import os
from numbers import Real

import torch
import triton
import triton.language as tl
from torch import Tensor

from .config import NormLaunch
from .utils import MAX_HEAD_DIM, empty

__all__ = ["gated_rms_norm", "norm_launch", "gated_rms_norm_fwd_kernel", "gated_rms_norm_bwd_kernel"]

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


# --8<-- [start:gated_rms_norm_fwd_kernel]
@triton.jit(do_not_specialize=["R"])
def gated_rms_norm_fwd_kernel(
    o,                       # [R / H, H, V] in 16 or 32 bits, strides (s_or, s_oh, s_ov)
    z,                       # [R / H, H, V] in 16 or 32 bits, strides (s_zr, s_zh, s_zv)
    weight,                  # [V]
    y,                       # out [R, V] contiguous, in o's dtype
    R,                       # rows
    s_or, s_oh, s_ov, s_zr, s_zh, s_zv,
    eps,
    H: tl.constexpr,         # rows per step of the outer stride (a constant: no 64-bit division per row)
    V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
):
    """y = o · r · weight · z σ(z) with r = 1/sqrt(mean(o²) + eps), for one tile of BR rows.

    Grid: (cdiv(R, BR),). The tile [BR, BV] (BV = V rounded up to a power of two, masked) is loaded once
    and normalised in registers; rows past R and columns past V are masked, and read as 0 so that
    they add nothing to a row's sum of squares. About 10 FLOPs per element (an exponential and a
    division in σ). Bytes per row: o and z read, y written, V elements each (6·V in 16-bit); weight is
    read by every program and stays in L1/L2.
    """
    i_r = tl.program_id(0)
    o_r = i_r.to(tl.int64) * BR + tl.arange(0, BR)
    o_v = tl.arange(0, BV)
    m_r = o_r < R
    m_v = o_v < V
    m_t = m_r[:, None] & m_v[None, :]
    # row r is (r // H, r % H) of the [R / H, H, V] view
    off_o = (o_r // H * s_or + o_r % H * s_oh)[:, None] + o_v[None, :] * s_ov
    off_z = (o_r // H * s_zr + o_r % H * s_zh)[:, None] + o_v[None, :] * s_zv
    b_o = tl.load(o + off_o, mask=m_t, other=0.0).to(tl.float32)
    b_z = tl.load(z + off_z, mask=m_t, other=0.0).to(tl.float32)
    b_w = tl.load(weight + o_v, mask=m_v, other=0.0).to(tl.float32)

    b_r = 1.0 / tl.sqrt(tl.sum(b_o * b_o, 1) / V + eps)                # [BR] 1/rms; eps > 0 keeps it finite
    b_y = (b_o * b_r[:, None]) * b_w[None, :] * (b_z * tl.sigmoid(b_z))
    tl.store(y + o_r[:, None] * V + o_v[None, :], b_y.to(y.dtype.element_ty), mask=m_t)
# --8<-- [end:gated_rms_norm_fwd_kernel]


# --8<-- [start:gated_rms_norm_bwd_kernel]
@triton.jit(do_not_specialize=["R", "n_tiles"])
def gated_rms_norm_bwd_kernel(
    dy,                      # [R / H, H, V] incoming gradient, strides (s_dr, s_dh, s_dv)
    o,                       # [R / H, H, V] strides (s_or, s_oh, s_ov)
    z,                       # [R / H, H, V] strides (s_zr, s_zh, s_zv)
    weight,                  # [V]
    do,                      # out [R, V] contiguous, in o's dtype
    dz,                      # out [R, V] contiguous, in z's dtype
    dw,                      # out [programs, V] float32: this program's part of dweight
    R,
    s_dr, s_dh, s_dv, s_or, s_oh, s_ov, s_zr, s_zh, s_zv,
    eps,
    n_tiles,                 # cdiv(R, BR) row tiles, taken in turn by the grid's programs
    H: tl.constexpr,         # rows per step of the outer stride (as in the forward)
    V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
):
    """do, dz and a partial dweight for the row tiles p, p + programs, … of program p.

    Grid: (programs,). With x̂ = o·r, s = z σ(z) and g = dy ⊙ s (the gradient of x̂ ⊙ weight), per row:
    do = r (g⊙w − x̂ · mean(g⊙w⊙x̂)), dz = dy ⊙ x̂ ⊙ w ⊙ σ(z)(1 + z(1 − σ(z))), and dweight = Σ_rows g⊙x̂,
    accumulated over the program's tiles in a [BR, BV] float32 block and written once as one row of
    ``dw`` (the host sums the rows). r is recomputed from o. About 25 FLOPs per element. Bytes per row:
    dy, o, z read and do, dz written, V elements each (10·V in 16-bit); 4·V per program for ``dw``.
    """
    i_p, n_p = tl.program_id(0), tl.num_programs(0)
    o_v = tl.arange(0, BV)
    m_v = o_v < V
    b_w = tl.load(weight + o_v, mask=m_v, other=0.0).to(tl.float32)
    b_dw = tl.zeros([BR, BV], tl.float32)
    for i in range(0, tl.cdiv(n_tiles - i_p, n_p)):
        i_t = i_p + i * n_p
        o_r = i_t.to(tl.int64) * BR + tl.arange(0, BR)
        m_r = o_r < R
        m_t = m_r[:, None] & m_v[None, :]
        i_o, i_h = o_r // H, o_r % H                                   # row r is (r // H, r % H) of the view
        off_dy = (i_o * s_dr + i_h * s_dh)[:, None] + o_v[None, :] * s_dv
        off_o = (i_o * s_or + i_h * s_oh)[:, None] + o_v[None, :] * s_ov
        off_z = (i_o * s_zr + i_h * s_zh)[:, None] + o_v[None, :] * s_zv
        b_dy = tl.load(dy + off_dy, mask=m_t, other=0.0).to(tl.float32)
        b_o = tl.load(o + off_o, mask=m_t, other=0.0).to(tl.float32)
        b_z = tl.load(z + off_z, mask=m_t, other=0.0).to(tl.float32)

        b_r = 1.0 / tl.sqrt(tl.sum(b_o * b_o, 1) / V + eps)            # [BR] the forward's 1/rms, recomputed
        b_x = b_o * b_r[:, None]                                        # x̂ = o·r
        b_sig = tl.sigmoid(b_z)
        b_g = b_dy * (b_z * b_sig)                                      # dL/d(x̂ ⊙ w)
        b_dw += b_g * b_x                                               # masked lanes are 0: they add nothing
        b_gw = b_g * b_w[None, :]                                       # dL/dx̂
        b_do = b_r[:, None] * (b_gw - b_x * (tl.sum(b_gw * b_x, 1) / V)[:, None])
        b_dz = b_dy * b_x * b_w[None, :] * b_sig * (1.0 + b_z * (1.0 - b_sig))
        off_out = o_r[:, None] * V + o_v[None, :]
        tl.store(do + off_out, b_do.to(do.dtype.element_ty), mask=m_t)
        tl.store(dz + off_out, b_dz.to(dz.dtype.element_ty), mask=m_t)
    tl.store(dw + i_p * V + o_v, tl.sum(b_dw, 0), mask=m_v)
# --8<-- [end:gated_rms_norm_bwd_kernel]


def norm_launch(V: int) -> NormLaunch:
    """The launch for rows of V elements: tiles of about 2048 elements (BR = 2048 / BV rows, BV = V
    rounded up to a power of two), 4 warps, and in the backward 8 programs per SM, each taking every
    (8·SMs)-th tile in turn, so that few partial dweight rows are summed."""
    return NormLaunch(BR=max(1, 2048 // triton.next_power_of_2(V)))


@functools.cache
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def _programs(device: torch.device, n_tiles: int, per_sm: int) -> int:
    """Backward programs: per_sm per SM (4 "SMs" for the interpreter's CPU), no more than tiles."""
    n_sm = 4 if device.type != "cuda" else _sm_count(device.index if device.index is not None
                                                     else torch.cuda.current_device())
    return max(1, min(n_tiles, per_sm * n_sm))


def _rows(x: Tensor) -> Tensor:
    """x [..., V] viewed as [rows / H, H, V] (H: the size of the next-to-last axis, 1 for a vector);
    copied only where its leading axes admit no such view."""
    V = x.shape[-1]
    H = x.shape[-2] if x.dim() > 1 else 1
    try:
        return x.view(-1, H, V)
    except RuntimeError:
        return x.contiguous().view(-1, H, V)


def _device_ctx(x: Tensor):
    return torch.cuda.device(x.device) if x.is_cuda else contextlib.nullcontext()


@torch.library.custom_op("gdn2::gated_rms_norm_fwd", mutates_args=())
def gated_rms_norm_fwd(o: Tensor, z: Tensor, weight: Tensor, eps: float, BR: int, num_warps: int,
                       num_stages: int, programs_per_sm: int) -> Tensor:
    """y [..., V] in o's dtype (contiguous)."""
    V = o.shape[-1]
    R = o.numel() // V
    y = empty(tuple(o.shape), o.dtype, o.device)
    if R == 0:
        return y
    o3, z3 = _rows(o), _rows(z)
    with _device_ctx(o):
        gated_rms_norm_fwd_kernel[(triton.cdiv(R, BR),)](
            o3, z3, weight, y, R, *o3.stride(), *z3.stride(), eps,
            H=o3.shape[1], V=V, BR=BR, BV=triton.next_power_of_2(V), num_warps=num_warps, num_stages=num_stages)
    return y


@gated_rms_norm_fwd.register_fake
def _(o, z, weight, eps, BR, num_warps, num_stages, programs_per_sm):
    return o.new_empty(o.shape)


@torch.library.custom_op("gdn2::gated_rms_norm_bwd", mutates_args=())
def gated_rms_norm_bwd(dy: Tensor, o: Tensor, z: Tensor, weight: Tensor, eps: float, BR: int, num_warps: int,
                       num_stages: int, programs_per_sm: int) -> tuple[Tensor, Tensor, Tensor]:
    """(do in o's dtype, dz in z's dtype, both contiguous; dweight in weight's dtype)."""
    V = o.shape[-1]
    R = o.numel() // V
    do = empty(tuple(o.shape), o.dtype, o.device)
    dz = empty(tuple(z.shape), z.dtype, z.device)
    if R == 0:
        return do, dz, torch.zeros_like(weight)
    n_tiles = triton.cdiv(R, BR)
    programs = _programs(o.device, n_tiles, programs_per_sm)
    dw = empty((programs, V), torch.float32, o.device)
    dy3, o3, z3 = _rows(dy), _rows(o), _rows(z)
    with _device_ctx(o):
        gated_rms_norm_bwd_kernel[(programs,)](
            dy3, o3, z3, weight, do, dz, dw, R, *dy3.stride(), *o3.stride(), *z3.stride(), eps,
            n_tiles, H=o3.shape[1], V=V, BR=BR, BV=triton.next_power_of_2(V), num_warps=num_warps,
            num_stages=num_stages)
    return do, dz, dw.sum(0).to(weight.dtype)


@gated_rms_norm_bwd.register_fake
def _(dy, o, z, weight, eps, BR, num_warps, num_stages, programs_per_sm):
    return o.new_empty(o.shape), z.new_empty(z.shape), weight.new_empty(weight.shape)


def _setup_context(ctx, inputs, output):
    o, z, weight, *launch = inputs
    ctx.save_for_backward(o, z, weight)
    ctx.launch = launch


def _backward(ctx, dy):
    o, z, weight = ctx.saved_tensors
    do, dz, dweight = torch.ops.gdn2.gated_rms_norm_bwd(dy, o, z, weight, *ctx.launch)
    return do, dz, dweight, None, None, None, None, None


torch.library.register_autograd("gdn2::gated_rms_norm_fwd", _backward, setup_context=_setup_context)


def _check(o: object, z: object, weight: object, eps: object, launch: object) -> None:
    for name, x in (("o", o), ("z", z), ("weight", weight)):
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
        if x.dtype not in _DTYPES:
            raise TypeError(f"{name} must be float16, bfloat16 or float32 for the Triton backend, got {x.dtype}")
    if o.dim() < 1 or o.shape[-1] < 1:
        raise ValueError(f"o must have shape [..., V] with V >= 1, got {list(o.shape)}")
    V = o.shape[-1]
    if V > MAX_HEAD_DIM:
        raise ValueError(f"the Triton backend supports V <= {MAX_HEAD_DIM}, got V={V}")
    if z.shape != o.shape:
        raise ValueError(f"z must have o's shape {list(o.shape)}, got {list(z.shape)}")
    if weight.shape != (V,):
        raise ValueError(f"weight must have shape [V] = [{V}], got {list(weight.shape)}")
    if z.device != o.device or weight.device != o.device:
        raise ValueError(f"o, z and weight must be on one device, got {o.device}, {z.device}, {weight.device}")
    if not o.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(f"the Triton backend needs CUDA tensors, got o on {o.device} "
                         "(or set TRITON_INTERPRET=1 before importing gdn2.fast to interpret on the CPU)")
    if isinstance(eps, bool) or not isinstance(eps, Real):
        raise TypeError(f"eps must be a float, got {type(eps).__name__}")
    if not (eps > 0 and eps < float("inf")):
        raise ValueError(f"eps must be positive and finite, got {eps!r}")
    if launch is not None and not isinstance(launch, NormLaunch):
        raise TypeError(f"launch must be a gdn2.fast.config.NormLaunch or None, got {type(launch).__name__}")


def gated_rms_norm(o: Tensor, z: Tensor, weight: Tensor, eps: float, *, launch: NormLaunch | None = None) -> Tensor:
    """RMSNorm(o) · weight · SiLU(z) over the last axis: the forward of :class:`gdn2.norm.GatedRMSNorm`.

    ``o``, ``z`` [..., V] (V <= 256) and ``weight`` [V] in float16, bfloat16 or float32, on one CUDA device
    (or the CPU under Triton's interpreter); ``eps`` > 0. Computed in float32; returns y [..., V] in
    o's dtype. Differentiable in o, z and weight (custom ops ``gdn2::gated_rms_norm_fwd`` / ``_bwd``, so
    ``torch.compile(fullgraph=True)`` traces through). ``z`` and ``o`` are read through their strides (a
    column slice of a wider projection output is not copied). ``launch`` overrides :func:`norm_launch`.

    Cost: one launch forward (6·V bytes per row in 16-bit); one launch and a small sum backward (10·V
    bytes per row). Nothing beyond the inputs is kept for the backward.
    """
    _check(o, z, weight, eps, launch)
    cfg = launch or norm_launch(o.shape[-1])
    BR = cfg.BR or norm_launch(o.shape[-1]).BR
    return torch.ops.gdn2.gated_rms_norm_fwd(o, z, weight, float(eps), BR, cfg.num_warps, cfg.num_stages,
                                             cfg.programs_per_sm)
