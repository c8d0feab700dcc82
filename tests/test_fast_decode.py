"""The Triton decoding operator (gdn2.fast.fused_recurrent_gdn2) against the float64 recurrence."""

import pytest
import torch

import gdn2.fast
from gdn2.fast.config import DecodeLaunch
from gdn2.ops import recurrent_gdn2

from gdn2_testing import DEVICE, DT, PATH, TOLERANCES, assert_close, gate_parameters, gpu, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]



def cast(inputs, dtype):
    low = {n: x.to(dtype) if n in "qkv" else x.float() for n, x in inputs.items()}
    return low, {n: x.double() for n, x in low.items()}


def check(inputs, dtype, **kw):
    low, exact = cast(inputs, dtype)
    ref_kw = {n: (x.double() if isinstance(x, torch.Tensor) and x.is_floating_point() else x) for n, x in kw.items()
              if n != "launch"}
    o_ref, ht_ref = recurrent_gdn2(**exact, output_final_state=True, **ref_kw)
    o, ht = gdn2.fast.fused_recurrent_gdn2(**low, output_final_state=True, **kw)
    assert o.dtype == dtype and ht.dtype == torch.float32
    tol = TOLERANCES[PATH[dtype]][0]
    assert_close("o", o, o_ref, tol)
    assert_close("ht", ht, ht_ref, tol)


@pytest.mark.parametrize("T", [1, 7], ids=["decode", "prefill"])
def test_inplace_final_state_is_written_over_the_initial_state(T):
    """``inplace_final_state`` returns the initial state's own tensor, holding the final state the plain
    call returns; the outputs are the same bit for bit (packed sequences, GVA)."""
    low, _ = cast(make_inputs(1, 2 * T, 2, 4, 16, 16, N=2), torch.float32)
    cu = torch.tensor([0, T, 2 * T], device=DEVICE)
    h0 = low.pop("initial_state")
    o, ht = gdn2.fast.fused_recurrent_gdn2(**low, initial_state=h0, output_final_state=True, cu_seqlens=cu)
    state = h0.clone()
    o2, ht2 = gdn2.fast.fused_recurrent_gdn2(**low, initial_state=state, output_final_state=True, cu_seqlens=cu,
                                             inplace_final_state=True)
    assert ht2 is state
    assert torch.equal(state, ht) and torch.equal(o2, o) and not torch.equal(state, h0)
    # a state that is not contiguous could only be written through a copy: refused, not silently kept
    strided = h0.transpose(2, 3).contiguous().transpose(2, 3)
    with pytest.raises(ValueError, match="inplace_final_state needs a contiguous initial_state"):
        gdn2.fast.fused_recurrent_gdn2(**low, initial_state=strided, output_final_state=True, cu_seqlens=cu,
                                       inplace_final_state=True)


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
    """Packed sequences (one empty), GVA, in-kernel L2 norm and gate, the gates b, w as logits, strong decay."""
    H, K = 2, 16
    inputs = make_inputs(1, 12, H, 4, K, 16, N=3, g_min=-1e4)
    inputs["g"] = torch.randn_like(inputs["g"]) * 5
    inputs["b"], inputs["w"] = 2 * torch.randn_like(inputs["b"]), 2 * torch.randn_like(inputs["w"])
    check(inputs, torch.float32, cu_seqlens=torch.tensor([0, 4, 4, 12], device=DEVICE),
          use_qk_l2norm_in_kernel=True, **dict(zip(("A_log", "dt_bias"), gate_parameters(H, K))),
          use_gate_sigmoid_in_kernel=True, allow_neg_eigval=True)


@pytest.mark.parametrize(
    "launch",
    [
        pytest.param(DecodeLaunch(BV=16, programs_per_sm=1), id="programs-loop-over-blocks"),
        pytest.param(DecodeLaunch(BV=8, num_warps=2), id="BV8-two-warps"),
    ],
)
def test_decode_launches_keep_the_numbers(launch, monkeypatch):
    """Fewer programs than state blocks (4 programs for 8 blocks of 2 sequences, then for 12 blocks of 3
    packed ones: each program takes every fourth block) and other block widths give the recurrence;
    packing with an empty sequence, GVA."""
    import gdn2.fast.fused_recurrent as fr

    monkeypatch.setattr(fr, "_sm_count", lambda device: 4)
    check(make_inputs(2, 3, 1, 2, 16, 32), torch.float32, launch=launch)
    inputs = make_inputs(1, 7, 1, 2, 16, 32, N=3)
    check(inputs, torch.float32, cu_seqlens=torch.tensor([0, 2, 2, 7], device=DEVICE), launch=launch)


def test_decode_launch_rule():
    """Few (sequence, head) pairs: one program per [K, 16] block; many: [K, 32] blocks, 8 programs per SM."""
    from gdn2.fast.fused_recurrent import decode_launch

    assert decode_launch(16, 128, 128) == DecodeLaunch(BV=16, num_warps=1)
    assert decode_launch(1024, 128, 128) == DecodeLaunch(BV=32, num_warps=1, programs_per_sm=8)
    assert decode_launch(1024, 256, 128) == DecodeLaunch(BV=32, num_warps=2, programs_per_sm=8)
    assert decode_launch(1024, 64, 128).programs_per_sm is None


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
        pytest.param(3, 5, 1, 2, 20, 12, id="B3-T5-H1-HV2-K20-V12-bf16-odd-heads"),
        pytest.param(2, 3, 2, 2, 100, 48, id="B2-T3-H2-K100-V48-bf16-odd-heads"),
    ],
)
def test_gpu_decode_matches_recurrence(B, T, H, HV, K, V):
    check(make_inputs(B, T, H, HV, K, V, dtype=torch.float64), torch.bfloat16)


def layer_inputs(B, H, HV, K, V, dtype):
    x, _ = cast(make_inputs(B, 1, H, HV, K, V), dtype)
    A_log, dt_bias = gate_parameters(H, K)
    return dict(x, A_log=A_log, dt_bias=dt_bias)


def layer_call(x, **over):
    """A decoding step as the layer makes it: in-op gate and L2 norm, state in and out."""
    return gdn2.fast.fused_recurrent_gdn2(**{**x, **over}, output_final_state=True, use_qk_l2norm_in_kernel=True)


def test_bad_input_gets_named_errors_with_gate():
    """The contract's named errors, also with A_log and dt_bias given (the layer's call) and after a good
    call of the same configuration."""
    x = layer_inputs(1, 2, 2, 16, 16, torch.float32)
    layer_call(x)
    bad = [
        (ValueError, "q must have rank 4", dict(q=x["q"][0])),
        (ValueError, "k must have the shape of q", dict(k=x["k"][..., :8])),
        (TypeError, "initial_state must have a floating dtype", dict(initial_state=x["initial_state"].int())),
        (TypeError, "v must be a torch.Tensor", dict(v=x["v"].tolist())),
        (ValueError, "A_log must have shape", dict(A_log=torch.rand(3, device=DEVICE))),
        (ValueError, "dt_bias must have shape", dict(dt_bias=torch.rand(5, device=DEVICE))),
        (TypeError, "scale must be a real number", dict(scale=True)),
        (ValueError, "scale must be finite", dict(scale=float("nan"))),
    ]
    for error, message, over in bad:
        with pytest.raises(error, match=message):
            layer_call(x, **over)
