"""The two intra stages of chunk size 64: the 16×16-tile kernels (fast/chunk_intra.py, the default,
``chunk_fwd.INTRA_V2``) and the one-kernel stage (``chunk_intra_wy_fwd_kernel``, which chunk sizes 16
and 32 always take). The tile kernels: the forward's options against the float64 recurrence, their
saved intermediates equal to the one-kernel stage's, gradients through them, and causality. The
tests of options, strong decay and gradients run the one-kernel stage at chunk size 64 too. Every
other test file runs the default."""

import pytest
import torch
from test_fast_backward import check_grads, with_gate
from test_fast_forward import cast, check

import gdn2.fast
from gdn2.fast import chunk_fwd

from gdn2_testing import DEVICE, DT, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]


@pytest.fixture(autouse=True)
def intra_v2(monkeypatch):
    monkeypatch.setattr(chunk_fwd, "INTRA_V2", True)


#: tests that also run the one-kernel stage at chunk size 64 take this parameter
STAGES = pytest.mark.parametrize("v2", [True, False], ids=["tiles", "one-kernel"])


@pytest.mark.parametrize(
    "B,T,H,HV,K,V,dtype",
    [
        pytest.param(1, 130, 1, 1, 32, 16, "fp32", id="B1-T130-K32-V16-fp32"),
        pytest.param(2, 65, 1, 2, 32, 32, "fp16", id="B2-T65-HV2-fp16"),
        pytest.param(1, 1, 1, 1, 16, 16, "fp32", id="T1"),
        pytest.param(1, 70, 1, 2, 20, 12, "fp32", id="unaligned-dims-gva"),
        pytest.param(1, 40, 1, 1, 160, 16, "fp32", id="K160-five-key-tiles"),
    ],
)
def test_v2_matches_recurrence(B, T, H, HV, K, V, dtype):
    check(make_inputs(B, T, H, HV, K, V), DT[dtype], chunk_size=64)


@STAGES
@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_v2_options_together(monkeypatch, v2, dtype):
    """Packed sequences (one empty, lengths around the chunk), GVA, initial state, L2 norm, gate."""
    monkeypatch.setattr(chunk_fwd, "INTRA_V2", v2)
    H, K = 2, 16
    inputs = make_inputs(1, 200, H, 4, K, 16, N=5)
    inputs["g"] = torch.randn_like(inputs["g"])
    inputs["q"], inputs["k"] = 3 * inputs["q"], 0.2 * inputs["k"]
    cu = torch.tensor([0, 1, 1, 64, 129, 200], device=DEVICE)
    A_log = torch.rand(H, device=DEVICE, dtype=torch.float64).float()
    dt_bias = torch.randn(H * K, device=DEVICE).float()
    check(inputs, DT[dtype], cu_seqlens=cu, use_qk_l2norm_in_kernel=True, A_log=A_log, dt_bias=dt_bias)


@STAGES
@pytest.mark.parametrize("g_min", [-20.0, -1e4], ids=["g-20", "g-1e4"])
def test_v2_strong_decay(monkeypatch, v2, g_min):
    monkeypatch.setattr(chunk_fwd, "INTRA_V2", v2)
    check(make_inputs(1, 100, 1, 1, 48, 16, g_min=g_min), torch.float32)


def test_v2_diagonal_product_and_fallback_mix():
    """The anchored product and the per-column fallback in one sub-chunk, in one of two key tiles."""
    inputs = make_inputs(1, 100, 1, 1, 48, 16)
    g = inputs["g"]
    g[0, 20:24, 0, 3] = -25.0
    g[0, 33, 0, 40] = -70.0
    g[0, 80, 0, 5] = -1e3
    g[0, 90, 0, 6] = -1e3
    check(inputs, torch.float32)


