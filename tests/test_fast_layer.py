"""The layer's fused Triton path (gdn2.fast.layer_forward) against the reference layer, which is its oracle.

Same parameters (one state_dict), same inputs: outputs and the gradient of every parameter and of the
input, with padding masks, packed rows, grouped value heads, negative eigenvalues, and the decoding cache
(prefill then token by token, states updated in place). On the CPU the kernels run in Triton's
interpreter at tiny sizes in float32 (the reference in float64); on a GPU at the layer's real sizes in
bfloat16.
"""

import pytest
import torch

import gdn2
import gdn2.fast

from gdn2_testing import DEVICE, TOLERANCES, GateTerms, assert_close, gpu, saved_bytes

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]


def pair(D=32, H=2, K=16, HV=None, neg=False, dtype=torch.float32):
    """(Triton layer in dtype, reference layer in float64), one set of parameters."""
    fast = gdn2.GDN2(D, H, head_dim=K, num_v_heads=HV, allow_neg_eigval=neg, backend="triton")
    ref = gdn2.GDN2(D, H, head_dim=K, num_v_heads=HV, allow_neg_eigval=neg, backend="reference")
    with torch.no_grad():                        # random, not the initial values: every parameter matters
        for p in fast.parameters():
            p.copy_(torch.randn_like(p) * (0.3 if p.dim() == 1 else p.shape[-1] ** -0.5))
    fast = fast.to(DEVICE, dtype)
    ref.load_state_dict(fast.state_dict())       # the same (rounded) values in float64
    return fast, ref.to(DEVICE, torch.float64)


def check(fast, ref, x, path, **kw):
    """Outputs and every gradient of <y, dy> of the fast layer against the reference in float64.

    dA_log and ddt_bias sum signed terms over tokens, so (as in the operator's tests) their error is
    measured against the size of those terms, from the reference's gate logits and their gradient."""
    dy = torch.randn(x.shape, dtype=torch.float64, device=DEVICE)
    x = x.to(next(fast.parameters()).dtype)                 # both layers see the same rounded input
    results = {}
    with GateTerms(ref) as terms:
        for name, layer, dt in (("fast", fast, x.dtype), ("ref", ref, torch.float64)):
            xi = x.to(dt).detach().requires_grad_()
            y = layer(xi, **kw)
            grads = torch.autograd.grad(y, [xi, *layer.parameters()], dy.to(y.dtype))
            results[name] = (y, dict(zip(["x", *dict(layer.named_parameters())], grads)))
    sizes = terms.sizes()
    tol = TOLERANCES[path]
    assert_close("y", results["fast"][0], results["ref"][0], tol[0])
    for name, g in results["fast"][1].items():
        assert_close(f"d{name}", g, results["ref"][1][name], tol[1] if name == "x" else tol[2], sizes.get(name))


@pytest.mark.parametrize("HV,neg", [(None, False), (4, True)], ids=["plain", "gva-neg-eigval"])
def test_fused_layer_equals_reference(HV, neg):
    fast, ref = pair(HV=HV, neg=neg)
    check(fast, ref, torch.randn(2, 70, 32, device=DEVICE), "triton-float32")


def test_fused_layer_with_padding_and_packing():
    """A left/right padding mask, and a packed row with an empty and a one-token document."""
    fast, ref = pair()
    mask = torch.ones(2, 40, device=DEVICE)
    mask[0, :5] = 0
    mask[1, 33:] = 0
    check(fast, ref, torch.randn(2, 40, 32, device=DEVICE), "triton-float32", attention_mask=mask)
    cu = torch.tensor([0, 1, 1, 30, 50], device=DEVICE)
    check(fast, ref, torch.randn(1, 50, 32, device=DEVICE), "triton-float32", cu_seqlens=cu)


@pytest.mark.parametrize("call", ["all-padding", "no-tokens"])
def test_fused_layer_on_a_batch_without_tokens(call):
    """Every token masked, or none there: zeros out, and every parameter gets a gradient of zeros (not
    none), as on the reference layer."""
    fast, _ = pair(HV=4)
    T = 5 if call == "all-padding" else 0
    x = torch.randn(2, T, 32, device=DEVICE, requires_grad=True)
    y = fast(x, attention_mask=torch.zeros(2, T, device=DEVICE)) if T else fast(x)
    assert y.shape == x.shape and not y.any()
    grads = torch.autograd.grad(y.sum(), [x, *fast.parameters()], allow_unused=True)
    for (name, _), g in zip([("x", x), *fast.named_parameters()], grads):
        assert g is not None and not g.any(), f"d{name}: {g}"


