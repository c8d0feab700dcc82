"""The Triton backend under torch.compile(fullgraph=True) and inside CUDA graphs.

``gdn2.fast.chunk_gdn2`` runs as two custom ops (``gdn2::chunk_gdn2_fwd`` / ``_bwd``, with fake
implementations), so a compiled function that calls it traces into one graph, forward and
backward, and returns what eager returns. Decoding (``fused_recurrent_gdn2``) is captured in a CUDA
graph and replayed on new inputs.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gdn2.fast

from gdn2_testing import DEVICE, assert_close, gpu, make_inputs

pytestmark = pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None,
                                reason=str(gdn2.fast.unavailable_reason()))


def layer_like(q, k, v, g, b, w, A_log, dt_bias, initial_state, cu_seqlens=None, recompute="partial"):
    """What a layer does around the op: in-op gate and L2 norm, a loss on o and the final state."""
    o, ht = gdn2.fast.chunk_gdn2(q, k, v, g, b, w, initial_state=initial_state, output_final_state=True,
                                 cu_seqlens=cu_seqlens, use_qk_l2norm_in_kernel=True, A_log=A_log,
                                 dt_bias=dt_bias, recompute=recompute)
    return (o.float() * torch.linspace(-1, 1, o.shape[-1], device=o.device)).sum() + ht.square().sum()


def inputs(B, T, H, HV, K, V, dtype, N=None):
    x = make_inputs(B, T, H, HV, K, V, N=N, dtype=torch.float64)
    x = {n: (t.to(dtype) if n in "qkv" else t.float()) for n, t in x.items()}
    x["g"] = torch.randn_like(x["g"])                                   # raw gate
    x["A_log"] = torch.rand(H, device=DEVICE)
    x["dt_bias"] = torch.randn(H * K, device=DEVICE)
    return {n: t.requires_grad_() for n, t in x.items()}


def compiled_matches_eager(x: dict, **kw) -> None:
    torch._dynamo.reset()
    eager = layer_like(**x, **kw)
    g_eager = torch.autograd.grad(eager, list(x.values()))
    compiled = torch.compile(layer_like, fullgraph=True)
    loss = compiled(**x, **kw)
    g_comp = torch.autograd.grad(loss, list(x.values()))
    # the same kernels on the same inputs; only the loss's own backward may round differently
    tol = 1e-5 if x["q"].dtype == torch.float32 else 2e-3
    assert_close("loss", loss, eager, tol)
    for name, a, e in zip(x, g_comp, g_eager):
        assert_close(f"d{name}", a, e, tol)


def run_without_test_hooks(call: str) -> None:
    """Run ``call`` (a function of this module) in a fresh interpreter.

    pytest wraps the typed reference's functions in jaxtyping's checking decorator (pyproject's addopts),
    which Dynamo cannot trace; users' code has no such hook, so the compile checks run in a subprocess.
    """
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_fast_compile as t; {call}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]


def test_compile_fullgraph_matches_eager():
    run_without_test_hooks("t.compiled_matches_eager(t.inputs(1, 40, 1, 2, 16, 16, t.torch.float32))")


def test_compile_fullgraph_packed_sequences():
    """Packed rows, with the forward keeping all but the state pass's products (recompute="states"),
    so the fake implementation of that set is traced too."""
    run_without_test_hooks(
        "cu = t.torch.tensor([0, 7, 40], device=t.DEVICE, dtype=t.torch.int32); "
        "t.compiled_matches_eager(t.inputs(1, 40, 1, 1, 16, 16, t.torch.float32, N=2), cu_seqlens=cu, "
        "recompute='states')")


@pytest.mark.gpu
@gpu
def test_gpu_compile_fullgraph_bf16():
    run_without_test_hooks("t.compiled_matches_eager(t.inputs(2, 1000, 2, 4, 128, 128, t.torch.bfloat16))")


@pytest.mark.gpu
@gpu
def test_gpu_decoding_in_cuda_graph():
    """Capture one decoding step (T = 1, the state carried in a static buffer); replay on new tokens."""
    B, H, HV, K, V = 4, 2, 4, 128, 128
    static = make_inputs(B, 1, H, HV, K, V, dtype=torch.float64)
    static = {n: (t.bfloat16() if n in "qkv" else t.float()) for n, t in static.items()}
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True)
    gdn2.fast.fused_recurrent_gdn2(**static, **kw)                       # compile outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        o_static, ht_static = gdn2.fast.fused_recurrent_gdn2(**static, **kw)
    state = static["initial_state"].clone()
    for _ in range(3):                                                    # three tokens, state chained
        fresh = make_inputs(B, 1, H, HV, K, V, dtype=torch.float64, initial_state=False)
        fresh = {n: (t.bfloat16() if n in "qkv" else t.float()) for n, t in fresh.items()}
        o_ref, ht_ref = gdn2.fast.fused_recurrent_gdn2(**fresh, initial_state=state, **kw)
        for n, t in fresh.items():
            static[n].copy_(t)
        static["initial_state"].copy_(state)
        graph.replay()
        torch.cuda.synchronize()
        assert torch.equal(o_static, o_ref) and torch.equal(ht_static, ht_ref)
        state = ht_ref
