"""Named regressions of the operator contract on every backend: careless input raises the reference's
error (never corrupts memory or returns uninitialised numbers), the numerics edges give the recurrence's
answer, and the layer, the model and the command line refuse mistakes with one clear message.

Calls that once corrupted memory run in a subprocess, so a crash fails the test instead of the run.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

import gdn2
import gdn2.fast
from gdn2.ops import chunk_gdn2, fused_recurrent_gdn2, recurrent_gdn2

from gdn2_testing import assert_close, make_inputs

HERE = Path(__file__).resolve().parent
triton = pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason()))
REFERENCE_OPS = [recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2]


def float32_inputs(*shape: int, **options) -> dict[str, torch.Tensor]:
    """``make_inputs`` in float32, the dtype the Triton ops take on every device."""
    return {n: t.float() for n, t in make_inputs(*shape, **options).items()}


def isolated(code: str) -> str:
    """Run ``code`` in a fresh Python process (on the GPU where there is one, else through Triton's
    interpreter, as this process runs); return its stdout."""
    env = dict(os.environ)
    if not torch.cuda.is_available():
        env.setdefault("TRITON_INTERPRET", "1")
    prelude = f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", prelude + textwrap.dedent(code)], capture_output=True,
                          text=True, env=env, timeout=600)
    assert done.returncode == 0, f"exit status {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}"
    return done.stdout


# ---- packed offsets ---------------------------------------------------------------------------------
@triton
def test_triton_rejects_bad_cu_seqlens_without_touching_memory_outside():
    """Offsets past T (which corrupted the heap), not from 0, decreasing, or short of T: the contract's
    ValueError from both Triton ops, as the reference raises. The offsets are on the tensors' device, so
    the kernels read them (clamped) and flag them."""
    out = isolated("""
        import torch, gdn2.fast
        from gdn2.fast.checks import raise_pending
        from gdn2.ops import chunk_gdn2
        from gdn2_testing import make_inputs
        x = {n: t.float() for n, t in make_inputs(1, 20, 1, 2, 16, 16, N=2, seed=0).items()}
        dev = x["q"].device
        for cu in ([0, 10, 30], [2, 10, 20], [0, 15, 10, 20], [0, 10, 15]):
            x["initial_state"] = torch.zeros(len(cu) - 1, 2, 16, 16, device=dev)
            for op in (chunk_gdn2, gdn2.fast.chunk_gdn2, gdn2.fast.fused_recurrent_gdn2):
                try:
                    op(**x, cu_seqlens=torch.tensor(cu, device=dev), output_final_state=True)
                    raise_pending()     # on a GPU the report comes after the kernels ran
                except ValueError as e:
                    assert "cu_seqlens must be non-decreasing from 0 to T" in str(e), str(e)
                else:
                    raise AssertionError(f"{op.__module__}: no error for {cu}")
        print("ok")
    """)
    assert out.strip().endswith("ok")


@triton
def test_triton_checks_a_callers_chunk_table():
    """chunk_indices: prepare_chunk_indices' table (the op's own, cached) or an equal copy gives the same
    outputs and gradients as none; a wrong type, shape or missing cu_seqlens is named at once; a table of
    the right shape with other values (a wrong chunk, negative entries), which once left rows of o
    unwritten, is the contract's ValueError from the forward, and the next call is clean."""
    from gdn2.fast.checks import raise_pending
    from gdn2.fast.utils import prepare_chunk_indices

    x = float32_inputs(1, 150, 1, 2, 16, 16, N=2)
    dev = x["q"].device
    cu = torch.tensor([0, 70, 150], dtype=torch.int32, device=dev)
    for t in x.values():
        t.requires_grad_(True)
    do = torch.randn(1, 150, 2, 16, device=dev)

    def run(**kw):
        o, _ = gdn2.fast.chunk_gdn2(**x, cu_seqlens=cu, **kw)
        raise_pending()
        return o, torch.autograd.grad(o, list(x.values()), do)

    want_o, want_grads = run()
    table = prepare_chunk_indices(cu, 64, 150)
    assert prepare_chunk_indices(cu, 64, 150) is table           # cached: passing it costs nothing
    for ok in (table, table.clone().long()):
        o, grads = run(chunk_indices=ok)
        assert torch.equal(o, want_o) and all(map(torch.equal, grads, want_grads))
    for bad, error, match in ((table.float(), TypeError, "chunk_indices must be int32 or int64"),
                              (table[:2], ValueError, r"chunk_indices must have shape \[T // 64 \+ N, 2\]"),
                              (table.tolist(), TypeError, "chunk_indices must be a tensor")):
        with pytest.raises(error, match=match):
            gdn2.fast.chunk_gdn2(**x, cu_seqlens=cu, chunk_indices=bad)
    with pytest.raises(ValueError, match="pass cu_seqlens with it"):
        gdn2.fast.chunk_gdn2(**dict(x, initial_state=None), chunk_indices=table)
    wrong = table.clone()
    wrong[-1] = torch.tensor([1, 5])                             # a chunk past its sequence, one chunk missing
    for bad in (wrong, -table):
        with pytest.raises(ValueError, match=r"chunk_indices must equal .*prepare_chunk_indices"):
            run(chunk_indices=bad)
    o, _ = run()
    assert torch.equal(o, want_o)


