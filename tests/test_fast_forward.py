"""The Triton chunkwise forward (gdn2.fast.chunk_gdn2) against the float64 reference.

On the CPU the kernels run through Triton's interpreter at tiny shapes (float32 and float16 only:
the interpreter's tl.dot is wrong on bfloat16 operands); the tests marked ``gpu`` run realistic
shapes in bfloat16 on a CUDA GPU.
"""

import subprocess
import sys

import pytest
import torch
import triton
import triton.language as tl

import gdn2.fast
from gdn2.fast.jit import gate
from gdn2.ops import chunk_gdn2 as ref_chunk_gdn2
from gdn2.ops import recurrent_gdn2

from gdn2_testing import DEVICE, DT, TOLERANCES, assert_close, gate_parameters, gpu, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]
NAMES = ("q", "k", "v", "g", "b", "w", "initial_state")



def cast(inputs: dict, dtype: torch.dtype) -> tuple[dict, dict]:
    """(inputs for the kernel: q, k, v in dtype, gates float32; the same values in float64)."""
    low = {n: x.to(dtype) if n in "qkv" else x.float() for n, x in inputs.items()}
    return low, {n: x.double() for n, x in low.items()}


def check(inputs: dict, dtype: torch.dtype, oracle=recurrent_gdn2, **kw):
    """Run the Triton op on ``inputs`` cast to dtype; compare o and ht with the float64 oracle."""
    low, exact = cast(inputs, dtype)
    extras = {n: kw[n].double() for n in ("A_log", "dt_bias") if kw.get(n) is not None}
    ref_kw = {n: x for n, x in kw.items() if n not in ("chunk_size", "chunk_indices")}
    o_ref, ht_ref = oracle(**exact, output_final_state=True, **{**ref_kw, **extras})
    o, ht = gdn2.fast.chunk_gdn2(**low, output_final_state=True, **kw)
    assert o.dtype == dtype and ht.dtype == torch.float32
    tol = TOLERANCES[{torch.float32: "triton-float32", torch.float16: "triton-float16",
                      torch.bfloat16: "triton-bfloat16"}[dtype]][0]
    assert_close("o", o, o_ref, tol)
    assert_close("ht", ht, ht_ref, tol)
    return o, ht


# ---- CPU interpreter (and GPU): every option at tiny shapes ---------------------------------------
@pytest.mark.parametrize(
    "B,T,H,HV,K,V,dtype",
    [
        pytest.param(2, 40, 2, 2, 16, 16, "fp32", id="B2-T40-H2-K16-V16-fp32"),
        pytest.param(1, 130, 1, 1, 32, 16, "fp32", id="B1-T130-H1-K32-V16-fp32"),
        pytest.param(2, 65, 1, 2, 32, 32, "fp16", id="B2-T65-H1-HV2-K32-V32-fp16"),
        pytest.param(1, 64, 2, 4, 16, 32, "fp32", id="B1-T64-H2-HV4-K16-V32-gva"),
        pytest.param(1, 1, 1, 1, 16, 16, "fp32", id="B1-T1-K16-V16-one-token"),
        pytest.param(1, 70, 1, 2, 20, 12, "fp32", id="B1-T70-HV2-K20-V12-unaligned-dims"),
        pytest.param(1, 40, 1, 2, 160, 16, "fp32", id="B1-T40-HV2-K160-V16-two-state-tiles"),
    ],
)
def test_chunk_matches_recurrence(B, T, H, HV, K, V, dtype):
    check(make_inputs(B, T, H, HV, K, V), DT[dtype])


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_chunk_options_together(dtype):
    """Packed sequences (one empty), GVA, initial state, in-kernel L2 norm and gate, all at once."""
    H, K = 2, 16
    inputs = make_inputs(1, 77, H, 4, K, 16, N=4)
    inputs["g"] = torch.randn_like(inputs["g"])              # raw gate: any sign
    inputs["q"], inputs["k"] = 3 * inputs["q"], 0.2 * inputs["k"]
    cu = torch.tensor([0, 5, 5, 40, 77], device=DEVICE)
    A_log, dt_bias = gate_parameters(H, K)
    check(inputs, DT[dtype], cu_seqlens=cu, use_qk_l2norm_in_kernel=True, A_log=A_log, dt_bias=dt_bias)


