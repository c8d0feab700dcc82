"""The intra stage of the Triton forward (fast/intra_fwd.py) against the reference stages it implements,
and the typed launch settings of every kernel."""

import pytest
import torch
from test_fast_forward import cast, check

import gdn2.fast
from gdn2.fast import chunk_fwd
from gdn2.fast.config import BackwardConfig, DecodeLaunch, DiagLaunch, ForwardConfig, StateLaunch, WYLaunch
from gdn2.ops.chunk import chunk_forward, chunk_intra, chunk_local_cumsum, solve_unit_lower_blocked, to_chunks

from gdn2_testing import DEVICE, DT, assert_close, gate_parameters, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]


def chunked(x: torch.Tensor, H: int, key: bool = True) -> torch.Tensor:
    """[1, T, HX, D] -> the reference's chunk layout of chunk size 64 (key side without the group axis)."""
    y = to_chunks(x.double(), None, 64, H)
    return y[:, :, 0] if key else y


def test_intermediates_equal_the_reference_stages():
    """Every intermediate the forward saves equals the reference stage that defines it (float32 inputs,
    T not a multiple of 64, GVA, the in-op L2 norm): G (stage 1), A and A_qk from the blocked stage 2,
    Y and U (stage 3), the chunk start states and R (stage 4)."""
    H, HV, K, V, T = 1, 2, 32, 16, 150
    low, exact = cast(make_inputs(1, T, H, HV, K, V), torch.float32)
    low["q"], low["k"] = 3 * low["q"], 0.5 * low["k"]
    out = chunk_fwd.chunk_gdn2_fwd(**low, scale=K ** -0.5, output_final_state=True, save=True,
                                   use_qk_l2norm_in_kernel=True)
    norm = lambda x: x / torch.sqrt((x * x).sum(-1, keepdim=True) + 1e-6)   # noqa: E731
    q, k = chunked(norm(low["q"].double()), H), chunked(norm(low["k"].double()), H)
    g, b = chunked(low["g"], H), chunked(low["b"], H)
    v, w = chunked(low["v"], H, key=False), chunked(low["w"], H, key=False)
    h0 = low["initial_state"].double().view(1, H, HV // H, K, V)
    G = chunk_local_cumsum(g)
    T_mat, A_qk = chunk_intra(q, k, b, G, K ** -0.5)
    A = solve_unit_lower_blocked(T_mat)
    _, _, (G_ref, A_ref, Y, U, S0, R) = chunk_forward(q, k, v, g, b, w, K ** -0.5, h0)
    assert torch.allclose(A, A_ref, atol=1e-12) and torch.equal(G, G_ref)

    def tokens(x):                      # [1, H, NC, 64, D] or [1, H, Gr, NC, 64, D] -> [1, T, heads, D]
        x = x if x.dim() == 6 else x[:, :, None]
        return x.permute(0, 3, 4, 1, 2, 5).reshape(1, -1, x.shape[1] * x.shape[2], x.shape[-1])[:, :T]

    for name, got, expected in (("G", out.G, tokens(G)), ("A", out.A, tokens(A)), ("Aqk", out.Aqk, tokens(A_qk)),
                                ("Y", out.Y, tokens(Y)), ("U", out.U, tokens(U)), ("R", out.R, tokens(R))):
        assert_close(name, got, expected, 1e-5)
    S0 = S0.permute(0, 3, 1, 2, 4, 5).reshape(-1, HV, K, V)               # [slots, HV, K, V]
    assert_close("h", out.h, S0, 1e-5)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_sequence_lengths_around_the_chunk(dtype):
    """Packed sequences of lengths 1, 0, 63, 65 and 71 (one empty), GVA, initial state, L2 norm, gate."""
    H, K = 2, 16
    inputs = make_inputs(1, 200, H, 4, K, 16, N=5)
    inputs["g"] = torch.randn_like(inputs["g"])
    inputs["q"], inputs["k"] = 3 * inputs["q"], 0.2 * inputs["k"]
    cu = torch.tensor([0, 1, 1, 64, 129, 200], device=DEVICE)
    A_log, dt_bias = gate_parameters(H, K)
    check(inputs, DT[dtype], cu_seqlens=cu, use_qk_l2norm_in_kernel=True, A_log=A_log, dt_bias=dt_bias)


@pytest.mark.parametrize("wy", [WYLaunch(NP=2), WYLaunch(NP=3, BK=16, BV=16), WYLaunch(NP=8, BK=16, BV=16)],
                         ids=["NP2", "NP3-tiles16", "NP8-tiles16"])
def test_wy_programs_per_chunk(wy):
    """The WY kernel's tiles spread over NP programs per chunk give what one program per chunk gives,
    with key tiles and value tiles (of every value head of a GVA group) not dividing evenly by NP."""
    H, K = 1, 48
    low, _ = cast(make_inputs(1, 150, H, 2, K, 32), torch.float32)
    outs = [chunk_fwd.chunk_gdn2_fwd(**low, scale=K ** -0.5, save=True, config=ForwardConfig(wy=cfg))
            for cfg in (WYLaunch(NP=1, BK=wy.BK, BV=wy.BV), wy)]
    for name in ("o", "G", "Y", "Qg", "Kt", "U", "gC"):
        assert torch.equal(getattr(outs[0], name), getattr(outs[1], name)), name


def test_launch_settings_are_typed():
    """A misspelt or bad launch setting is an error, never silently ignored."""
    with pytest.raises(TypeError, match="BKX"):
        DiagLaunch(BKX=32)
    with pytest.raises(TypeError):
        ForwardConfig(intra=DiagLaunch())
    with pytest.raises(ValueError, match="power of two"):
        WYLaunch(BK=24)
    with pytest.raises(ValueError, match="positive int"):
        DecodeLaunch(num_warps=0)
    with pytest.raises(ValueError, match="StateLaunch.num_warps must be a power of two"):
        StateLaunch(num_warps=3)                       # Triton would fail to compile it, far from here
    low, _ = cast(make_inputs(1, 3, 1, 1, 16, 16), torch.float32)
    with pytest.raises(TypeError, match="launch must be a gdn2.fast.config.DecodeLaunch"):
        gdn2.fast.fused_recurrent_gdn2(**low, launch={"BV": 16})
    with pytest.raises(ValueError, match="precision"):
        BackwardConfig(precision="fp64")
    low, _ = cast(make_inputs(1, 8, 1, 1, 256, 16), torch.float32)
    with pytest.raises(ValueError, match="BKH"):
        chunk_fwd.chunk_gdn2_fwd(**low, scale=0.1, config=ForwardConfig(state=StateLaunch(BKH=64)))


def test_offset_width_does_not_change_the_forward(monkeypatch):
    """The off-diagonal kernel's int32 and int64 offsets address the same elements: every intermediate
    of the forward is bit-identical (packed rows with an empty and a one-token one, GVA, in-op gate)."""
    H, K = 2, 32
    low, _ = cast(make_inputs(1, 150, H, 4, K, 16, N=4), torch.float32)
    low["A_log"], low["dt_bias"] = gate_parameters(H, K)
    cu = torch.tensor([0, 0, 1, 90, 150], device=DEVICE)
    assert not chunk_fwd.needs_int64(*low.values())
    runs = []
    for off64 in (False, True):
        monkeypatch.setattr(chunk_fwd, "needs_int64", lambda *tensors, off64=off64: off64)
        runs.append(chunk_fwd.chunk_gdn2_fwd(**low, scale=K ** -0.5, output_final_state=True, cu_seqlens=cu,
                                             save=True, use_qk_l2norm_in_kernel=True))
    for name, a, b in zip(runs[0]._fields, *runs):
        if isinstance(a, torch.Tensor):     # unused chunk slots stay unwritten (NaN under the poison fixture)
            torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=name)
