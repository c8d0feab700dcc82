"""The Triton short convolution (gdn2.fast.conv) against the float64 reference module gdn2.conv.ShortConvolution:
outputs, final conv state and gradients, packed sequences, causality, decoding steps, bad input, torch.compile."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gdn2.fast
from gdn2.conv import ShortConvolution
from gdn2.fast.config import ConvBwdLaunch, ConvLaunch, ConvStateBwdLaunch, ConvStateLaunch, ConvStepLaunch
from gdn2.fast.conv import conv_bwd, conv_fwd, conv_step, short_conv, short_conv_step

from gdn2_testing import DEVICE, DT, PATH, TOLERANCES, assert_close, gpu

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]


def conv_inputs(B: int, T: int, D: int, W: int, *, N: int | None = None, pad: int = 0, device=DEVICE) -> dict:
    """Random float64 inputs (never zeros) from torch's generator: x [B, T, D] (a column slice of a
    [B, T, D + pad] tensor when pad > 0), weight [D, W], initial_state [N, D, W-1]."""
    base = torch.randn(B, T, D + pad, dtype=torch.float64, device=device)
    return {"x": base[..., :D], "weight": torch.randn(D, W, dtype=torch.float64, device=device) / W ** 0.5,
            "initial_state": torch.randn(N or B, D, W - 1, dtype=torch.float64, device=device)}


def reference(x, weight, cu_seqlens=None, initial_state=None, dy=None, dht=None):
    """(y, final state) of the float64 module, and with dy its gradients of x, weight, initial_state
    under the loss Σ y·dy + Σ final_state·dht."""
    D, W = weight.shape
    conv = ShortConvolution(D, W).double().to(x.device)
    with torch.no_grad():
        conv.weight.copy_(weight.double()[:, None])
    x = x.detach().double().requires_grad_()
    h0 = None if initial_state is None else initial_state.detach().double().requires_grad_()
    y, ht = conv(x, h0, cu_seqlens)
    if dy is None:
        return y.detach(), ht.detach()
    loss = (y * dy.double()).sum() + (0 if dht is None else (ht * dht.double()).sum())
    grads = torch.autograd.grad(loss, [x, conv.weight] + ([h0] if h0 is not None else []))
    return y.detach(), ht.detach(), grads[0], grads[1][:, 0], grads[2] if h0 is not None else None


def kernel_run(inputs, dtype, cu_seqlens=None, with_state=True, dy=None, dht=None):
    """short_conv on x and the initial state in ``dtype`` (the weight in float32); with dy, also the gradients."""
    x = inputs["x"].to(dtype).requires_grad_(dy is not None)
    weight = inputs["weight"].float().requires_grad_(dy is not None)
    h0 = inputs["initial_state"].to(dtype).requires_grad_(dy is not None) if with_state else None
    y, ht = short_conv(x, weight, cu_seqlens, h0, output_final_state=True)
    assert y.dtype == dtype and ht.dtype == dtype and y.is_contiguous()
    if dy is None:
        return y, ht
    loss = (y.double() * dy).sum() + (ht.double() * dht).sum()
    grads = torch.autograd.grad(loss, [x, weight] + ([h0] if with_state else []))
    assert grads[0].dtype == dtype and grads[1].dtype == torch.float32
    return y, ht, grads[0], grads[1], grads[2] if with_state else None


def check_against_reference(inputs, dtype, cu_seqlens=None, with_state=True):
    x = inputs["x"].to(dtype)
    exact = {"x": x.double(), "weight": inputs["weight"].float().double(),
             "initial_state": inputs["initial_state"].to(dtype).double() if with_state else None}
    N, D, Wm1 = inputs["initial_state"].shape
    dy = torch.randn(x.shape, dtype=torch.float64, device=x.device)
    dht = torch.randn(N, D, Wm1, dtype=torch.float64, device=x.device)
    got = kernel_run(inputs, dtype, cu_seqlens, with_state, dy, dht)
    want = reference(exact["x"], exact["weight"], cu_seqlens, exact["initial_state"], dy, dht)
    out_tol, grad_tol = TOLERANCES[PATH[dtype]][:2]
    tols = (out_tol, out_tol, grad_tol, grad_tol, grad_tol)
    for name, a, e, tol in zip(("y", "final_state", "dx", "dweight", "dh0"), got, want, tols):
        if e is not None:
            assert_close(name, a, e, tol)


CASES = [
    pytest.param(2, 1, 8, 4, 0, "fp32", id="B2-T1-D8-W4-fp32"),
    pytest.param(2, 45, 24, 3, 0, "fp32", id="B2-T45-D24-W3-fp32"),
    pytest.param(1, 40, 20, 2, 0, "fp16", id="B1-T40-D20-W2-fp16"),
    pytest.param(3, 37, 40, 4, 9, "fp32", id="B3-T37-D40-W4-fp32-strided"),
    pytest.param(2, 20, 12, 4, 5, "fp16", id="B2-T20-D12-W4-fp16-strided"),
    pytest.param(2, 18, 12, 3, 0, "bf16", id="B2-T18-D12-W3-bf16"),
    pytest.param(2, 3, 6, 1, 0, "fp32", id="B2-T3-D6-W1-fp32-no-state"),
]


@pytest.mark.parametrize("B,T,D,W,pad,dtype", CASES)
@pytest.mark.parametrize("with_state", [True, False], ids=["h0", "zeros"])
def test_conv_matches_reference(B, T, D, W, pad, dtype, with_state):
    """y, the final state and the gradients of x, weight and the initial state (through y and the final state)."""
    check_against_reference(conv_inputs(B, T, D, W, pad=pad), DT[dtype], with_state=with_state)


@pytest.mark.parametrize("W,dtype", [(4, "fp32"), (3, "fp16"), (2, "fp32")])
def test_packed_sequences_match_reference(W, dtype):
    """An empty document, a one-token document, a document shorter than W−1, an empty last document, a
    column-slice input and tiles that span documents."""
    cu = torch.tensor([0, 0, 1, 3, 20, 41, 41], device=DEVICE, dtype=torch.int32)
    check_against_reference(conv_inputs(1, 41, 20, W, N=6, pad=4), DT[dtype], cu_seqlens=cu)
    check_against_reference(conv_inputs(1, 41, 20, W, N=6), DT[dtype], cu_seqlens=cu.long(), with_state=False)


@pytest.mark.parametrize("cu_seqlens", [None, [0, 5, 5, 29, 40]], ids=["dense", "packed"])
def test_conv_is_causal(cu_seqlens):
    """Changing tokens from t0 on changes no y before t0, bit for bit; in a packed row, changing one
    document changes no other document."""
    W, T, D = 4, 40, 20
    inputs = conv_inputs(1, T, D, W, N=1 if cu_seqlens is None else 4)
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, device=DEVICE)
    x = inputs["x"].float()
    args = (inputs["weight"].float(), cu, inputs["initial_state"].float())
    y, _ = short_conv(x, *args)
    for t0 in (0, 1, 17, 32, T - 1):
        x2 = x.clone()
        x2[:, t0:] = torch.randn_like(x2[:, t0:])
        y2, _ = short_conv(x2, *args)
        assert torch.equal(y2[:, :t0], y[:, :t0]), t0
        assert not torch.equal(y2[:, t0], y[:, t0]), t0
    if cu is not None:
        x2 = x.clone()
        x2[:, 5:29] = torch.randn_like(x2[:, 5:29])
        y2, _ = short_conv(x2, *args)
        assert torch.equal(y2[:, :5], y[:, :5]) and torch.equal(y2[:, 29:], y[:, 29:])


def test_inputs_are_not_mutated():
    inputs = conv_inputs(1, 30, 12, 4, N=3, pad=3)
    base = inputs["x"]._base.float()
    x = base[..., :12].requires_grad_()
    weight = inputs["weight"].float().requires_grad_()
    h0 = inputs["initial_state"].float().requires_grad_()
    cu = torch.tensor([0, 7, 7, 30], device=DEVICE)
    dy = torch.randn(1, 30, 12, device=DEVICE)
    before = [t.detach().clone() for t in (base, weight, h0, cu, dy)]
    y, ht = short_conv(x, weight, cu, h0, output_final_state=True)
    torch.autograd.grad((y * dy).sum() + ht.sum(), [x, weight, h0])
    for t, b in zip((base, weight, h0, cu, dy), before):
        assert torch.equal(t.detach(), b)


@pytest.mark.parametrize("W", [2, 3, 4])
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_prefill_then_steps_equal_one_call(W, dtype):
    """short_conv on a prefix (final state out), then short_conv_step token by token, gives the y and the
    final state of one call on the whole sequence, bit for bit; the steps also match the reference."""
    B, T, T0, D = 3, 12, 5, 20
    inputs = conv_inputs(B, T, D, W, pad=2)
    x, weight = inputs["x"].to(DT[dtype]), inputs["weight"].float()
    h0 = inputs["initial_state"].to(DT[dtype])
    y_all, ht_all = short_conv(x, weight, None, h0, output_final_state=True)
    y_pre, state = short_conv(x[:, :T0], weight, None, h0, output_final_state=True)
    state_before = state.clone()
    steps = [short_conv_step(x[:, t:t + 1] if t % 2 else x[:, t], weight, state) for t in range(T0, T)]
    assert all(s.shape == (B, 1, D) and s.dtype == x.dtype for s in steps)
    assert not torch.equal(state, state_before)
    assert torch.equal(torch.cat([y_pre] + steps, dim=1), y_all)
    assert torch.equal(state, ht_all)
    y_ref, ht_ref = reference(x.double(), weight.double(), None, h0.double())
    assert_close("y", torch.cat([y_pre] + steps, dim=1), y_ref, TOLERANCES[PATH[DT[dtype]]][0])


def test_step_state_in_other_dtype_and_no_activation():
    """A float32 state with a float16 x: read as x's dtype (as the reference reads it), x stored exactly."""
    N, D, W = 4, 10, 4
    inputs = conv_inputs(N, 1, D, W)
    x, weight, state = inputs["x"].half(), inputs["weight"].float(), inputs["initial_state"].float()
    want, ht = reference(x.double(), weight.double(), None, state.half().double())
    pre = short_conv_step(x, weight, state.clone(), activation=False)
    y = short_conv_step(x, weight, state)
    assert_close("y", y, want, TOLERANCES[PATH[torch.float16]][0])
    assert_close("silu", y, torch.nn.functional.silu(pre.float()), 2e-3)
    assert torch.equal(state[..., -1], x[:, 0].float())
    assert torch.equal(state[..., :-1], inputs["initial_state"][..., 1:].float())