@pytest.mark.parametrize("steps", [(1,) * 8, (5, 3)], ids=["token-by-token", "several-tokens"])
def test_fused_layer_decoding_equals_one_call(steps):
    """Prefill 12 tokens, then the rest in calls of ``steps`` tokens: the outputs equal the reference's
    full forward. Calls of one token update the cache's states in place; a call of several continues each
    of q, k and v from its own convolution state. A call with the cache but without use_cache reads it and
    changes nothing."""
    fast, ref = pair(HV=4)
    fast.eval()
    x = torch.randn(2, 20, 32, device=DEVICE)
    y_ref = ref(x.double())
    cache = gdn2.Cache()
    ys = [fast(x[:, :12], cache=cache, use_cache=True)]
    state = cache.get(fast.cache_key)
    tensors = (state.recurrent_state, *state.conv_state)
    snapshot = [t.clone() for t in tensors]
    peek = fast(x[:, 12:13], cache=cache, use_cache=False)
    assert all(torch.equal(t, t0) for t, t0 in zip(tensors, snapshot)), "a call without use_cache changed the cache"
    t = 12
    for n in steps:
        ys.append(fast(x[:, t:t + n], cache=cache, use_cache=True))
        t += n
    if steps[0] == 1:                                                                   # in place
        state = cache.get(fast.cache_key)
        assert [u.data_ptr() for u in (state.recurrent_state, *state.conv_state)] == [u.data_ptr() for u in tensors]
    tol = TOLERANCES["triton-float32"][0]
    assert_close("y", torch.cat(ys, 1), y_ref, tol)
    assert_close("peek", peek, y_ref[:, 12:13], tol)


def test_recompute_reaches_the_operator_and_changes_no_gradient(monkeypatch):
    """GDN2(recompute=...) is what the layer's chunk operator is called with (what its forward keeps for
    the backward), and every mode gives the same output and gradients bit for bit."""
    import gdn2.fast.layer

    seen = []
    op = gdn2.fast.layer.chunk_gdn2
    monkeypatch.setattr(gdn2.fast.layer, "chunk_gdn2", lambda *a, **kw: seen.append(kw["recompute"]) or op(*a, **kw))
    fast, _ = pair(HV=4)
    x = torch.randn(2, 40, 32, device=DEVICE)
    dy = torch.randn_like(x)
    results = {}
    for mode in ("partial", True, "states", False):
        fast.recompute = mode
        xi = x.detach().requires_grad_()
        y = fast(xi)
        results[mode] = [y, *torch.autograd.grad(y, [xi, *fast.parameters()], dy)]
    assert seen == ["partial", True, "states", False]
    for mode in (True, "states", False):
        for a, b in zip(results[mode], results["partial"]):
            assert torch.equal(a, b), f"recompute={mode!r} changed a value"
    with pytest.raises(ValueError, match="recompute"):
        gdn2.GDN2(32, 2, head_dim=16, recompute="some")


def test_gradient_checkpointing_reruns_the_kernels_to_the_same_gradients():
    """A model of Triton layers trained with activation checkpointing (each block's forward, kernels
    included, runs again in the backward) keeps a fraction of the activations and gives the loss and
    every parameter gradient of the plain run, bit for bit, on a packed row."""
    ids = torch.randint(0, 256, (1, 50), device=DEVICE)
    cu = torch.tensor([0, 1, 31, 50], device=DEVICE)
    runs, kept = [], []
    for ckpt in (False, True):
        torch.manual_seed(3)
        lm = gdn2.GDN2LM(gdn2.GDN2LMConfig(hidden_size=32, num_layers=2, num_heads=2, head_dim=16,
                                           backend="triton", gradient_checkpointing=ckpt)).to(DEVICE)
        loss, saved = saved_bytes(lambda m=lm: m.loss(ids, cu_seqlens=cu))
        runs.append([loss, *torch.autograd.grad(loss, list(lm.parameters()))])
        kept.append(saved)
    for a, b in zip(*runs):
        assert torch.equal(a, b)
    assert kept[1] < kept[0] / 3, kept


def test_a_dtype_the_kernels_do_not_take_is_named():
    """float64 hidden_states (which the reference layer takes): a TypeError naming hidden_states, not the
    short convolution's input."""
    fast, _ = pair()
    with pytest.raises(TypeError, match=r"hidden_states must be float16, bfloat16 or float32.*got torch.float64"):
        fast(torch.zeros(1, 3, 32, dtype=torch.float64, device=DEVICE))