# ---- values --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", REFERENCE_OPS)
def test_reference_names_nan_in_g_as_nan(op):
    x = make_inputs(1, 8, 1, 1, 4, 4)
    x["g"][0, 3, 0, 1] = float("nan")
    with pytest.raises(ValueError, match="not NaN"):
        op(**x)


@pytest.mark.parametrize("op", REFERENCE_OPS)
@pytest.mark.parametrize("name", ["q", "k", "v", "b", "w", "initial_state"])
def test_reference_rejects_non_finite_inputs(op, name):
    x = make_inputs(1, 8, 1, 1, 4, 4)
    x[name].view(-1)[5] = float("inf")
    with pytest.raises(ValueError, match=f"{name} holds non-finite values"):
        op(**x)


@triton
@pytest.mark.parametrize("op", ["chunk_gdn2", "fused_recurrent_gdn2"])
@pytest.mark.parametrize("change,match", [
    pytest.param(lambda x: x["g"].__setitem__((0, 3, 0, 1), 0.5), "g is a log-decay", id="g-positive"),
    pytest.param(lambda x: x["g"].__setitem__((0, 3, 0, 1), float("nan")), "g is a log-decay", id="g-nan"),
    pytest.param(lambda x: x["g"].__setitem__((0, 3, 0, 1), float("inf")), "g is a log-decay", id="g-inf"),
    pytest.param(lambda x: x["k"].__setitem__((0, 70, 0, 2), float("nan")), "k holds non-finite", id="k-nan"),
    pytest.param(lambda x: x["v"].__setitem__((0, 1, 1, 0), float("-inf")), "v holds non-finite", id="v-inf"),
    pytest.param(lambda x: x["q"].__setitem__((0, 79, 0, 15), float("inf")), "q holds non-finite", id="q-inf"),
    pytest.param(lambda x: x["b"].__setitem__((0, 17, 0, 0), float("nan")), "b holds non-finite", id="b-nan"),
    pytest.param(lambda x: x["w"].__setitem__((0, 64, 1, 3), float("nan")), "w holds non-finite", id="w-nan"),
    pytest.param(lambda x: x["initial_state"].__setitem__((0, 1, 0, 0), float("nan")), "initial_state holds",
                 id="h0-nan"),
])
def test_triton_rejects_what_the_reference_rejects(op, change, match):
    from gdn2.fast.checks import raise_pending

    x = float32_inputs(1, 80, 1, 2, 16, 16)
    change(x)
    with pytest.raises(ValueError, match=match):
        getattr(gdn2.fast, op)(**x)
        raise_pending()                   # on a GPU the report comes later; on the CPU the call raised
    gdn2.fast.chunk_gdn2(**{n: t.nan_to_num(0.0, 0.0, 0.0).clamp(max=0.0) if n == "g" else t.nan_to_num(0.0)
                            for n, t in x.items()})   # the next good call raises nothing: the report was cleared
    raise_pending()