@triton.jit
def _gate_kernel(x, A_log, out, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(out + o, gate(tl.load(x + o, mask=o < n, other=0.0), tl.load(A_log)), mask=o < n)


def test_in_op_gate_is_accurate_for_every_input():
    """The kernels' gate g = −exp(A_log)·softplus(x) against float64 element by element, x from −87 (below,
    softplus(x) ≈ e^x is no longer a normal float32) to 100: within a few roundings of float32, also where
    e^x is too small to change 1 + e^x."""
    x = torch.linspace(-87, 100, 4001, device=DEVICE)
    A_log = torch.tensor([1.3], device=DEVICE)
    out = torch.empty_like(x)
    _gate_kernel[(1,)](x, A_log, out, x.numel(), BLOCK=4096)
    exact = -torch.exp(A_log.double()) * torch.nn.functional.softplus(x.double())
    rel = (out.double() - exact).abs() / exact.abs()
    worst = int(rel.argmax())
    assert rel[worst] < 1e-6, f"largest relative error {rel[worst]:.2e}, at x = {x[worst].item():.4f}"


def test_chunk_precomputed_chunk_indices_and_no_state():
    from gdn2.fast.utils import prepare_chunk_indices

    inputs = make_inputs(1, 150, 1, 1, 16, 16, N=3, initial_state=False)
    cu = torch.tensor([0, 70, 71, 150], device=DEVICE, dtype=torch.int32)
    idx = prepare_chunk_indices(cu, 64, 150)
    # lengths 70, 1, 79: 2 + 1 + 2 chunks in 150 // 64 + 3 = 5 slots
    assert idx[:, 0].tolist() == [0, 0, 1, 2, 2] and idx[:, 1].tolist() == [0, 1, 0, 0, 1]
    check(inputs, torch.float32, cu_seqlens=cu, chunk_indices=idx)
    low, _ = cast(inputs, torch.float32)
    o, ht = gdn2.fast.chunk_gdn2(**low, cu_seqlens=cu)
    assert ht is None and torch.isfinite(o).all()


@pytest.mark.parametrize("g_min", [-20.0, -1e4], ids=["g-20", "g-1e4"])
def test_chunk_strong_decay_stays_finite_and_accurate(g_min):
    """exp(−G) overflows float32 within one chunk here; pairwise factors must not."""
    inputs = make_inputs(1, 100, 1, 1, 48, 16, g_min=g_min)
    check(inputs, torch.float32)


@pytest.mark.parametrize("dtype", ["fp32", "fp16"])
def test_chunk_diagonal_product_and_fallback_mix(dtype):
    """Diagonal sub-blocks: rows within 60 of decay of their sub-chunk's first row use the anchored
    product, later rows the per-column fallback. Strong decay in a few channels switches paths
    mid sub-chunk, at a sub-chunk's first row (which the anchor excludes) and in one of the two key
    tiles (K = 48) only."""
    inputs = make_inputs(1, 100, 1, 1, 48, 16)
    g = inputs["g"]
    g[0, 20:24, 0, 3] = -25.0      # sub-chunk 16..31: rows from 22 on are past 60 in tile 0
    g[0, 33, 0, 40] = -70.0        # sub-chunk 32..47: every row but the first, in tile 1
    g[0, 80, 0, 5] = -1e3          # first row of sub-chunk 80..95: only the off-diagonal factors see it
    g[0, 90, 0, 6] = -1e3          # ... and rows 90..95 of it fall back
    check(inputs, DT[dtype])


def test_chunk_is_causal():
    """Changing the last tokens (wildly) changes no earlier output, in a partly filled last chunk."""
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


def test_chunk_does_not_mutate_inputs():
    inputs = make_inputs(1, 20, 1, 1, 16, 16)
    low, _ = cast(inputs, torch.float32)
    before = {n: x.clone() for n, x in low.items()}
    gdn2.fast.chunk_gdn2(**low, output_final_state=True)
    for n in low:
        assert torch.equal(low[n], before[n]), n


def test_chunk_bad_inputs_raise_named_errors():
    low, _ = cast(make_inputs(1, 8, 1, 1, 16, 16), torch.float32)
    with pytest.raises(ValueError, match="chunk_size must be 64"):
        gdn2.fast.chunk_gdn2(**low, chunk_size=32)
    with pytest.raises(TypeError, match="float16, bfloat16 or float32"):
        gdn2.fast.chunk_gdn2(**{n: x.double() for n, x in low.items()})
    with pytest.raises(ValueError, match="w must have the shape of v"):
        gdn2.fast.chunk_gdn2(**{**low, "w": low["w"][..., :8]})
    big, _ = cast(make_inputs(1, 2, 1, 1, 272, 16), torch.float32)
    with pytest.raises(ValueError, match="K, V <= 256"):
        gdn2.fast.chunk_gdn2(**big)


def test_import_is_lazy_and_registered():
    """``import gdn2.fast`` imports no Triton; the registry finds both operators."""
    code = "import sys, gdn2, gdn2.fast; assert 'triton' not in sys.modules; print(gdn2.fast.unavailable_reason())"
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)
    from gdn2.backends import get_backend

    module = get_backend("triton")
    assert module.chunk_gdn2 is gdn2.fast.chunk_gdn2 and callable(module.fused_recurrent_gdn2)