def test_launch_settings_do_not_change_results():
    """Small tiles, backward programs of one and of three tokens (fewer than the W − 1 tokens each walks past
    its own), narrow rows."""
    cu = torch.tensor([0, 3, 3, 29, 50], device=DEVICE)
    inputs = conv_inputs(1, 50, 36, 4, N=4, pad=1)
    x, weight, h0 = inputs["x"].float(), inputs["weight"].float(), inputs["initial_state"].float()
    dy, dht = torch.randn(1, 50, 36, device=DEVICE), torch.randn(4, 36, 3, device=DEVICE)
    y, ht = conv_fwd(x, weight, cu, h0, True, True)
    y2, ht2 = conv_fwd(x, weight, cu, h0, True, True, launch=ConvLaunch(BT=16, BD=16, num_warps=1),
                       state_launch=ConvStateLaunch(BR=32))
    assert torch.allclose(y2, y, rtol=1e-6, atol=1e-6) and torch.equal(ht2, ht)
    grads = conv_bwd(dy, dht, x, weight, cu, h0, True, need_dh0=True)
    grads2 = conv_bwd(dy, dht, x, weight, cu, h0, True, need_dh0=True,
                      launch=ConvBwdLaunch(BD=16, tokens=3, num_warps=2), h0_launch=ConvStateBwdLaunch(BR=16))
    grads3 = conv_bwd(dy, dht, x, weight, cu, h0, True, need_dh0=True, launch=ConvBwdLaunch(BD=32, tokens=1))
    for a, b, c in zip(grads2, grads, grads3):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-5) and torch.allclose(c, b, rtol=1e-5, atol=1e-5)
    state = h0.clone()
    y_step = short_conv_step(x[0, :4], weight, state)
    state2 = h0.clone()
    y_step2 = conv_step(x[0, :4], weight, state2, True, launch=ConvStepLaunch(BR=8))
    assert torch.equal(y_step2, y_step) and torch.equal(state2, state)
    with pytest.raises(ValueError, match="BT must be a power of two"):
        ConvLaunch(BT=24)
    with pytest.raises(ValueError, match="tokens must be a positive int"):
        ConvBwdLaunch(tokens=0)


