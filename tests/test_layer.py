"""The GDN2 layer: decoding equals the full forward, padding equals unpadded sequences,
backends are interchangeable with one state_dict, constructor arguments are checked."""

import math

import pytest
import torch

from gdn2 import GDN2, Cache, available_backends
from gdn2.conv import ShortConvolution
from gdn2.layer import RECURRENT_MAX_T

from gdn2_testing import TOLERANCES, GateTerms, assert_close, rel_rms

TOL64 = TOLERANCES["reference-float64"][0]


def make_layer(seed: int = 0, dtype=torch.float64, **kw) -> GDN2:
    torch.manual_seed(seed)
    args = dict(hidden_size=32, num_heads=2, head_dim=8, backend="reference", layer_idx=0)
    layer = GDN2(**{**args, **kw}).to(dtype)
    with torch.no_grad():  # move the output norm and gate bias off their trivial init so they are exercised
        layer.o_norm.weight.uniform_(0.5, 1.5)
        layer.g_proj[1].bias.normal_(0, 0.1)
    return layer


LAYERS = [
    pytest.param({}, id="H2-K8-V8"),
    pytest.param({"num_v_heads": 4, "expand_v": 1.5}, id="H2-HV4-K8-V12-gva"),
    pytest.param({"use_short_conv": False}, id="H2-K8-noconv"),
    pytest.param({"allow_neg_eigval": True, "conv_size": 2}, id="H2-K8-negeig-conv2"),
]


# ---- decoding ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw", LAYERS)
@pytest.mark.parametrize("prefill", [pytest.param(5, id="prefill5"), pytest.param(70, id="prefill70-chunk")])
def test_prefill_then_decode_equals_full_forward(kw, prefill):
    """Prefill (chunk path above RECURRENT_MAX_T, else the recurrent one), then 3 tokens at once,
    then one token at a time: every output equals one call on the whole sequence (float64)."""
    layer = make_layer(**kw).eval()
    B, T = 2, prefill + 12
    x = torch.randn(B, T, 32, dtype=torch.float64)
    full = layer(x)
    cache = Cache()
    outs = [layer(x[:, :prefill], cache=cache, use_cache=True), layer(x[:, prefill:prefill + 3], cache=cache,
                                                                      use_cache=True)]
    outs += [layer(x[:, t:t + 1], cache=cache, use_cache=True) for t in range(prefill + 3, T)]
    assert (prefill > RECURRENT_MAX_T) == (prefill == 70)
    assert_close("decode", torch.cat(outs, 1), full, TOL64)


def test_cache_holds_float32_state_and_conv_tails():
    layer = make_layer(dtype=torch.float32, num_v_heads=4).eval()
    cache = Cache()
    layer(torch.randn(3, 9, 32), cache=cache, use_cache=True)
    state = cache.get(0)
    assert state.recurrent_state.dtype == torch.float32
    assert state.recurrent_state.shape == (3, 4, 8, 8)                       # [N, HV, K, V]
    assert [s.shape for s in state.conv_state] == [(3, 16, 3), (3, 16, 3), (3, 32, 3)]  # [N, D, W-1]
    before = cache.num_bytes()
    assert before == 4 * (3 * 4 * 8 * 8 + 3 * (16 + 16 + 32) * 3)              # every tensor, float32
    for _ in range(5):
        layer(torch.randn(3, 1, 32), cache=cache, use_cache=True)
    assert cache.num_bytes() == before


def test_cache_without_use_cache_is_read_only():
    layer = make_layer().eval()
    x = torch.randn(1, 6, 32, dtype=torch.float64)
    cache = Cache()
    layer(x[:, :4], cache=cache, use_cache=True)
    snapshot = cache.get(0).recurrent_state.clone()
    a = layer(x[:, 4:], cache=cache)
    b = layer(x[:, 4:], cache=cache)
    assert torch.equal(cache.get(0).recurrent_state, snapshot)
    assert torch.equal(a, b)
    assert_close("continued", a, layer(x)[:, 4:], TOL64)


# ---- padding -------------------------------------------------------------------------------------
def padded_batch(lengths, T, side, D=32):
    """Random [B, T, D] input (random values in the padding too) and its 0/1 mask."""
    x = torch.randn(len(lengths), T, D, dtype=torch.float64)
    mask = torch.zeros(len(lengths), T, dtype=torch.long)
    for i, n in enumerate(lengths):
        if side == "left":
            mask[i, T - n:] = 1
        else:
            mask[i, :n] = 1
    return x, mask


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kw", LAYERS[:2])
def test_padding_mask_equals_unpadded_sequences(side, kw):
    layer = make_layer(**kw)
    lengths, T = [13, 70, 1, 0], 70
    x, mask = padded_batch(lengths, T, side)
    out = layer(x, attention_mask=mask)
    for i, n in enumerate(lengths):
        valid = mask[i].bool()
        assert torch.equal(out[i, ~valid], torch.zeros_like(out[i, ~valid])), "padding must give exact zeros"
        if n:
            assert_close(f"seq{i}", out[i, valid], layer(x[i:i + 1, valid])[0], TOL64)