# ---- GPU: realistic shapes in bfloat16 ------------------------------------------------------------
@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "B,T,H,HV,K,V",
    [
        pytest.param(2, 300, 2, 2, 128, 128, id="B2-T300-H2-K128-V128-bf16"),
        pytest.param(1, 257, 2, 2, 64, 128, id="B1-T257-H2-K64-V128-bf16"),
    ],
)
def test_gpu_chunk_matches_recurrence(B, T, H, HV, K, V):
    check(make_inputs(B, T, H, HV, K, V, dtype=torch.float64), torch.bfloat16)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("K,V,dtype", [(256, 256, "bf16"), (160, 64, "bf16"), (64, 192, "bf16"), (256, 256, "fp32"),
                                       (160, 16, "fp32"), (256, 128, "fp16")],
                         ids=["K256-V256", "K160-V64", "K64-V192", "K256-V256-fp32", "K160-V16-fp32", "K256-V128-fp16"])
def test_gpu_chunk_large_heads(K, V, dtype):
    """K, V above 128: the state is two 128-row tiles; packed, GVA, h0."""
    cu = torch.tensor([0, 1, 130, 300], device=DEVICE)
    check(make_inputs(1, 300, 1, 2, K, V, N=3, dtype=torch.float64), DT[dtype], cu_seqlens=cu)


def test_state_kernel_width_rule():
    """The state kernel's V-block rule: the narrowest width whose programs fit in one wave of SMs (16-bit
    inputs); when none does, BV 64 up to two waves' worth of (sequence, value head) pairs, else BV 128
    with 8 warps; float32 and K > 128 keep their shared-memory limits."""
    from gdn2.fast.chunk_fwd import _state_block_v

    assert _state_block_v(16, 128, 128) == (16, 4)          # 1×16K, H 16: 128 programs at BV 16
    assert _state_block_v(32, 128, 128) == (32, 4)          # 2×8K
    assert _state_block_v(64, 128, 128) == (64, 4)          # 4×4K
    assert _state_block_v(128, 128, 128) == (128, 8)        # 8×2K: one wave at BV 128
    assert _state_block_v(144, 128, 128) == (64, 4)         # packed row, 9 documents: past one wave
    assert _state_block_v(264, 128, 128) == (64, 4)         # up to two waves' worth of pairs
    assert _state_block_v(265, 128, 128) == (128, 8)        # more: no width fits one wave
    assert _state_block_v(512, 128, 128) == (128, 8)
    assert _state_block_v(144, 32, 128) == (32, 4)          # never wider than V
    assert _state_block_v(128, 64, 128) == (64, 4)          # never wider than V
    assert _state_block_v(16, 128, 128, itemsize=4) == (16, 4)
    assert _state_block_v(128, 128, 128, itemsize=4) == (32, 4)
    assert _state_block_v(512, 128, 128, itemsize=4) == (64, 4)
    assert _state_block_v(512, 128, 256) == (32, 4)
    assert _state_block_v(512, 128, 256, save=True) == (16, 4)