@triton
@pytest.mark.parametrize("op", ["chunk_gdn2", "fused_recurrent_gdn2"])
@pytest.mark.parametrize("change,match", [
    pytest.param(lambda x: x.update(v=x["v"][:, :5], w=x["w"][:, :5]), "v must have shape", id="v-T"),
    pytest.param(lambda x: x.update(g=x["g"][:, :5]), "g must have the shape", id="g-T"),
    pytest.param(lambda x: x.update(initial_state=x["initial_state"][:, :1]), "initial_state must have shape",
                 id="h0-H-heads-not-HV"),
    pytest.param(lambda x: x.update(initial_state=x["initial_state"][..., :8]), "initial_state must have shape",
                 id="h0-V"),
])
def test_triton_names_a_shape_mismatch(op, change, match):
    """Grouped value heads (HV = 2H): shapes that differ from the contract's in one place are named errors,
    whichever of the Triton ops' checks (its quick one for plain calls, or the full one) sees them."""
    x = float32_inputs(1, 8, 1, 2, 16, 16)
    change(x)
    with pytest.raises(ValueError, match=match):
        getattr(gdn2.fast, op)(**x)


@triton
@pytest.mark.parametrize("op", ["chunk_gdn2", "fused_recurrent_gdn2"])
@pytest.mark.parametrize("name", ["g", "b", "w"])
def test_triton_names_an_integer_gate(op, name):
    """An integer g, b or w of the right shape is a TypeError naming it, not a kernel reading integers."""
    x = float32_inputs(1, 8, 1, 2, 16, 16)
    x[name] = x[name].round().to(torch.int32)
    with pytest.raises(TypeError, match=f"{name} must have a floating dtype"):
        getattr(gdn2.fast, op)(**x)


@triton
@pytest.mark.parametrize("op", ["chunk_gdn2", "fused_recurrent_gdn2"])
def test_triton_flags_a_bad_initial_state_in_its_second_tile(op):
    """K = 160: the chunk kernels hold the state as two tiles of rows (128 and 32); a NaN in a row of the
    second is reported like one in the first."""
    from gdn2.fast.checks import raise_pending

    x = float32_inputs(1, 20, 1, 1, 160, 16)
    x["initial_state"][0, 0, 140, 3] = float("nan")
    with pytest.raises(ValueError, match="initial_state holds"):
        getattr(gdn2.fast, op)(**x)
        raise_pending()


@triton
def test_a_huge_finite_value_is_not_flagged():
    """The forward detects a bad q or k from ‖q‖², ‖k‖², which also overflow for a huge finite value;
    its second pass then finds every value finite, and nothing is raised. Nor for v and w at the largest
    float32 value."""
    from gdn2.fast.checks import raise_pending

    x = float32_inputs(1, 40, 1, 2, 16, 16)
    x["q"][0, 5, 0, 3] = 1e30
    x["k"][0, 33, 0, 0] = -1e30
    x["v"][0, 7, 1, 2] = x["w"][0, 7, 1, 2] = torch.finfo(torch.float32).max
    gdn2.fast.chunk_gdn2(**x)
    raise_pending()


@triton
def test_only_the_forward_checks_values_not_the_backwards_rerun():
    """The chunk forward's kernels flag a bad value (``check=True``, every call of the operator); the
    backward's rerun of the forward (``check=False``) reads inputs its forward has flagged and skips the
    per-element checks, so it flags nothing."""
    from gdn2.fast.checks import raise_pending
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd

    x = float32_inputs(1, 80, 1, 2, 16, 16)
    x["k"][0, 70, 0, 2] = float("nan")
    args = [x[n] for n in "qkvgbw"] + [16**-0.5, x["initial_state"]]
    chunk_gdn2_fwd(*args, check=False, save=True, need_o=False)
    raise_pending()
    with pytest.raises(ValueError, match="k holds non-finite"):
        chunk_gdn2_fwd(*args)
        raise_pending()


@triton
def test_the_operator_checks_in_its_forward_and_not_in_its_rerun(monkeypatch):
    """chunk_gdn2 (default recompute="partial") runs its forward with the checks and its backward's
    rerun without."""
    import gdn2.fast.custom_op as custom_op

    seen = []
    fwd = custom_op.chunk_gdn2_fwd
    monkeypatch.setattr(custom_op, "chunk_gdn2_fwd",
                        lambda *a, **kw: seen.append(kw.get("check", True)) or fwd(*a, **kw))
    x = {n: t.float().requires_grad_() for n, t in make_inputs(1, 40, 1, 2, 16, 16).items()}
    o, _ = gdn2.fast.chunk_gdn2(**x)
    o.sum().backward()
    assert seen == [True, False]