def test_state_dict_moves_between_backends():
    """A layer built with one backend loads into the other and gives the same outputs."""
    fast, ref = pair()
    moved = gdn2.GDN2(32, 2, head_dim=16, backend="reference")
    moved.load_state_dict(fast.state_dict())
    x = torch.randn(1, 30, 32, device=DEVICE)
    assert_close("y", fast(x), moved.to(DEVICE)(x), TOLERANCES["triton-float32"][0])


# ---- GPU: the layer's real sizes in bfloat16 ---------------------------------------------------------
@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("HV,neg", [(None, False), (32, True)], ids=["d2048-h16", "gva-neg-eigval"])
def test_gpu_fused_layer_equals_reference(HV, neg):
    fast, ref = pair(D=2048, H=16, K=128, HV=HV, neg=neg, dtype=torch.bfloat16)
    check(fast, ref, torch.randn(2, 300, 2048, device=DEVICE), "triton-bfloat16")


@pytest.mark.gpu
@gpu
def test_gpu_fused_layer_packed_and_decoding():
    fast, ref = pair(D=1024, H=8, K=128, dtype=torch.bfloat16)
    cu = torch.tensor([0, 1, 100, 357, 600], device=DEVICE)
    check(fast, ref, torch.randn(1, 600, 1024, device=DEVICE), "triton-bfloat16", cu_seqlens=cu)
    fast.eval()
    x = torch.randn(4, 80, 1024, device=DEVICE, dtype=torch.bfloat16)
    cache = gdn2.Cache()
    ys = [fast(x[:, :70], cache=cache, use_cache=True)] + [fast(x[:, t:t + 1], cache=cache, use_cache=True)
                                                              for t in range(70, 80)]
    assert_close("y", torch.cat(ys, 1), ref(x.double()), TOLERANCES["triton-bfloat16"][0])


# ---- the input projections -----------------------------------------------------------------------
@pytest.mark.parametrize("grouped", [False, True], ids=["separate", "grouped"])
@pytest.mark.parametrize("autocast", [False, True], ids=["float32", "bfloat16-autocast"])
def test_shared_input_linear_equals_separate_projections(autocast, grouped):
    """One gradient buffer for the input, accumulated by the products: the outputs and every gradient
    equal separate ``F.linear`` calls under autograd (exactly in float64), with an unused output (None
    gradient) and a weight without gradient. ``grouped``: the last three weights are one product of
    them stacked, whose outputs are column slices; its products sum in another order, so its outputs
    equal the separate ones up to rounding (in float64 to 1e-12; under autocast within one rounding to
    bfloat16 of the float32 product, 2u relative to Σ|x||W|).

    Under autocast both run their products in bfloat16 but round in different places (autograd
    rounds each product and each sum; ``addmm_`` rounds each running sum), so both are held to the
    rounding bound of the exact sum of the bfloat16 operands' products: with unit roundoff u = 2⁻⁸
    and n used outputs, |dx − Σᵢ dyᵢ Wᵢ| ≤ 2n·u·Σᵢ |dyᵢ||Wᵢ| (at most 2n − 1 roundings, each of at
    most u times a partial sum) and |dWᵢ − dyᵢᵀx| ≤ 2u·|dyᵢ|ᵀ|x| (one rounding, float32 accumulation).
    Dropping or doubling a product breaks the first bound."""
    from gdn2.fast.projections import shared_input_linear

    dt = torch.float32 if autocast else torch.float64
    x = torch.randn(2, 7, 24, dtype=dt, requires_grad=True)
    ws = [torch.randn(n, 24, dtype=dt, requires_grad=n != 5) for n in (16, 8, 5, 12)]
    dys = [torch.randn(2, 7, w.shape[0]) for w in ws]
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        ours = shared_input_linear(x, *((ws[0], tuple(ws[1:])) if grouped else ws))
        ref = [torch.nn.functional.linear(x, w) for w in ws]
    for a, r, w in zip(ours, ref, ws):
        assert a.dtype == r.dtype and a.shape == r.shape
        if not grouped:
            assert torch.equal(a, r)
        elif not autocast:
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
        else:
            bound = 2 * 2.0 ** -8 * (x.detach().abs().double() @ w.detach().abs().double().t())
            assert ((a.double() - r.double()).abs() <= bound).all()
    used = [0, 1, 2]                                        # the last output takes no part in the loss
    g_ours = torch.autograd.grad([ours[i] for i in used], [x, ws[0], ws[1], ws[3]],
                                 [dys[i].to(ours[i].dtype) for i in used], allow_unused=True)
    g_ref = torch.autograd.grad([ref[i] for i in used], [x, ws[0], ws[1], ws[3]],
                                [dys[i].to(ref[i].dtype) for i in used], allow_unused=True)
    assert g_ours[3] is None and g_ref[3] is None
    for a, r in zip(g_ours[:3], g_ref[:3]):
        assert a.dtype == r.dtype
    if not autocast:
        for a, r in zip(g_ours[:3], g_ref[:3]):
            torch.testing.assert_close(a, r, rtol=1e-12, atol=1e-12)
        return
    u = 2.0 ** -8
    as64 = lambda t: t.detach().to(torch.bfloat16).double()              # noqa: E731
    xb, wb, dyb = as64(x), [as64(ws[i]) for i in used], [as64(dys[i]) for i in used]
    exact = [sum(dy @ w for dy, w in zip(dyb, wb))] + [dy.flatten(0, 1).t() @ xb.flatten(0, 1)
                                                        for dy in dyb[:2]]
    scale = [sum(dy.abs() @ w.abs() for dy, w in zip(dyb, wb))] + [
        dy.abs().flatten(0, 1).t() @ xb.abs().flatten(0, 1) for dy in dyb[:2]]
    factor = [2 * len(used) * u, 2 * u, 2 * u]
    for name, grads in (("shared_input_linear", g_ours), ("F.linear", g_ref)):
        for j, (g, e, s, f) in enumerate(zip(grads[:3], exact, scale, factor)):
            excess = ((g.double() - e).abs() - f * s).max().item()
            assert excess <= 0, f"{name}: gradient {j} exceeds its rounding bound by {excess:.3g}"