def test_state_kernel_stage_rule():
    """Three stages for the state kernel only where tests/test_fast_launch_limits.py holds the third buffer
    within the card's shared memory: 16-bit inputs, K <= 128, BV <= 32; an explicit setting wins."""
    from gdn2.fast.chunk_fwd import _state_stages, forward_config
    from gdn2.fast.config import ForwardConfig, StateLaunch

    assert _state_stages(16, 128, 2) == 3 and _state_stages(32, 64, 2) == 3
    assert _state_stages(64, 128, 2) == 2 and _state_stages(128, 128, 2) == 2
    assert _state_stages(16, 129, 2) == 2 and _state_stages(16, 256, 2) == 2
    assert _state_stages(16, 128, 4) == 2
    cpu = torch.device("cpu")
    # 1×64K at H 16 (16 programs) takes BV 16 and three stages; 8×2K (128 programs) BV 128 and two
    assert forward_config(None, 128, 128, 1, 16, 2, True, cpu).state.num_stages == 3
    assert forward_config(None, 128, 128, 8, 16, 2, True, cpu).state.num_stages == 2
    assert forward_config(None, 128, 128, 1, 16, 4, False, cpu).state.num_stages == 2
    explicit = ForwardConfig(state=StateLaunch(num_stages=2))
    assert forward_config(explicit, 128, 128, 1, 16, 2, True, cpu).state.num_stages == 2


def test_wy_value_tile_is_never_narrower_than_key_tile():
    """The WY kernel's tiles for every head size: BV >= BK (a narrower value tile faults with bfloat16
    operands, benchmarks/triton_faults.py), each no wider than 128 and its head size rounded up."""
    from gdn2.fast.chunk_fwd import forward_config

    for K in range(1, 257):
        for V in (1, 12, 16, 17, 32, 64, 100, 128, 256):
            wy = forward_config(None, K, V, 1, 1, 2, False, torch.device("cpu")).wy
            assert wy.BV >= wy.BK and wy.BK <= max(16, triton.next_power_of_2(K)), (K, V, wy)
            assert wy.BV <= 128 and wy.BV >= min(128, triton.next_power_of_2(V)), (K, V, wy)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("K,V", [(20, 12), (32, 16), (128, 16), (64, 32)])
def test_gpu_bf16_narrow_value_heads(K, V):
    """bfloat16 where the value head is narrower than the key tile (the WY kernel's old fault), with GVA
    and an initial state, against the recurrence."""
    check(make_inputs(1, 70, 1, 2, K, V), torch.bfloat16)


@pytest.mark.parametrize("dtype", [pytest.param("fp32", id="fp32"), pytest.param("bf16", marks=gpu, id="bf16")])
def test_load_order_options_change_no_value(dtype):
    """``WYLaunch.LOADS_FIRST`` (on by default) moves the WY kernel's loads of a key tile before its work, and
    ``DiagLaunch.PREFETCH`` loads the diagonal kernel's next key tile a step early (K = 40: a partial
    last tile): every product of the forward (with the in-op gate and logit gates, saving for a
    backward) is the same, bit for bit in the interpreter; compiled for a GPU, the prefetching kernel's
    other schedule may round differently (its A differed on an H100 in bfloat16), so there the products
    must agree within the path's output tolerance."""
    from gdn2.fast.chunk_fwd import INTRA, WY, chunk_gdn2_fwd
    from gdn2.fast.config import DiagLaunch, ForwardConfig, WYLaunch

    H, K = 2, 40
    x = make_inputs(1, 100, H, 4, K, 16)
    x["g"] = torch.randn_like(x["g"])
    low, _ = cast(x, DT[dtype])
    A_log, dt_bias = gate_parameters(H, K)
    kw = dict(scale=K ** -0.5, output_final_state=True, save=True, A_log=A_log, dt_bias=dt_bias, b_scale=2.0,
              use_qk_l2norm_in_kernel=True)
    base = chunk_gdn2_fwd(**low, **kw)
    for config in (ForwardConfig(wy=WYLaunch(LOADS_FIRST=False)), ForwardConfig(diag=DiagLaunch(PREFETCH=True))):
        other = chunk_gdn2_fwd(**low, **kw, config=config)
        for name in ("o", "final_state", *WY, *INTRA):
            a, e = getattr(other, name), getattr(base, name)
            if DEVICE == "cpu":
                assert torch.equal(a, e), (config, name)
            else:
                assert_close(f"{config} {name}", a, e, TOLERANCES[f"triton-{low['q'].dtype}".replace("torch.", "")][0])
    with pytest.raises(TypeError, match="LOADS_FIRST must be a bool"):
        WYLaunch(LOADS_FIRST=1)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("BV,warps", [(16, 4), (32, 4), (64, 4), (128, 8)], ids=["BV16", "BV32", "BV64", "BV128-w8"])