@pytest.mark.parametrize("cu_seqlens", [None, [0, 3, 3, 29, 50]], ids=["dense", "packed"])
def test_grid_order_does_not_change_results(cu_seqlens):
    """Channel tiles fastest (one grid axis) and token tiles fastest (two) compute every output with the
    same products in the same order: y is bit-identical, with tiles that cut rows, channels and
    sequences (three channel tiles of 16 over 36 channels, tiles of 16 tokens over 50, an initial state).
    The default order is checked against the float64 module by the tests above."""
    B, N = (1, 4) if cu_seqlens else (3, None)
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, device=DEVICE)
    inputs = conv_inputs(B, 50, 36, 4, N=N, pad=3)
    x, weight, h0 = inputs["x"].float(), inputs["weight"].float(), inputs["initial_state"].float()
    ys = [conv_fwd(x, weight, cu, h0, False, True, launch=ConvLaunch(BT=16, BD=16, CHANNELS_FIRST=first))[0]
          for first in (False, True)]
    assert torch.equal(ys[1], ys[0])
    assert torch.allclose(ys[0], reference(x, weight, cu, h0)[0].float(), rtol=1e-5, atol=1e-5)
    with pytest.raises(TypeError, match="CHANNELS_FIRST must be a bool"):
        ConvLaunch(CHANNELS_FIRST=1)