@triton
def test_interpreter_refuses_bfloat16():
    """Triton's interpreter computes tl.dot on bfloat16 operands wrongly: the backend refuses, never
    returns garbage."""
    x = make_inputs(1, 20, 1, 1, 16, 16)
    x = {n: t.bfloat16() if n in "qkv" else t.float() for n, t in x.items()}
    if x["q"].is_cuda:
        pytest.skip("on a GPU bfloat16 is computed")
    for op in (gdn2.fast.chunk_gdn2, gdn2.fast.fused_recurrent_gdn2):
        with pytest.raises(TypeError, match="bfloat16 cannot run on Triton's CPU interpreter"):
            op(**x)


@pytest.mark.parametrize("case", ["g-minus-inf", "g-huge-negative", "A_log-100"])
def test_chunk_reference_follows_the_recurrence_at_full_reset(case):
    """g = −inf, g ≈ −3e38 and the in-op gate with A_log = 100 (a full reset of the state's channel) are
    legitimate input: the chunkwise reference returns the recurrence's finite answer, in float64 and
    float32."""
    x = make_inputs(1, 70, 2, 2, 16, 16)
    kw = {}
    if case == "g-minus-inf":
        x["g"][0, 10, 0] = float("-inf")
        x["g"][0, 40:45, 1, 3] = float("-inf")
    elif case == "g-huge-negative":
        x["g"][0, 20, :, ::2] = -3e38
    else:
        x["g"] = torch.randn_like(x["g"])
        kw["A_log"] = torch.tensor([100.0, 0.5], dtype=torch.float64, device=x["q"].device)
    o_ref, h_ref = recurrent_gdn2(**x, output_final_state=True, **kw)
    o, h = chunk_gdn2(**x, output_final_state=True, chunk_size=16, **kw)
    assert_close("o", o, o_ref, 1e-10)
    assert_close("ht", h, h_ref, 1e-10)
    xf = {n: t.float() for n, t in x.items()}
    o, h = chunk_gdn2(**xf, output_final_state=True, **{n: t.float() for n, t in kw.items()})
    assert_close("o", o, o_ref, 1e-5)
    assert_close("ht", h, h_ref, 1e-5)


def test_chunk_reference_gradients_at_full_reset():
    """Gradients through a g = −inf token equal autograd through the recurrence (finite, 0 for that g)."""
    x = make_inputs(1, 40, 1, 1, 8, 8)
    x["g"][0, 7, 0, :4] = float("-inf")
    leaves = lambda: {n: t.clone().requires_grad_() for n, t in x.items()}  # noqa: E731
    out = {}
    for op in (recurrent_gdn2, chunk_gdn2):
        xs = leaves()
        o, h = op(**xs, output_final_state=True)
        (o.square().sum() + h.sum()).backward()
        out[op] = {n: t.grad for n, t in xs.items()}
    for n, g in out[chunk_gdn2].items():
        assert torch.isfinite(g).all(), n
        assert_close(f"d{n}", g, out[recurrent_gdn2][n].nan_to_num(0.0), 1e-9)


# ---- empty calls ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)], ids=["B0", "T0"])
def test_calls_without_tokens(B, T):
    """No tokens: an empty o and each sequence's initial state as its final state, on every op: a copy,
    never the caller's tensor (which a later in-place update of the final state would change)."""
    x = make_inputs(max(B, 1), max(T, 1), 1, 2, 16, 16)
    x = {n: t[:B, :T] if n != "initial_state" else t[:B] for n, t in x.items()}
    ops = REFERENCE_OPS + ([] if gdn2.fast.unavailable_reason() else [gdn2.fast.chunk_gdn2,
                                                                       gdn2.fast.fused_recurrent_gdn2])
    for op in ops:
        xs = x if op in REFERENCE_OPS else {n: t.float() for n, t in x.items()}
        o, h = op(**xs, output_final_state=True)
        assert o.shape == (B, T, 2, 16) and h.shape == (B, 2, 16, 16)
        assert torch.equal(h.double(), xs["initial_state"].double())
        if B:
            assert h.untyped_storage().data_ptr() != xs["initial_state"].untyped_storage().data_ptr()