def test_v2_saves_what_the_default_path_saves(monkeypatch):
    """Every intermediate a backward reads equals the one-kernel path's (float32, packed, gate, norms)."""
    H, K = 2, 32
    inputs = make_inputs(1, 150, H, 4, K, 16, N=3)
    inputs["g"] = torch.randn_like(inputs["g"])
    low, _ = cast(inputs, torch.float32)
    cu = torch.tensor([0, 40, 41, 150], device=DEVICE)
    extra = dict(A_log=torch.rand(H, device=DEVICE), dt_bias=torch.randn(H * K, device=DEVICE))
    outs = {}
    for v2 in (False, True):
        monkeypatch.setattr(chunk_fwd, "INTRA_V2", v2)
        outs[v2] = chunk_fwd.chunk_gdn2_fwd(**low, scale=K ** -0.5, output_final_state=True, cu_seqlens=cu,
                                            use_qk_l2norm_in_kernel=True, save=True, **extra)
    rows = torch.cat([torch.arange(s, t, device=DEVICE) for s, t in zip(cu[:-1].tolist(), cu[1:].tolist())])
    for name in ("o", "final_state", "G", "A", "Aqk", "Y", "Qg", "Kt", "U", "R", "gC", "h", "q_rstd", "k_rstd"):
        a, e = getattr(outs[True], name), getattr(outs[False], name)
        if a.shape[:2] == (1, 150):           # token-major: compare the tokens of the sequences only
            a, e = a[:, rows], e[:, rows]
        if name in ("gC", "h"):                # slots of real chunks only (unused varlen slots are unwritten)
            used = chunk_fwd.prepare_chunk_indices(cu, 64, 150)
            slots = [int(cu[n]) // 64 + n + t for n, t in used.tolist() if n >= 0]
            a, e = a[slots], e[slots]
        assert torch.allclose(a, e, rtol=1e-4, atol=1e-5), (name, (a - e).abs().max().item())


@pytest.mark.parametrize("v2,recompute", [(True, True), (True, False), (False, True)],
                         ids=["tiles-recompute", "tiles-saved", "one-kernel-recompute"])
def test_v2_gradients(monkeypatch, v2, recompute):
    """Gradients of every input through the forward (packed, GVA, gate, L2 norm, h0, final-state gradient)."""
    monkeypatch.setattr(chunk_fwd, "INTRA_V2", v2)
    H, K = 1, 16
    inputs = with_gate(make_inputs(1, 150, H, 2, K, 16, N=3), H, K)
    cu = torch.tensor([0, 70, 71, 150], device=DEVICE)
    check_grads(inputs, torch.float32, cu_seqlens=cu, use_qk_l2norm_in_kernel=True, recompute=recompute)


def test_v2_is_causal():
    inputs = make_inputs(1, 100, 1, 1, 16, 16)
    low, _ = cast(inputs, torch.float32)
    o1, _ = gdn2.fast.chunk_gdn2(**low)
    t = 90
    for n, scale in (("k", 50.0), ("v", -30.0), ("b", 7.0), ("w", 9.0)):
        low[n][:, t:] = scale * low[n][:, t:].abs()
    low["g"][:, t:] = -1e4
    o2, _ = gdn2.fast.chunk_gdn2(**low)
    assert torch.equal(o1[:, :t], o2[:, :t])
    assert not torch.equal(o1[:, t:], o2[:, t:])


@pytest.mark.parametrize("wy", [{"NP": 2}, {"NP": 3, "BK": 16, "BV": 16}, {"NP": 8, "BK": 16, "BV": 16}],
                         ids=["NP2", "NP3-tiles16", "NP8-tiles16"])
def test_v2_wy_programs_per_chunk(wy):
    """The WY kernel's tiles spread over NP programs per chunk give what one program per chunk gives,
    with key tiles and value tiles (of every value head of a GVA group) not dividing evenly by NP."""
    H, K = 1, 48
    inputs = make_inputs(1, 150, H, 2, K, 32)
    low, _ = cast(inputs, torch.float32)
    outs = [chunk_fwd.chunk_gdn2_fwd(**low, scale=K ** -0.5, save=True,
                                     intra_config={"V2": True, "wy": cfg}) for cfg in ({**wy, "NP": 1}, wy)]
    for name in ("o", "G", "Y", "Qg", "Kt", "U", "gC"):
        assert torch.equal(getattr(outs[0], name), getattr(outs[1], name)), name

