"""The Triton decoding operator (gdn2.fast.fused_recurrent_gdn2) against the float64 recurrence."""

import inspect

import pytest
import torch

import gdn2.fast
from gdn2.ops import recurrent_gdn2

from gdn2_testing import DEVICE, DT, PATH, TOLERANCES, assert_close, gpu, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]



def cast(inputs, dtype):
    low = {n: x.to(dtype) if n in "qkv" else x.float() for n, x in inputs.items()}
    return low, {n: x.double() for n, x in low.items()}


def check(inputs, dtype, **kw):
    low, exact = cast(inputs, dtype)
    ref_kw = {n: (x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x) for n, x in kw.items()}
    o_ref, ht_ref = recurrent_gdn2(**exact, output_final_state=True, **ref_kw)
    o, ht = gdn2.fast.fused_recurrent_gdn2(**low, output_final_state=True, **kw)
    assert o.dtype == dtype and ht.dtype == torch.float32
    tol = TOLERANCES[PATH[dtype]][0]
    assert_close("o", o, o_ref, tol)
    assert_close("ht", ht, ht_ref, tol)


@pytest.mark.parametrize(
    "B,T,H,HV,K,V,dtype",
    [
        pytest.param(3, 1, 2, 2, 16, 16, "fp32", id="B3-T1-H2-K16-V16-fp32-decode"),
        pytest.param(2, 9, 1, 3, 32, 16, "fp16", id="B2-T9-H1-HV3-K32-V16-fp16-prefill"),
        pytest.param(1, 5, 2, 2, 20, 40, "fp32", id="B1-T5-H2-K20-V40-fp32-unaligned"),
    ],
)
def test_decode_matches_recurrence(B, T, H, HV, K, V, dtype):
    check(make_inputs(B, T, H, HV, K, V), DT[dtype])


def test_decode_options_together():
    """Packed sequences (one empty), GVA, in-kernel L2 norm and gate, strong decay."""
    H, K = 2, 16
    inputs = make_inputs(1, 12, H, 4, K, 16, N=3, g_min=-1e4)
    inputs["g"] = torch.randn_like(inputs["g"]) * 5
    check(inputs, torch.float32, cu_seqlens=torch.tensor([0, 4, 4, 12], device=DEVICE),
          use_qk_l2norm_in_kernel=True, A_log=torch.rand(H, device=DEVICE), dt_bias=torch.randn(H * K, device=DEVICE))


@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(dict(stream_state=True), id="streamed-state-access"),
        pytest.param(dict(programs_per_sm=1), id="programs-loop-over-blocks"),
        pytest.param(dict(programs_per_sm=1, prefetch=True), id="loop-with-prefetch"),
        pytest.param(dict(programs_per_sm=1, prefetch=True, stages=2, stream_state=True), id="loop-pipelined-all"),
    ],
)
def test_decode_launch_variants_keep_the_numbers(launch, monkeypatch):
    """Every launch the benchmark sweeps gives the recurrence: cache hints on the state, and fewer programs
    than state blocks (4 programs for 8 blocks of 2 sequences, then for 12 blocks of 3 packed ones: each
    program takes every fourth block), with
    the next block's state prefetched and the loop pipelined. Varlen packing with an empty sequence, GVA."""
    import gdn2.fast.fused_recurrent as fr

    monkeypatch.setattr(fr, "_launch_config", lambda programs, K, V: fr.Tile(16, 1, **launch))
    monkeypatch.setattr(fr, "_LAUNCHES", {})
    monkeypatch.setattr(fr, "_sm_count", lambda device: 4)
    check(make_inputs(2, 3, 1, 2, 16, 32), torch.float32)
    inputs = make_inputs(1, 7, 1, 2, 16, 32, N=3)
    check(inputs, torch.float32, cu_seqlens=torch.tensor([0, 2, 2, 7], device=DEVICE))


