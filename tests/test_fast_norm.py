"""The Triton gated output norm (``gdn2.fast.norm.gated_rms_norm``) against the float64 reference module.

y, do, dz and dweight are compared with :class:`gdn2.norm.GatedRMSNorm` run in float64 on the same
(rounded) inputs, within the Triton rows of the tolerance table: the first column bounds y, the second
do and dz, the third dweight, whose error is measured against the size of its terms (a sum over rows
can cancel). On the CPU the kernels run through Triton's interpreter; the tests marked ``gpu`` run the
layer's shape in bfloat16.
"""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gdn2.fast
from gdn2.norm import GatedRMSNorm

from gdn2_testing import DEVICE, DT, PATH, TOLERANCES, assert_close, gpu

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]

if gdn2.fast.unavailable_reason() is None:
    from gdn2.fast.config import NormLaunch
    from gdn2.fast.norm import _rows, gated_rms_norm


def reference(o, z, weight, eps, dy):
    """(y, do, dz, dweight, Σ_rows |dweight's terms|) of the float64 module on the same values."""
    V = o.shape[-1]
    module = GatedRMSNorm(V, eps=eps).double().to(o.device)
    with torch.no_grad():
        module.weight.copy_(weight.double())
    o64, z64 = (x.detach().double().requires_grad_() for x in (o, z))
    y = module(o64, z64)
    do, dz, dw = torch.autograd.grad((y * dy.double()).sum(), [o64, z64, module.weight])
    with torch.no_grad():
        x_hat = o64 * torch.rsqrt(o64.square().mean(-1, keepdim=True) + eps)
        terms = (dy.double() * torch.nn.functional.silu(z64) * x_hat).abs().reshape(-1, V).sum(0)
    return y.detach(), do, dz, dw, terms


def check(o, z, weight, dy, dtype, eps=1e-5, launch=None, z_leaf=None):
    """The kernels' y and gradients against the reference, within the tolerances of ``dtype``'s row.

    ``z_leaf``: the tensor z is a view of (its gradient is compared). The inputs must come back
    unchanged."""
    given = [x for x in (o, z, weight, dy, z_leaf) if x is not None]
    before = [x.clone() for x in given]
    o_l, w_l = o.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    if z_leaf is None:
        z_in = z_l = z.detach().clone().requires_grad_()
    else:
        z_l = z_leaf.detach().clone().requires_grad_()
        z_in = z_l.as_strided(z.shape, z.stride(), z.storage_offset() - z_leaf.storage_offset())
    y = gated_rms_norm(o_l, z_in, w_l, eps, launch=launch)
    assert y.dtype == o.dtype and y.shape == o.shape
    do, dz, dw = torch.autograd.grad(y, [o_l, z_l, w_l], dy)
    assert do.dtype == o.dtype and dz.dtype == z.dtype and dw.dtype == weight.dtype
    for x, x0 in zip(given, before):
        assert torch.equal(x, x0), "an input was changed"

    y_ref, do_ref, dz_ref, dw_ref, dw_terms = reference(o, z, weight, eps, dy)
    if z_leaf is not None:                       # the leaf's gradient: the view's, zero elsewhere
        dz_leaf = torch.zeros(z_leaf.shape, dtype=torch.float64, device=z.device)
        dz_leaf.as_strided(z.shape, z.stride(), z.storage_offset() - z_leaf.storage_offset()).copy_(dz_ref)
        dz_ref = dz_leaf
    tol = TOLERANCES[PATH[dtype]]
    assert_close("y", y, y_ref, tol[0])
    assert_close("do", do, do_ref, tol[1])
    assert_close("dz", dz, dz_ref, tol[1])
    assert_close("dweight", dw, dw_ref, tol[2], scale=dw_terms)
    return y


def inputs(shape, dtype, weight_dtype=torch.float32, device=DEVICE):
    """o, z, weight, dy: fresh random values (never zeros), rounded to their dtypes."""
    V = shape[-1]
    o = torch.randn(shape, dtype=torch.float64, device=device).to(dtype)
    z = (2 * torch.randn(shape, dtype=torch.float64, device=device)).to(dtype)
    weight = (1 + 0.5 * torch.randn(V, dtype=torch.float64, device=device)).to(weight_dtype)
    dy = torch.randn(shape, dtype=torch.float64, device=device).to(dtype)
    return o, z, weight, dy


@pytest.mark.parametrize("dt, shape, launch", [
    ("fp32", (2, 37, 3, 48), None),                              # V not a power of two, 222 rows: a partial tile
    ("fp16", (2, 37, 3, 48), None),
    ("fp32", (45, 5), dict(BR=4, programs_per_sm=2)),           # 12 tiles on 8 programs: some take two
    ("fp16", (3, 7, 2, 256), dict(BR=8, programs_per_sm=1)),    # the largest V; 4 programs of 2 tiles
    ("bf16", (5, 3, 24), None),                                 # bf16 o, z and weight (no tl.dot: exact here)
])
def test_matches_reference(dt, shape, launch):
    dtype = DT[dt]
    o, z, weight, dy = inputs(shape, dtype, torch.bfloat16 if dtype == torch.bfloat16 else torch.float32)
    check(o, z, weight, dy, dtype, launch=launch and NormLaunch(**launch))