@pytest.mark.parametrize("cu_seqlens", [None, [0, 3, 3, 29, 50]], ids=["dense", "packed"])
def test_offset_width_does_not_change_results(monkeypatch, cu_seqlens):
    """The forward's int32 and int64 offset tiles address the same elements: y and the final state are
    bit-identical with either (a strided x, an initial state, packed rows with an empty one). The backward
    forms each row's offset as one int64 scalar and has no such choice."""
    from gdn2.fast import conv

    N = 1 if cu_seqlens is None else len(cu_seqlens) - 1
    cu = None if cu_seqlens is None else torch.tensor(cu_seqlens, device=DEVICE)
    inputs = conv_inputs(1, 50, 36, 4, N=N, pad=1)
    x = torch.randn(1, 50, 40, device=DEVICE)[..., 2:38]                   # token stride 40, channels contiguous
    weight, h0 = inputs["weight"].float(), inputs["initial_state"].float()
    assert not conv.needs_int64(x)
    runs = []
    for off64 in (False, True):
        monkeypatch.setattr(conv, "needs_int64", lambda *tensors, off64=off64: off64)
        runs.append(conv_fwd(x, weight, cu, h0, True, True))
    for name, a, b in zip(("y", "ht"), *runs):
        assert torch.equal(a, b), name


def test_offsets_from_2_pow_30_take_int64():
    """A tensor with an element offset of 2³⁰ or more, contiguous or through its strides, takes int64."""
    from gdn2.fast.utils import needs_int64

    meta = dict(device="meta")
    assert not needs_int64(torch.empty(1, 2 ** 19, 2 ** 11, **meta), None)
    assert needs_int64(torch.empty(1, 2 ** 19, 2 ** 11 + 1, **meta))
    assert needs_int64(torch.empty(2, 2 ** 19, 2 ** 12, **meta)[..., :16])     # 16 channels of a wide row
    assert not needs_int64(torch.empty(0, 2 ** 20, 2 ** 12, **meta))            # no element, no offset


def test_frozen_weight_and_no_tokens():
    """No dweight when the weight needs none; T = 0 gives an empty y and the initial state back."""
    inputs = conv_inputs(2, 9, 8, 3)
    x = inputs["x"].float().requires_grad_()
    y, _ = short_conv(x, inputs["weight"].float())
    (dx,) = torch.autograd.grad(y.sum(), [x])
    assert torch.isfinite(dx).all()
    h0 = inputs["initial_state"].float()
    y, ht = short_conv(x[:, :0], inputs["weight"].float(), None, h0, output_final_state=True)
    assert y.shape == (2, 0, 8) and torch.equal(ht, h0)


