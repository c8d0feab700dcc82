"""The layer and the language model under ``torch.compile(fullgraph=True)``: the same outputs and gradients
as eager, on the reference backend (CPU) and, on a GPU, the Triton backend's fused layer.

Run in a subprocess each: pytest's jaxtyping hook wraps the typed modules in checks that Dynamo cannot
trace, and users' code has no such hook. On the CPU the graphs run through ``aot_eager`` (whole-graph
capture, forward and backward, without Inductor's C++ code generation, which takes minutes there); on
a GPU through Inductor.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from gdn2_testing import gpu

HERE = Path(__file__).resolve().parent


def run(code: str) -> None:
    prelude = f"import sys; sys.path.insert(0, {str(HERE)!r})\n"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=1200)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-5000:]
    assert "ok" in done.stdout


LAYER = """
    import torch, gdn2
    from gdn2_testing import assert_close
    torch.manual_seed(0)
    dev, dtype, backend = {dev!r}, {dtype}, {backend!r}
    layer = gdn2.GDN2(64, 2, head_dim=32, backend=backend, allow_neg_eigval=True).to(dev, dtype)
    x = torch.randn(2, 40, 64, device=dev, dtype=dtype)
    def loss(m, x):
        y = m(x)
        return (y.float() * torch.linspace(-1, 1, y.shape[-1], device=y.device)).sum()
    x1 = x.clone().requires_grad_()
    l1 = loss(layer, x1)
    g1 = torch.autograd.grad(l1, [x1, *layer.parameters()])
    compiled = torch.compile(layer, fullgraph=True, backend={compiler!r})
    x2 = x.clone().requires_grad_()
    l2 = loss(compiled, x2)
    g2 = torch.autograd.grad(l2, [x2, *layer.parameters()])
    tol = {tol}
    assert_close("loss", l2.detach(), l1.detach(), tol)
    for (name, _), a, e in zip([("x", None), *layer.named_parameters()], g2, g1):
        assert_close("d" + name, a, e, tol)
    print("ok")
"""


def test_layer_compiles_fullgraph_reference():
    run(LAYER.format(dev="cpu", dtype="torch.float32", backend="reference", tol=1e-5, compiler="aot_eager"))


@pytest.mark.skipif(not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1",
                    reason="no GPU and no Triton interpreter")
def test_layer_compiles_fullgraph_triton_interpreted():
    """The fused layer (its custom operators and its shared-input projections) through Triton's
    interpreter on the CPU, or on the GPU where there is one."""
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    run(LAYER.format(dev=dev, dtype="torch.float32", backend="triton", tol=1e-5, compiler="aot_eager"))


def test_lm_compiles_fullgraph_reference():
    """The LM's loss, dense and on packed documents, and with activation checkpointing."""
    run("""
        import torch, gdn2
        from gdn2_testing import assert_close
        torch.manual_seed(0)
        lm = gdn2.GDN2LM(gdn2.GDN2LMConfig(num_layers=2, hidden_size=64, num_heads=2, head_dim=32,
                                           swa_layers=(1,), backend="reference"))
        ids = torch.randint(0, 256, (2, 33))
        l1 = lm.loss(ids)
        g1 = torch.autograd.grad(l1, list(lm.parameters()))
        compiled = torch.compile(lm.loss, fullgraph=True, backend="aot_eager")
        l2 = compiled(ids)
        g2 = torch.autograd.grad(l2, list(lm.parameters()))
        assert_close("loss", l2.detach(), l1.detach(), 1e-5)
        for (name, _), a, e in zip(lm.named_parameters(), g2, g1):
            assert_close("d" + name, a, e, 1e-4)
        # packed documents (one row, cu_seqlens), as pre-training feeds them
        row, cu = ids[:1], torch.tensor([0, 5, 5, 20, 33])
        l1 = lm.loss(row, cu_seqlens=cu)
        g1 = torch.autograd.grad(l1, list(lm.parameters()))
        l2 = compiled(row, cu_seqlens=cu)
        g2 = torch.autograd.grad(l2, list(lm.parameters()))
        assert_close("packed loss", l2.detach(), l1.detach(), 1e-5)
        for (name, _), a, e in zip(lm.named_parameters(), g2, g1):
            assert_close("packed d" + name, a, e, 1e-4)
        # with activation checkpointing (the blocks become checkpointed subgraphs)
        lm.config.gradient_checkpointing = True
        compiled = torch.compile(lm.loss, fullgraph=True, backend="aot_eager")
        l1 = lm.loss(ids)
        g1 = torch.autograd.grad(l1, list(lm.parameters()))
        l2 = compiled(ids)
        g2 = torch.autograd.grad(l2, list(lm.parameters()))
        assert_close("checkpointed loss", l2.detach(), l1.detach(), 1e-5)
        for (name, _), a, e in zip(lm.named_parameters(), g2, g1):
            assert_close("checkpointed d" + name, a, e, 1e-4)
        print("ok")
    """)


@pytest.mark.gpu
@gpu
def test_gpu_layer_compiles_fullgraph_triton():
    run(LAYER.format(dev="cuda", dtype="torch.bfloat16", backend="triton", tol=2e-2, compiler="inductor"))