def test_decode_steps_chain_to_the_sequence():
    """T decode calls, each carrying the state, equal one call over all T tokens."""
    low, _ = cast(make_inputs(2, 6, 1, 2, 16, 16), torch.float32)
    o_all, h_all = gdn2.fast.fused_recurrent_gdn2(**low, output_final_state=True)
    state, outs = low["initial_state"], []
    for t in range(6):
        step = {n: x[:, t:t + 1] for n, x in low.items() if n != "initial_state"}
        o_t, state = gdn2.fast.fused_recurrent_gdn2(**step, initial_state=state, output_final_state=True)
        outs.append(o_t)
    torch.testing.assert_close(torch.cat(outs, 1), o_all, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(state, h_all, rtol=1e-6, atol=1e-6)


def test_decode_does_not_mutate_inputs_and_checks_args():
    low, _ = cast(make_inputs(1, 2, 1, 1, 16, 16), torch.float32)
    before = {n: x.clone() for n, x in low.items()}
    gdn2.fast.fused_recurrent_gdn2(**low, output_final_state=True)
    assert all(torch.equal(low[n], before[n]) for n in low)
    with pytest.raises(ValueError, match="initial_state must have shape"):
        gdn2.fast.fused_recurrent_gdn2(**{**low, "initial_state": low["initial_state"][:, :, :8]})


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "B,T,H,HV,K,V",
    [
        pytest.param(256, 1, 4, 4, 128, 128, id="B256-T1-H4-K128-V128-bf16"),
        pytest.param(1, 1, 16, 16, 128, 128, id="B1-T1-H16-K128-V128-bf16"),
        pytest.param(2, 64, 2, 4, 256, 256, id="B2-T64-H2-HV4-K256-V256-bf16"),
    ],
)
def test_gpu_decode_matches_recurrence(B, T, H, HV, K, V):
    check(make_inputs(B, T, H, HV, K, V, dtype=torch.float64), torch.bfloat16)


@pytest.fixture
def direct_launch(monkeypatch):
    """The short path of fused_recurrent_gdn2 without a GPU: a fake kernel records the JIT launches
    and the direct launches of its "compiled" kernel (no output is computed)."""
    import gdn2.fast.fused_recurrent as fr

    log = {"jit": [], "direct": [], "params": list(inspect.signature(fr.fused_recurrent_fwd_kernel.fn).parameters)}

    class Compiled:
        function, packed_metadata = 7, "packed"

        def run(self, *args):
            log["direct"].append(args)

    class Kernel:
        def __getitem__(self, grid):
            return lambda *args, **kwargs: log["jit"].append((grid, args, kwargs)) or Compiled()

    device = torch.empty(0, device=DEVICE).get_device()
    monkeypatch.setattr(fr, "fused_recurrent_fwd_kernel", Kernel())
    monkeypatch.setattr(fr, "_DIRECT_LAUNCH", True)
    monkeypatch.setattr(fr, "_current_device", lambda: device)
    monkeypatch.setattr(fr, "_current_stream", lambda device: 1234)
    monkeypatch.setattr(fr, "_LAUNCHES", {})
    return log


def layer_inputs(B, H, HV, K, V, dtype):
    x, _ = cast(make_inputs(B, 1, H, HV, K, V), dtype)
    return dict(x, A_log=torch.rand(H, device=DEVICE), dt_bias=torch.randn(H * K, device=DEVICE))


def layer_call(x, **over):
    """A decoding step as the layer makes it: in-kernel gate and L2 norm, state in and out."""
    return gdn2.fast.fused_recurrent_gdn2(**{**x, **over}, output_final_state=True, use_qk_l2norm_in_kernel=True)