def test_writes_stay_inside_the_outputs(monkeypatch):
    """Every buffer the two kernels write sits between NaN guards of a few tiles; rows of a last partial
    tile and columns past V (V = 20 in tiles of 32) write nothing: the guards stay NaN, the outputs are
    all written and finite."""
    import gdn2.fast.norm

    guarded = []

    def empty(shape, dtype, device):
        n, pad = math.prod(shape), 4096
        buf = torch.full((n + 2 * pad,), float("nan"), dtype=dtype, device=device)
        guarded.append((buf, pad, n))
        return buf[pad:pad + n].view(shape)

    monkeypatch.setattr(gdn2.fast.norm, "empty", empty)
    o, z, weight, dy = inputs((3, 13, 20), torch.float32)
    leaves = [x.requires_grad_() for x in (o, z, weight)]
    y = gated_rms_norm(*leaves, 1e-5, launch=NormLaunch(BR=16, programs_per_sm=1))
    grads = torch.autograd.grad(y, leaves, dy)
    assert len(guarded) == 4                             # y; do, dz and the partial sums of dweight
    for buf, pad, n in guarded:
        assert buf[:pad].isnan().all() and buf[pad + n:].isnan().all(), "a kernel wrote outside its output"
    for out in (y, *grads):
        assert torch.isfinite(out).all()


@pytest.mark.parametrize("dt", ["fp32", "fp16"])
def test_strided_z_is_read_in_place(dt):
    """z as the layer makes it: a column slice of a wider projection output, viewed [B, T, HV, V] (token
    stride W > HV·V). The kernels read it through its strides; the gradient of z lands in the slice."""
    dtype = DT[dt]
    B, T, HV, V, W = 2, 19, 4, 20, 4 * 20 + 13
    o, _, weight, dy = inputs((B, T, HV, V), dtype)
    proj = torch.randn(B, T, W, dtype=torch.float64, device=DEVICE).to(dtype)
    z = proj[..., 7:7 + HV * V].view(B, T, HV, V)
    assert not z.is_contiguous() and z.stride(1) == W
    assert _rows(z).data_ptr() == z.data_ptr() and _rows(z).stride() == (W, V, 1)      # a view, no copy
    check(o, z, weight, dy, dtype, z_leaf=proj)


def test_strided_gradient_and_o():
    """A non-contiguous o (heads transposed) and the stride-0 gradient of y.sum() are read in place."""
    B, T, HV, V = 3, 11, 2, 40
    o, z, weight, _ = inputs((B, HV, T, V), torch.float32)
    o = o.transpose(1, 2)                                           # [B, T, HV, V], not contiguous
    z = z.transpose(1, 2)
    dy = torch.ones(1, dtype=torch.float32, device=DEVICE).expand(B, T, HV, V)
    assert dy.stride() == (0, 0, 0, 0) and not o.is_contiguous()
    check(o, z, weight, dy, torch.float32)


@pytest.mark.parametrize("dt", ["fp32", "fp16"])
def test_zero_row_is_finite(dt):
    """An all-zero row of o: 1/rms = 1/sqrt(eps) stays finite, so y (0 there) and every gradient are finite
    and still match the reference."""
    dtype = DT[dt]
    o, z, weight, dy = inputs((3, 9, 2, 32), dtype)
    o[1, 4, 1] = 0
    y = check(o, z, weight, dy, dtype)
    assert (y[1, 4, 1] == 0).all()


def test_no_rows():
    o = torch.randn(0, 4, 16, device=DEVICE)
    z, weight = torch.randn_like(o), torch.randn(16, device=DEVICE, requires_grad=True)
    y = gated_rms_norm(o.requires_grad_(), z, weight, 1e-5)
    assert y.shape == o.shape
    (dw,) = torch.autograd.grad(y.sum(), [weight])
    assert torch.equal(dw, torch.zeros_like(weight))