def test_padding_mask_with_decoding():
    """Left-padded prefill, then decoding with the growing mask: equals each sequence alone."""
    layer = make_layer().eval()
    lengths, T, steps = [3, 9], 9, 4
    x, mask = padded_batch(lengths, T, "left")
    extra = torch.randn(2, steps, 32, dtype=torch.float64)
    cache = Cache()
    layer(x, attention_mask=mask, cache=cache, use_cache=True)
    full_mask = torch.cat([mask, torch.ones(2, steps, dtype=torch.long)], 1)
    dec = [layer(extra[:, t:t + 1], attention_mask=full_mask[:, :T + t + 1], cache=cache, use_cache=True)
           for t in range(steps)]
    dec = torch.cat(dec, 1)
    for i, n in enumerate(lengths):
        alone = layer(torch.cat([x[i:i + 1, T - n:], extra[i:i + 1]], 1))[0, n:]
        assert_close(f"seq{i}", dec[i], alone, TOL64)


def test_short_convolution_does_not_leak_across_packed_sequences():
    torch.manual_seed(0)
    conv = ShortConvolution(6, 4).double()
    lengths = [5, 1, 0, 7]
    x = torch.randn(1, sum(lengths), 6, dtype=torch.float64)
    state = torch.randn(len(lengths), 6, 3, dtype=torch.float64)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()])
    y, new_state = conv(x, state, cu)
    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        y_n, st_n = conv(x[:, s:e], state[n:n + 1])
        if e > s:
            assert_close(f"y{n}", y[:, s:e], y_n, TOL64)
        assert torch.equal(new_state[n], st_n[0])


def test_layer_is_causal_and_does_not_mutate_input():
    layer = make_layer()
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    x_copy = x.clone()
    a = layer(x)
    assert torch.equal(x, x_copy)
    y = x.clone()
    y[:, 12:] = torch.randn(2, 8, 32, dtype=torch.float64)
    b = layer(y)
    assert torch.equal(a[:, :12], b[:, :12])
    assert not torch.allclose(a[:, 12:], b[:, 12:])


# ---- initialisation and parameters ------------------------------------------------------------------
def test_initialisation_follows_spec():
    layer = GDN2(256, 4, head_dim=64, backend="reference")
    assert ((layer.A_log >= 0) & (layer.A_log <= math.log(16))).all()
    dt = torch.nn.functional.softplus(layer.dt_bias)
    assert dt.shape == (4 * 64,) and dt.min() >= 1e-4 * 0.999 and dt.max() <= 0.1 * 1.001
    assert dt.log().std() > 0.5                                          # log-uniform spread, not a constant
    w = layer.q_proj.weight
    bound = 2**-2.5 * math.sqrt(6 / (w.shape[0] + w.shape[1]))
    assert w.abs().max() <= bound and w.abs().max() > 0.9 * bound        # Xavier-uniform, gain 2^-2.5
    assert torch.equal(layer.g_proj[1].bias, torch.zeros_like(layer.g_proj[1].bias))
    shapes = {n: tuple(p.shape) for n, p in layer.named_parameters()}
    assert shapes["f_proj.0.weight"] == (64, 256) and shapes["f_proj.1.weight"] == (256, 64)  # d → V → H·K
    assert shapes["b_proj.weight"] == (256, 256) and shapes["w_proj.weight"] == (256, 256)
    assert shapes["A_log"] == (4,) and shapes["dt_bias"] == (256,)


def test_gates_reach_the_operator_through_its_extras(monkeypatch):
    """The layer hands raw gate, A_log, dt_bias and the L2-norm flag to the op (so a fast backend fuses them)."""
    import gdn2.ops

    seen = {}
    real = gdn2.ops.chunk_gdn2

    def spy(*args, **kw):
        seen.update(kw)
        return real(*args, **kw)

    monkeypatch.setattr(gdn2.ops, "chunk_gdn2", spy)
    layer = make_layer(allow_neg_eigval=True)
    layer(torch.randn(1, 5, 32, dtype=torch.float64))
    assert seen["use_qk_l2norm_in_kernel"] is True
    assert seen["A_log"] is layer.A_log and seen["dt_bias"] is layer.dt_bias