def test_cached_launch_repeats_the_jit_launch(direct_launch):
    """The second call of a configuration launches the compiled kernel with what the JIT got:
    pointers, scale, T and the constexprs in the kernel's order; the grid and stream as given."""
    x = layer_inputs(2, 2, 4, 16, 32, torch.bfloat16)
    o1, ht1 = layer_call(x)
    o2, ht2 = layer_call(x)
    assert len(direct_launch["jit"]) == 1 and len(direct_launch["direct"]) == 1
    grid, args, kwargs = direct_launch["jit"][0]
    num_warps = kwargs.pop("num_warps")
    assert num_warps in (1, 2, 4, 8)
    assert list(kwargs) == direct_launch["params"][len(args):]            # constexprs in the kernel's order
    direct = direct_launch["direct"][0]
    assert direct[:9] == (*grid, 1, 1234, 7, "packed", None, None, None)
    outputs = {9: o2.data_ptr(), 10: ht2.data_ptr()}                       # o and ht are the new call's
    expected = [outputs.get(i, a.data_ptr() if isinstance(a, torch.Tensor) else a) for i, a in enumerate(args)]
    assert list(direct[9:]) == expected[:9] + [outputs[9], outputs[10]] + expected[11:] + list(kwargs.values())
    assert o2.shape == o1.shape and o2.dtype == o1.dtype and ht2.shape == ht1.shape and ht2.dtype == torch.float32


def test_cached_launch_falls_back_to_the_jit(direct_launch):
    """A known configuration with a non-contiguous or unaligned input goes through the JIT again."""
    x = layer_inputs(1, 2, 2, 16, 16, torch.float32)
    layer_call(x)
    q_strided = torch.cat([x["q"], x["q"]], -1)[..., ::2]                   # same shape, not contiguous
    layer_call(x, q=q_strided)
    q_unaligned = torch.empty(x["q"].numel() + 1, device=DEVICE)[1:].view_as(x["q"]).copy_(x["q"])
    assert q_unaligned.is_contiguous() and q_unaligned.data_ptr() % 16
    layer_call(x, q=q_unaligned)
    assert len(direct_launch["jit"]) == 3 and not direct_launch["direct"]
    assert direct_launch["jit"][1][1][0].is_contiguous()                    # the strided q was copied
    layer_call(x)
    assert len(direct_launch["direct"]) == 1


@pytest.mark.parametrize("launch", ["jit", "cached"])
def test_bad_input_gets_named_errors_with_gate(launch, request):
    """The short path keeps SPEC §5's named errors, also with A_log and dt_bias given (the layer's call)
    and after a good call of the same configuration."""
    log = request.getfixturevalue("direct_launch") if launch == "cached" else None
    x = layer_inputs(1, 2, 2, 16, 16, torch.bfloat16)
    layer_call(x)
    layer_call(x)
    assert log is None or len(log["direct"]) == 1
    bad = [
        (ValueError, "q must have rank 4", dict(q=x["q"][0])),
        (ValueError, "k must have the shape of q", dict(k=x["k"][..., :8])),
        (TypeError, "initial_state must have a floating dtype", dict(initial_state=x["initial_state"].int())),
        (TypeError, "v must be a torch.Tensor", dict(v=x["v"].tolist())),
        (ValueError, "A_log must have shape", dict(A_log=torch.rand(3, device=DEVICE))),
        (ValueError, "dt_bias must have shape", dict(dt_bias=torch.rand(5, device=DEVICE))),
        (TypeError, "scale must be a float", dict(scale=True)),
    ]
    for error, message, over in bad:
        with pytest.raises(error, match=message):
            layer_call(x, **over)


@pytest.mark.gpu
@gpu
def test_gpu_cached_launch_equals_the_jit_launch(monkeypatch):
    """On a GPU the second call of a configuration launches the compiled kernel directly, with the same result."""
    import gdn2.fast.fused_recurrent as fr

    monkeypatch.setattr(fr, "_LAUNCHES", {})
    x = layer_inputs(4, 2, 4, 128, 128, torch.bfloat16)
    o1, ht1 = layer_call(x)
    ((key, entry),) = fr._LAUNCHES.items()
    direct = []
    fr._LAUNCHES[key] = entry._replace(run=lambda *a: direct.append(1) or entry.run(*a))
    o2, ht2 = layer_call(x)
    assert direct == [1]
    assert torch.equal(o1, o2) and torch.equal(ht1, ht2)