def bad_calls():
    x = torch.randn(1, 6, 8, device=DEVICE)
    w = torch.randn(8, 4, device=DEVICE)
    h0 = torch.randn(1, 8, 3, device=DEVICE)
    cu = torch.tensor([0, 2, 6], device=DEVICE)
    return [
        (lambda: short_conv(x.tolist(), w), TypeError, "x must be a torch.Tensor"),
        (lambda: short_conv(x[0], w), ValueError, r"x must be \[B, T, D\]"),
        (lambda: short_conv(x.double(), w), TypeError, "x must be float16, bfloat16 or float32"),
        (lambda: short_conv(x, w[:7]), ValueError, r"weight must be \[D, W\] = \[8, W\]"),
        (lambda: short_conv(x, w[:, None]), ValueError, r"weight must be \[D, W\]"),
        (lambda: short_conv(x, torch.randn(8, 9, device=DEVICE)), ValueError, "W \\(conv_size\\) must be in 1..8"),
        (lambda: short_conv(x, w.long()), TypeError, "weight must be a floating-point tensor"),
        (lambda: short_conv(x, w, cu.float()), TypeError, "cu_seqlens must be int32 or int64"),
        (lambda: short_conv(x, w, cu[:1]), ValueError, r"cu_seqlens must hold N\+1 >= 2 offsets"),
        (lambda: short_conv(x.expand(2, 6, 8), w, cu), ValueError, "B = 1"),
        (lambda: short_conv(x, w, cu, h0), ValueError, r"initial_state must be \[N, D, W-1\] = \[2, 8, 3\]"),
        (lambda: short_conv(x, w, None, h0[..., :2]), ValueError, "initial_state must be"),
        (lambda: short_conv(x, w, None, h0.double()), TypeError, "initial_state must be float16"),
        (lambda: short_conv(x, w, None, h0, output_final_state=1), TypeError, "output_final_state must be a bool"),
        (lambda: short_conv(x, w, activation="silu"), TypeError, "activation must be a bool"),
        (lambda: short_conv_step(x, w, h0), ValueError, r"x must be \[N, 1, D\] or \[N, D\]"),
        (lambda: short_conv_step(x[:, :1], w, h0[:, :4]), ValueError, "state must be"),
        (lambda: short_conv_step(x[:, :1], w, h0.transpose(1, 2).contiguous().transpose(1, 2)), ValueError,
         "state must be contiguous"),
        (lambda: short_conv_step(x[:, :1], w, h0, activation=None), TypeError, "activation must be a bool"),
    ]


def test_bad_input_raises_named_errors():
    for call, error, match in bad_calls():
        with pytest.raises(error, match=match):
            call()