def test_gradients_reach_every_parameter():
    layer = make_layer()
    layer(torch.randn(2, 10, 32, dtype=torch.float64)).pow(2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("call", ["all-padding", "no-tokens", "empty-packed"])
def test_a_batch_without_tokens_gives_every_parameter_a_zero_gradient(call):
    """A batch that is all padding (or has no tokens) returns zeros and gives every parameter a gradient of
    zeros, as a batch with tokens does, not none: data-parallel training expects a gradient of every
    parameter on every rank."""
    layer = GDN2(32, 2, head_dim=8, backend="reference")
    T = 0 if call == "no-tokens" else 6
    x = torch.randn(1 if call == "empty-packed" else 2, T, 32, requires_grad=True)
    kw = {"all-padding": dict(attention_mask=torch.zeros(2, T)), "no-tokens": {},
          "empty-packed": dict(cu_seqlens=torch.tensor([0, 0]))}[call]
    if call == "empty-packed":
        x = x[:, :0].detach().requires_grad_()
    y = layer(x, **kw)
    assert y.shape == x.shape and not y.any()
    grads = torch.autograd.grad(y.sum(), [x, *layer.parameters()], allow_unused=True)
    for (name, _), g in zip([("x", x), *layer.named_parameters()], grads):
        assert g is not None and not g.any(), f"d{name}: {g}"


@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="fp32"), pytest.param(torch.bfloat16, id="bf16")])
def test_low_precision_layer_keeps_dtype(dtype):
    layer = make_layer(dtype=dtype)
    out = layer(torch.randn(2, 9, 32, dtype=dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()


# ---- backends ------------------------------------------------------------------------------------
TRITON_REASON = available_backends()["triton"]


@pytest.mark.skipif(TRITON_REASON is not None, reason=f"triton backend: {TRITON_REASON}")
def test_backends_share_one_state_dict(monkeypatch):
    """One state_dict, two backends: the Triton layer (float32) matches the reference layer (float64)."""
    import gdn2.fast.layer
    import gdn2.fast.utils

    monkeypatch.setattr(gdn2.fast.utils, "POISON_OUTPUTS", True)
    calls = []
    for op in ("chunk_gdn2", "fused_recurrent_gdn2"):  # count the Triton calls: it must not pass on the reference
        real = getattr(gdn2.fast.layer, op)
        counted = lambda *a, _real=real, _op=op, **k: calls.append(_op) or _real(*a, **k)  # noqa: E731
        monkeypatch.setattr(gdn2.fast.layer, op, counted)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    ref = make_layer(num_v_heads=4, head_dim=16, layer_idx=0)
    fast = GDN2(32, 2, head_dim=16, num_v_heads=4, backend="triton", layer_idx=0)
    assert fast.state_dict().keys() == ref.state_dict().keys()
    fast.load_state_dict(ref.state_dict())
    fast = fast.to(device=device, dtype=torch.float32)
    x = torch.randn(2, 20, 32, dtype=torch.float64)
    with GateTerms(ref) as terms:               # dA_log and ddt_bias judged against the size of their terms
        o_ref = ref(x)
        o_ref.pow(2).sum().backward()
    o_fast = fast(x.to(device, torch.float32))
    assert_close("o", o_fast.cpu(), o_ref, TOLERANCES["triton-float32"][0])
    o_fast.pow(2).sum().backward()
    grads_fast, sizes = dict(fast.named_parameters()), terms.sizes()
    for name, p in ref.named_parameters():
        assert_close(f"d{name}", grads_fast[name].grad.cpu(), p.grad, TOLERANCES["triton-float32"][2], sizes.get(name))
    # decoding through the Triton fused_recurrent_gdn2
    ref.eval(), fast.eval()
    c_ref, c_fast = Cache(), Cache()
    with torch.no_grad():
        ref(x[:, :16], cache=c_ref, use_cache=True)
        fast(x[:, :16].to(device, torch.float32), cache=c_fast, use_cache=True)
        step_ref = ref(x[:, 16:17], cache=c_ref, use_cache=True)
        step_fast = fast(x[:, 16:17].to(device, torch.float32), cache=c_fast, use_cache=True)
    assert_close("decode", step_fast.cpu(), step_ref, TOLERANCES["triton-float32"][0])
    assert calls == ["chunk_gdn2", "fused_recurrent_gdn2", "fused_recurrent_gdn2"]


def test_auto_backend_takes_the_reference_for_cpu_tensors():
    import gdn2.ops

    layer = GDN2(32, 2, head_dim=8, backend="auto")
    assert layer._ops(torch.zeros(1)) is gdn2.ops


# ---- argument checks -----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kw,exc,name",
    [
        pytest.param({"hidden_size": 0}, ValueError, "hidden_size", id="hidden_size-0"),
        pytest.param({"hidden_size": 32.0}, TypeError, "hidden_size", id="hidden_size-float"),
        pytest.param({"num_heads": -1}, ValueError, "num_heads", id="num_heads-neg"),
        pytest.param({"head_dim": True}, TypeError, "head_dim", id="head_dim-bool"),
        pytest.param({"num_v_heads": 3}, ValueError, "num_v_heads", id="num_v_heads-not-multiple"),
        pytest.param({"expand_v": 0.3}, ValueError, "expand_v", id="expand_v-fractional-dim"),
        pytest.param({"expand_v": "2"}, TypeError, "expand_v", id="expand_v-str"),
        pytest.param({"conv_size": 0}, ValueError, "conv_size", id="conv_size-0"),
        pytest.param({"use_short_conv": 1}, TypeError, "use_short_conv", id="use_short_conv-int"),
        pytest.param({"allow_neg_eigval": "yes"}, TypeError, "allow_neg_eigval", id="allow_neg_eigval-str"),
        pytest.param({"norm_eps": 0.0}, ValueError, "norm_eps", id="norm_eps-0"),
        pytest.param({"norm_eps": "1e-5"}, TypeError, "norm_eps", id="norm_eps-str"),
        pytest.param({"layer_idx": -2}, ValueError, "layer_idx", id="layer_idx-neg"),
        pytest.param({"backend": "cuda"}, ValueError, "reference", id="backend-unknown-lists-available"),
        pytest.param({"backend": 3}, TypeError, "backend", id="backend-int"),
    ],
)
def test_bad_constructor_arguments(kw, exc, name):
    args = {"hidden_size": 32, "num_heads": 2, "head_dim": 8, "backend": "reference", **kw}
    with pytest.raises(exc, match=name):
        GDN2(**args)


def test_unavailable_backend_names_the_reason_and_the_available(monkeypatch):
    import gdn2.fast

    monkeypatch.setattr(gdn2.fast, "unavailable_reason", lambda: "no GPU in this test")
    with pytest.raises(ValueError, match=r"no GPU in this test.*Available: reference"):
        GDN2(32, 2, head_dim=8, backend="triton")


@pytest.mark.parametrize(
    "call,exc,match",
    [
        pytest.param(lambda layer: layer(torch.randn(1, 4, 31, dtype=torch.float64)), ValueError, "hidden_size",
                     id="wrong-width"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), torch.ones(1, 3)), ValueError,
                     "attention_mask", id="mask-too-short"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), torch.full((1, 4), 2)), ValueError,
                     "attention_mask", id="mask-not-01"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), use_cache=True), ValueError,
                     "cache", id="use_cache-without-cache"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), use_cache=1, cache=Cache()),
                     TypeError, "use_cache", id="use_cache-int"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), cache={}), TypeError, "cache",
                     id="cache-dict"),
        # packed offsets are checked before the short convolution reads them (it raised torch's own errors)
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64),
                                         cu_seqlens=torch.tensor([0, 3, 2, 4])),
                     ValueError, "cu_seqlens must be non-decreasing from 0 to T = 4", id="cu_seqlens-decreasing"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), cu_seqlens=torch.tensor([0, 3])),
                     ValueError, "cu_seqlens must be non-decreasing from 0 to T = 4", id="cu_seqlens-short-of-T"),
        pytest.param(lambda layer: layer(torch.randn(1, 4, 32, dtype=torch.float64), cu_seqlens=torch.tensor([0., 4.])),
                     TypeError, "cu_seqlens must be int32 or int64", id="cu_seqlens-float"),
    ],
)
def test_bad_forward_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call(make_layer())