@pytest.mark.parametrize("B,T", [(0, 5), (2, 0)], ids=["B0", "T0"])
def test_calls_without_tokens_give_every_input_a_zero_gradient(B, T):
    """No tokens, with the in-op gate and the gates as logits: o depends on every input all the same, so
    each gets a gradient of zeros, not none, on every op (a batch that is all padding must not leave a
    parameter without a gradient: data-parallel training expects one on every rank)."""
    H, K = 1, 16
    x = make_inputs(max(B, 1), max(T, 1), H, 2, K, 16)
    x = {n: t[:B, :T] if n != "initial_state" else t[:B] for n, t in x.items()}
    x["A_log"] = torch.zeros(H, dtype=torch.float64, device=x["q"].device)
    x["dt_bias"] = torch.zeros(H * K, dtype=torch.float64, device=x["q"].device)
    ops = REFERENCE_OPS + ([] if gdn2.fast.unavailable_reason() else [gdn2.fast.chunk_gdn2,
                                                                       gdn2.fast.fused_recurrent_gdn2])
    for op in ops:
        xs = {n: (t if op in REFERENCE_OPS else t.float()).clone().requires_grad_() for n, t in x.items()}
        o, h = op(**xs, output_final_state=True, use_gate_sigmoid_in_kernel=True)
        grads = torch.autograd.grad(o.sum() + h.sum(), list(xs.values()), allow_unused=True)
        for n, g in zip(xs, grads):
            assert g is not None, f"{op.__module__}.{op.__name__}: no gradient of {n}"
            want = torch.ones_like(g) if n == "initial_state" else torch.zeros_like(g)
            assert torch.equal(g, want), f"{op.__module__}.{op.__name__}: d{n}"


# ---- scale and flags -----------------------------------------------------------------------------------
TRITON_OPS = [pytest.param(gdn2.fast.chunk_gdn2, marks=triton, id="triton-chunk"),
              pytest.param(gdn2.fast.fused_recurrent_gdn2, marks=triton, id="triton-fused_recurrent")]


@pytest.mark.parametrize("op", [*REFERENCE_OPS, *TRITON_OPS])
def test_scale_takes_any_finite_real(op):
    """Every backend: a numpy scalar is a scale; NaN and ±inf are named errors (the Triton op's fast path
    for plain calls let inf through to all-NaN outputs)."""
    x = make_inputs(1, 6, 1, 1, 16, 16, dtype=torch.float32)
    o1, _ = op(**x, scale=0.5)
    o2, _ = op(**x, scale=np.float32(0.5))
    assert torch.equal(o1, o2)
    for bad in (float("nan"), float("inf"), -float("inf")):
        with pytest.raises(ValueError, match="scale must be finite"):
            op(**x, scale=bad)


@pytest.mark.parametrize("op", [*REFERENCE_OPS, *TRITON_OPS])
@pytest.mark.parametrize("flag", ["output_final_state", "use_qk_l2norm_in_kernel"])
def test_flags_must_be_bools(op, flag):
    """A truthy non-bool flag is a TypeError naming it on every backend, not a silent True."""
    x = make_inputs(1, 6, 1, 1, 16, 16, dtype=torch.float32)
    with pytest.raises(TypeError, match=flag):
        op(**x, **{flag: 1})


@pytest.mark.parametrize("op", [*REFERENCE_OPS, *TRITON_OPS])
@pytest.mark.parametrize("axis", [2, 3], ids=["H", "K"])
def test_an_empty_head_axis_is_named(op, axis):
    """No key heads (H = 0) or an empty key axis is the contract's ValueError on every backend (H = 0 was a
    ZeroDivisionError of the grouped-value check)."""
    x = make_inputs(1, 6, 1, 1, 16, 16, dtype=torch.float32, initial_state=False)
    x.update({n: x[n].narrow(axis, 0, 0) for n in "qkgb"})
    with pytest.raises(ValueError, match="H, K and V must be positive"):
        op(**x)