def guarded(shape, pad: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """(a contiguous random tensor of ``shape``, the NaN-filled buffer it sits in the middle of)."""
    n = math.prod(shape)
    buf = torch.full((n + 2 * pad,), float("nan"), device=DEVICE)
    buf[pad:pad + n] = torch.randn(n, device=DEVICE)
    return buf[pad:pad + n].view(shape), buf


@pytest.mark.parametrize("cu_seqlens", [[0, 30, 10, 50], [0, 70, 90], [-5, 20, 50], [0, 20, 40], [3, 3, 60]],
                         ids=["decreasing", "past-T", "negative", "short", "bad-ends"])
def test_bad_offsets_stay_inside_the_tensors(cu_seqlens):
    """Packed offsets the kernels do not check (that needs a host synchronisation; the chunk operator of
    the same layer call reports them) still address nothing outside the tensors: every input sits between
    NaN guards (x also a column slice of a NaN-filled row), and no output reads a NaN nor does any guard
    change."""
    T, D, W = 50, 20, 4
    N = len(cu_seqlens) - 1
    base = torch.full((1, T + 16, D + 8), float("nan"), device=DEVICE)
    base[:, 8:8 + T, 4:4 + D] = torch.randn(1, T, D, device=DEVICE)
    x = base[:, 8:8 + T, 4:4 + D]
    (h0, h0_buf), (dy, dy_buf), (dht, dht_buf) = guarded((N, D, W - 1)), guarded((1, T, D)), guarded((N, D, W - 1))
    buffers = [base, h0_buf, dy_buf, dht_buf]
    before = [b.clone() for b in buffers]
    cu = torch.tensor(cu_seqlens, device=DEVICE)
    weight = torch.randn(D, W, device=DEVICE)
    y, ht = conv_fwd(x, weight, cu, h0, True, True)
    dx, dweight, dh0 = conv_bwd(dy, dht, x, weight, cu, h0, True, need_dh0=True)
    for name, out in (("y", y), ("final state", ht), ("dx", dx), ("dweight", dweight), ("dh0", dh0)):
        assert torch.isfinite(out).all(), f"{name} read outside its inputs"
    for b, b0 in zip(buffers, before):
        assert torch.equal(b.isnan(), b0.isnan()) and torch.equal(b.nan_to_num(), b0.nan_to_num())


def conv_loss(base, weight, h0, cu_seqlens=None):
    """What a layer does around the op: a column slice in, a loss on y and the final state."""
    D = weight.shape[0]
    y, ht = short_conv(base[..., :D], weight, cu_seqlens, h0, output_final_state=True)
    return (y.float() * torch.linspace(-1, 1, D, device=y.device)).sum() + ht.float().square().sum()


def compiled_matches_eager(seed: int, B: int, T: int, D: int, W: int, dtype: str = "fp32", packed: bool = False):
    torch.manual_seed(seed)
    torch._dynamo.reset()
    inputs = conv_inputs(B, T, D, W, N=3 if packed else None, pad=4)
    base = inputs["x"]._base.to(DT[dtype]).requires_grad_()
    weight = inputs["weight"].float().requires_grad_()
    h0 = inputs["initial_state"].to(DT[dtype]).requires_grad_()
    cu = torch.tensor([0, 3, 3, T], device=DEVICE) if packed else None
    eager = conv_loss(base, weight, h0, cu)
    g_eager = torch.autograd.grad(eager, [base, weight, h0])
    loss = torch.compile(conv_loss, fullgraph=True)(base, weight, h0, cu)
    g_comp = torch.autograd.grad(loss, [base, weight, h0])
    tol = 1e-6 if dtype == "fp32" else 2e-3
    assert_close("loss", loss, eager, tol)
    for name, a, e in zip(("dx", "dweight", "dh0"), g_comp, g_eager):
        assert_close(name, a, e, tol)


def run_without_test_hooks(call: str) -> None:
    """Run ``call`` (a function of this module) in a fresh interpreter: pytest's jaxtyping hook wraps the
    reference module, which Dynamo cannot trace, and users' code has no such hook."""
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_fast_conv as t; {call}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_compile_fullgraph_matches_eager(seeded):
    run_without_test_hooks(f"t.compiled_matches_eager({seeded}, 1, 21, 12, 4, packed=True)")


# ------------------------------------------------------------------------------------- GPU, realistic shapes


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("packed", [False, True], ids=["dense", "packed"])
def test_gpu_conv_bf16_matches_reference(packed):
    """q, k, v of a layer side by side (D = 2·2048 + 4096) as a column slice of a wider projection."""
    D, W = 8192, 4
    if packed:
        cu = torch.tensor([0, 1, 1, 700, 2048, 3001, 4096], device=DEVICE)
        inputs = conv_inputs(1, 4096, D, W, N=6, pad=1024)
    else:
        cu, inputs = None, conv_inputs(2, 2048, D, W, pad=1024)
    check_against_reference(inputs, torch.bfloat16, cu_seqlens=cu)


@pytest.mark.gpu
@gpu
def test_gpu_steps_in_cuda_graph():
    """Capture one decoding step (state in a static buffer); replays on new tokens equal eager steps."""
    N, D, W = 8, 8192, 4
    inputs = conv_inputs(N, 1, D, W)
    weight = inputs["weight"].float()
    x_static = inputs["x"].bfloat16().contiguous()
    state_static = inputs["initial_state"].bfloat16()
    state_eager = state_static.clone()
    short_conv_step(x_static, weight, state_static.clone())                       # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        y_static = short_conv_step(x_static, weight, state_static)
    state_static.copy_(state_eager)
    for _ in range(3):
        x = torch.randn(N, 1, D, device=DEVICE, dtype=torch.bfloat16)
        y_eager = short_conv_step(x, weight, state_eager)
        x_static.copy_(x)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(y_static, y_eager) and torch.equal(state_static, state_eager)


@pytest.mark.gpu
@gpu
def test_gpu_compile_fullgraph_bf16(seeded):
    run_without_test_hooks(f"t.compiled_matches_eager({seeded}, 2, 1000, 1536, 4, 'bf16')")