def test_gpu_state_kernel_widths(BV, warps):
    """Every width the rule can pick, forced (small tests get BV 16 from it), bf16, GVA, h0, saving or not."""
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import ForwardConfig, StateLaunch

    low, exact = cast(make_inputs(2, 300, 2, 4, 128, 128, dtype=torch.float64), torch.bfloat16)
    o_ref, ht_ref = recurrent_gdn2(**exact, output_final_state=True)
    tol = TOLERANCES["triton-bfloat16"][0]
    narrow = chunk_gdn2_fwd(**low, scale=128 ** -0.5, output_final_state=True, save=True,
                            config=ForwardConfig(state=StateLaunch(BV=16, num_warps=4)))
    for save in (False, True):
        out = chunk_gdn2_fwd(**low, scale=128 ** -0.5, output_final_state=True, save=save,
                             config=ForwardConfig(state=StateLaunch(BV=BV, num_warps=warps)))
        assert_close("o", out.o, o_ref, tol)
        assert_close("ht", out.final_state, ht_ref, tol)
    # what the backward reads, every chunk's start state and R, as the narrowest width writes them (the
    # widths round S to bfloat16 in the same places, so they differ by rounding order only)
    assert_close("h", out.h, narrow.h, tol)
    assert_close("R", out.R, narrow.R, tol)


@pytest.mark.gpu
@gpu
def test_gpu_packed_row_past_one_wave_takes_bv64_by_rule():
    """A packed row of more (sequence, value head) pairs than the card has SMs, within two waves (9
    documents × 16 value heads on a card of 132): the width rule's own launch, BV 64 with 4 warps, against
    the float64 recurrence. Documents of uneven lengths, one shorter than a chunk."""
    from gdn2.fast.chunk_fwd import _sm_count, forward_config

    HV = 16
    N = _sm_count(torch.cuda.current_device()) // HV + 1              # N·HV in (n_sm, 2·n_sm]
    lengths = [40 + (97 * n) % 150 for n in range(N)]
    cu = torch.tensor([0] + lengths, device=DEVICE).cumsum(0)
    config = forward_config(None, 128, 128, N, HV, 2, False, torch.device(DEVICE))
    assert (config.state.BV, config.state.num_warps) == (64, 4)
    check(make_inputs(1, sum(lengths), 4, HV, 128, 128, N=N, dtype=torch.float64), torch.bfloat16, cu_seqlens=cu)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("T", [4096, 16384])
def test_gpu_chunk_long_matches_float64_chunk(T):
    """Long sequences against gdn2.ops.chunk_gdn2 in float64 (tested equal to the recurrence)."""
    check(make_inputs(1, T, 2, 2, 128, 128, dtype=torch.float64), torch.bfloat16, oracle=ref_chunk_gdn2)


@pytest.mark.gpu
@gpu
def test_gpu_chunk_float32_and_options():
    H, K = 4, 128
    inputs = make_inputs(1, 1193, H, 8, K, 128, N=5, dtype=torch.float64)
    cu = torch.tensor([0, 1, 64, 128, 193, 1193], device=DEVICE)
    inputs["g"] = torch.randn_like(inputs["g"])
    A_log, dt_bias = gate_parameters(H, K)
    for dtype in (torch.float32, torch.bfloat16):
        check(inputs, dtype, oracle=ref_chunk_gdn2, cu_seqlens=cu, use_qk_l2norm_in_kernel=True, A_log=A_log,
              dt_bias=dt_bias)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("g_min", [-20.0, -1e4], ids=["g-20", "g-1e4"])