# ---- the layer and the model ---------------------------------------------------------------------------
def test_layers_without_an_index_keep_their_own_cache_entries():
    """Two layers built with layer_idx=None decode with one Cache as two separate entries."""
    torch.manual_seed(0)
    a, b = gdn2.GDN2(32, 2, head_dim=16).eval(), gdn2.GDN2(32, 2, head_dim=16).eval()
    x = torch.randn(1, 6, 32)
    cache = gdn2.Cache()
    a(x[:, :5], cache=cache, use_cache=True)
    b(x[:, :5], cache=cache, use_cache=True)
    assert len(cache) == 2
    assert torch.allclose(a(x[:, 5:], cache=cache, use_cache=True), a(x)[:, 5:], atol=1e-5)
    assert torch.allclose(b(x[:, 5:], cache=cache, use_cache=True), b(x)[:, 5:], atol=1e-5)


def test_generate_names_a_one_dimensional_prompt():
    lm = gdn2.GDN2LM(gdn2.GDN2LMConfig(num_layers=1))
    with pytest.raises(ValueError, match=r"input_ids must be a \[B, T\] tensor"):
        lm.generate(torch.tensor(list(b"Anne")), 2)


def test_the_model_and_layer_name_bad_arguments_without_the_test_type_checker():
    """Outside pytest's jaxtyping hook (as users run it), the model, the layer and its building blocks name
    what is wrong:
    before, a float or 1-D input_ids, a top_k of 0 and a cache of the wrong type raised torch's own errors
    (or a message naming the layer's hidden_states), and the loss of one token was NaN."""
    out = isolated("""
        import torch, gdn2
        lm = gdn2.GDN2LM(gdn2.GDN2LMConfig(vocab_size=50, hidden_size=32, num_layers=1, num_heads=2, head_dim=16))
        layer = gdn2.GDN2(32, 2, head_dim=16)
        conv, norm = gdn2.conv.ShortConvolution(8, conv_size=4), gdn2.norm.GatedRMSNorm(8)
        ids = torch.randint(0, 50, (2, 6))
        cases = [
            (lambda: lm(ids.float()), TypeError, "input_ids must be an integer tensor"),
            (lambda: lm(ids[0]), ValueError, "input_ids must be a [B, T] tensor"),
            (lambda: lm.loss(ids[:, :1]), ValueError, "nothing to predict"),
            (lambda: lm.generate(ids, 2, top_k=0), ValueError, "top_k must be a positive int"),
            (lambda: lm.generate(ids, 2, temperature="hot"), TypeError, "temperature must be a real number"),
            (lambda: layer(torch.randn(1, 3, 32), cache={}), TypeError, "cache must be a gdn2.Cache"),
            (lambda: layer(torch.randn(1, 3, 32), cache=gdn2.Cache(), use_cache=1), TypeError,
             "use_cache must be a bool"),
            # the layer's building blocks, public on their own (they raised torch's shape errors)
            (lambda: conv(torch.randn(2, 5, 7)), ValueError, "x must be a [B, T, channels = 8] tensor"),
            (lambda: conv(torch.randn(2, 5, 8), state=torch.zeros(2, 8, 2)), ValueError,
             "state must be [N, channels, conv_size - 1] = [2, 8, 3]"),
            (lambda: conv(torch.randn(2, 5, 8), cu_seqlens=torch.tensor([0, 5])), ValueError, "(B = 1), got B = 2"),
            (lambda: norm(torch.randn(2, 8), torch.randn(2, 7)), ValueError, "z must have o's shape [2, 8]"),
            (lambda: norm(torch.randn(2, 7), torch.randn(2, 7)), ValueError, "o must be a tensor [..., 8]"),
        ]
        for call, error, message in cases:
            try:
                call()
            except error as e:
                assert message in str(e), str(e)
            else:
                raise AssertionError(f"no {error.__name__} ({message})")
        print("ok")
    """)
    assert out.strip().endswith("ok")


def test_an_interpreter_that_cannot_run_the_kernels_is_named(monkeypatch):
    """Triton's interpreter before 3.9 with numpy 2.4 or later fails every kernel with a loop bound
    from a program id: the backend says so instead of failing inside a kernel."""
    from gdn2.fast import utils

    monkeypatch.setenv("TRITON_INTERPRET", "1")
    versions = {"triton": (3, 6), "numpy": (2, 4)}
    monkeypatch.setattr(utils, "_version", lambda name: versions[name])
    assert "interpreter cannot run these kernels" in utils.unavailable_reason()
    versions["numpy"] = (2, 3)
    assert utils.unavailable_reason() is None
    versions.update(triton=(3, 9), numpy=(2, 5))
    assert utils.unavailable_reason() is None