def test_cache_batch_mismatch_is_an_error():
    layer = make_layer().eval()
    cache = Cache()
    layer(torch.randn(2, 3, 32, dtype=torch.float64), cache=cache, use_cache=True)
    with pytest.raises(ValueError, match="B = 3"):
        layer(torch.randn(3, 1, 32, dtype=torch.float64), cache=cache, use_cache=True)


def test_rel_rms_of_decode_is_not_trivially_zero():
    """Guard for the decode test: a layer with different weights gives a clearly different output."""
    x = torch.randn(1, 8, 32, dtype=torch.float64)
    assert rel_rms(make_layer(seed=1)(x), make_layer(seed=2)(x)) > 0.1


def test_packed_rows_equal_separate_sequences():
    """cu_seqlens packs sequences into one row (as pre-training feeds them): each equals its own call, and
    nothing reaches across a boundary (conv taps or state)."""
    torch.manual_seed(0)
    layer = GDN2(32, 2, head_dim=16, backend="reference").double()
    x = torch.randn(1, 23, 32, dtype=torch.float64)
    cu = torch.tensor([0, 7, 8, 23])
    y = layer(x, cu_seqlens=cu)
    parts = [layer(x[:, s:e]) for s, e in zip(cu[:-1].tolist(), cu[1:].tolist())]
    assert torch.allclose(y, torch.cat(parts, 1), atol=1e-12)
    with pytest.raises(ValueError, match="cu_seqlens packs sequences into one row"):
        layer(x.expand(2, -1, -1), cu_seqlens=cu)