@pytest.mark.parametrize("change, error, match", [
    (dict(o=[1.0]), TypeError, "o must be a torch.Tensor"),
    (dict(o=torch.randn(2, 8, dtype=torch.float64)), TypeError, "o must be float16, bfloat16 or float32"),
    (dict(weight=torch.ones(8, dtype=torch.int32)), TypeError, "weight must be float16"),
    (dict(z=torch.randn(2, 9)), ValueError, "z must have o's shape"),
    (dict(weight=torch.ones(9)), ValueError, r"weight must have shape \[V\]"),
    (dict(o=torch.randn(2, 257), z=torch.randn(2, 257), weight=torch.ones(257)), ValueError, "V <= 256"),
    (dict(o=torch.randn(2, 0), z=torch.randn(2, 0), weight=torch.ones(0)), ValueError, "V >= 1"),
    (dict(eps=0.0), ValueError, "eps must be positive"),
    (dict(eps=float("nan")), ValueError, "eps must be positive"),
    (dict(eps=True), TypeError, "eps must be a float"),
    (dict(launch=dict(BR=16)), TypeError, "launch must be"),
])
def test_bad_arguments_are_named(change, error, match):
    args = dict(o=torch.randn(2, 8), z=torch.randn(2, 8), weight=torch.ones(8), eps=1e-5, launch=None)
    args.update(change)
    args = {n: x.to(DEVICE) if isinstance(x, torch.Tensor) else x for n, x in args.items()}
    with pytest.raises(error, match=match):
        gated_rms_norm(args["o"], args["z"], args["weight"], args["eps"], launch=args["launch"])


@pytest.mark.parametrize("fields, match", [(dict(BR=12), "power of two"), (dict(programs_per_sm=0), "positive"),
                                           (dict(num_warps=2.0), "positive int")])
def test_launch_fields_are_validated(fields, match):
    with pytest.raises(ValueError, match=match):
        NormLaunch(**fields)


# ---- torch.compile ---------------------------------------------------------------------------------------
def layer_like(x, w_o, w_z, weight, HV, V):
    """What the layer does around the norm: o from one projection (contiguous), z a column slice of a
    wider one (strided), y projected on; a scalar loss. Its terms are positive: a sum that cancels to
    near zero would turn the products' rounding into an unbounded relative error."""
    B, T, _ = x.shape
    o = torch.tanh(x @ w_o).view(B, T, HV, V)
    z = (x @ w_z)[..., 3:3 + HV * V].view(B, T, HV, V)
    y = gated_rms_norm(o, z, weight, 1e-5)
    return (y.float().square() * torch.linspace(0.5, 1.5, V, device=x.device)).sum()


def compiled_matches_eager(seed, B, T, D, HV, V, dtype) -> None:
    """torch.compile(fullgraph=True) traces through the custom ops (their fake implementations give the
    shapes and strides), and its loss and gradients equal eager's."""
    import torch._dynamo

    torch.manual_seed(seed)
    torch._dynamo.reset()
    dev = DEVICE
    leaves = [torch.randn(B, T, D, device=dev, dtype=dtype), torch.randn(D, HV * V, device=dev, dtype=dtype) / D**0.5,
              torch.randn(D, HV * V + 5, device=dev, dtype=dtype) / D**0.5, 1 + torch.rand(V, device=dev)]
    leaves = [x.requires_grad_() for x in leaves]
    eager = layer_like(*leaves, HV, V)
    g_eager = torch.autograd.grad(eager, leaves)
    loss = torch.compile(layer_like, fullgraph=True)(*leaves, HV, V)
    g_comp = torch.autograd.grad(loss, leaves)
    # the same kernels on the same inputs; only the 16-bit rounding of the ops around them may differ
    tol = 1e-5 if dtype == torch.float32 else TOLERANCES[PATH[dtype]][1]
    assert_close("loss", loss, eager, tol)
    for name, a, e in zip(("x", "w_o", "w_z", "weight"), g_comp, g_eager):
        assert_close(f"d{name}", a, e, tol)


def run_without_test_hooks(call: str) -> None:
    """Run ``call`` (a function of this module) in a fresh interpreter: pytest's jaxtyping hook wraps the
    typed reference's functions in a decorator Dynamo cannot trace, and users' code has no such hook."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_fast_norm as t; {call}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_compile_fullgraph_matches_eager(seeded):
    run_without_test_hooks(f"t.compiled_matches_eager({seeded}, 2, 9, 16, 3, 24, t.torch.float32)")


# ---- the layer's shape on a GPU --------------------------------------------------------------------------
LAYER = (8, 2048, 16, 128)


@pytest.mark.gpu
@gpu
def test_gpu_layer_shape_bf16():
    o, z, weight, dy = inputs(LAYER, torch.bfloat16)
    check(o, z, weight, dy, torch.bfloat16)


@pytest.mark.gpu
@gpu
def test_gpu_layer_shape_strided_z_bf16():
    B, T, HV, V = LAYER
    o, _, weight, dy = inputs(LAYER, torch.bfloat16)
    proj = torch.randn(B, T, HV * V + 64, dtype=torch.bfloat16, device=DEVICE)
    check(o, proj[..., 64:].view(B, T, HV, V), weight, dy, torch.bfloat16, z_leaf=proj)


@pytest.mark.gpu
@gpu
def test_gpu_compile_fullgraph_bf16(seeded):
    run_without_test_hooks(f"t.compiled_matches_eager({seeded}, 2, 1000, 256, 16, 128, t.torch.bfloat16)")