# ---- what runs around the kernels ----------------------------------------------------------------
#: ATen ops the fused layer's train step may run on token-sized tensors: the products, views, the one
#: reduction that is a gradient of its own (z's bias: the sum of dz over the tokens), and the two joins
#: of the low-rank pair (its weights stacked for one product; its gradients, 2·V columns per token)
GLUE_ALLOWED = {"mm", "addmm", "addmm_", "t", "view", "_unsafe_view", "reshape", "expand", "detach", "alias",
                "split_with_sizes", "sum", "cat"}


def test_fused_layer_runs_no_elementwise_pass_around_its_kernels():
    """Forward and backward of the fused layer: every ATen op that touches a token-sized tensor is a
    product or a view, besides the kernels' own custom ops. A projection whose output needs a copy, a
    bias added by its own pass, or gradients summed by autograd would each show up here as an
    elementwise op (copy_, add, fill, slice_backward). The one copy allowed joins the low-rank pair:
    its two weights, and its two gradients of V columns per token."""
    from torch.utils._python_dispatch import TorchDispatchMode

    B, T, D = 1, 40, 32
    seen, joined = [], []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            tensors = [a for a in (*args, *(out if isinstance(out, (tuple, list)) else [out]))
                       if isinstance(a, torch.Tensor)]
            if func.namespace == "aten" and any(t.numel() >= B * T * 16 for t in tensors):
                seen.append(func.__name__.split(".")[0])
                if seen[-1] == "cat":
                    joined.append(tuple(out.shape))
            return out

    fast, _ = pair(D=D)
    V = fast.head_v_dim
    x = torch.randn(B, T, D, device=DEVICE, requires_grad=True)
    dy = torch.randn(B, T, D, device=DEVICE)
    with Record():
        y = fast(x)
        torch.autograd.backward(y, dy)
    extra = sorted(set(seen) - GLUE_ALLOWED)
    assert not extra, f"elementwise ATen ops around the fused layer's kernels: {extra}"
    assert {"mm", "addmm"} <= set(seen)      # the recorder saw the products, so it saw the layer
    assert all(shape in ((2 * V, D), (B * T, 2 * V)) for shape in joined), joined


def test_shared_input_linear_gives_each_weight_its_own_gradient():
    """An input without gradient and a frozen first weight (a frozen embedding, a partly frozen layer):
    the trainable weight still gets its own gradient, dy1ᵀ x."""
    from gdn2.fast.projections import shared_input_linear

    x = torch.randn(3, 5, 8, dtype=torch.float64)
    w0, w1 = torch.randn(4, 8, dtype=torch.float64), torch.randn(6, 8, dtype=torch.float64, requires_grad=True)
    y0, y1 = shared_input_linear(x, w0, w1)
    dy = torch.randn_like(y1)
    (g,) = torch.autograd.grad(y1, [w1], dy)
    torch.testing.assert_close(g, dy.flatten(0, 1).t() @ x.flatten(0, 1), rtol=1e-12, atol=1e-12)