def test_gpu_chunk_strong_decay(g_min):
    check(make_inputs(2, 1000, 2, 2, 128, 128, g_min=g_min, dtype=torch.float64), torch.bfloat16,
          oracle=ref_chunk_gdn2)


@pytest.mark.gpu
@gpu
def test_gpu_chunk_is_causal():
    low, _ = cast(make_inputs(1, 1000, 4, 4, 128, 128), torch.bfloat16)
    o1, h1 = gdn2.fast.chunk_gdn2(**low)
    t = 990
    low["k"][:, t:] *= 40
    low["v"][:, t:] *= -40
    low["g"][:, t:] = -1e4
    o2, _ = gdn2.fast.chunk_gdn2(**low)
    assert torch.equal(o1[:, :t], o2[:, :t])


# ---- the float32 bounds catch a kernel that lost float32 precision -------------------------------
def tf32(x: torch.Tensor) -> torch.Tensor:
    """x rounded to tf32 (10 mantissa bits, nearest), as a tf32 matrix product rounds its operands."""
    bits = x.float().contiguous().view(torch.int32)
    return ((bits + 0x1000) & ~0x1FFF).view(torch.float32)


def test_float32_bound_rejects_tf32_operands():
    """The forward fed tf32-rounded operands (what tf32 products in the kernels would see) misses the
    float32 bound by far, while the exact inputs meet it: the bound tells float32 from tf32."""
    inputs = make_inputs(1, 130, 2, 2, 32, 32)
    low, exact = cast(inputs, torch.float32)
    o_ref, _ = recurrent_gdn2(**exact)
    tol = TOLERANCES["triton-float32"][0]
    o, _ = gdn2.fast.chunk_gdn2(**low)
    assert_close("o", o, o_ref, tol)
    rounded = {n: tf32(x) if n in ("q", "k", "v", "b", "w") else x for n, x in low.items()}
    o_tf32, _ = gdn2.fast.chunk_gdn2(**rounded)
    with pytest.raises(AssertionError, match="rel-RMS"):
        assert_close("o", o_tf32, o_ref, tol)


@pytest.mark.gpu
@gpu
def test_gpu_float32_bound_rejects_tf32_products():
    """On a GPU, the forward with tf32 products instead of float32 ones fails the float32 bound."""
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import ForwardConfig, StateLaunch

    # K = V = 64: tf32 operands take other layouts and more shared memory than K = 128 leaves room for
    low, exact = cast(make_inputs(2, 300, 2, 2, 64, 64, dtype=torch.float64), torch.float32)
    o_ref, _ = recurrent_gdn2(**exact)
    tol = TOLERANCES["triton-float32"][0]
    assert_close("o", chunk_gdn2_fwd(**low, scale=64 ** -0.5).o, o_ref, tol)
    config = ForwardConfig(precision="tf32", state=StateLaunch(BV=16, num_warps=4))
    o_tf32 = chunk_gdn2_fwd(**low, scale=64 ** -0.5, config=config).o
    with pytest.raises(AssertionError, match="rel-RMS"):
        assert_close("o", o_tf32, o_ref, tol)


def test_chunk_table_is_computed_once_per_offsets_tensor():
    """The layers of a model called with one cu_seqlens share one chunk table; changing the offsets or the
    table in place, or new offsets, gives a fresh one."""
    from gdn2.fast.utils import _chunk_table, prepare_chunk_indices

    cu = torch.tensor([0, 70, 71, 150], device=DEVICE)
    first = prepare_chunk_indices(cu, 64, 150)
    assert prepare_chunk_indices(cu, 64, 150) is first
    cu[1] = 65
    again = prepare_chunk_indices(cu, 64, 150)
    assert again is not first and torch.equal(again, _chunk_table(cu, 64, 150))
    assert prepare_chunk_indices(cu.clone(), 64, 150) is not again
    again[0, 0] = 7
    fresh = prepare_chunk_indices(cu, 64, 150)
    assert fresh is not again and torch.equal(fresh, _chunk_table(cu, 64, 150))
