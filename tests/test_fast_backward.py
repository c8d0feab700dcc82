"""The Triton backward (gradients of gdn2.fast.chunk_gdn2) against the float64 references.

Every gradient (q, k, v, g, b, w, the initial state, A_log and dt_bias) is compared with autograd
through the float64 recurrence, and each of the two backward stages with the reference's manual
backward stage (``gdn2.ops.chunk_bwd``) fed the same inputs. On the CPU the kernels run through
Triton's interpreter at tiny shapes (float32 and float16: its tl.dot is wrong on bfloat16 operands);
the tests marked ``gpu`` run realistic shapes in bfloat16.
"""

import pytest
import torch

import gdn2.fast
from gdn2.ops import chunk_gdn2 as ref_chunk_gdn2
from gdn2.ops import recurrent_gdn2
from gdn2.ops.chunk import chunk_forward, from_chunks, pairwise_decay, to_chunks
from gdn2.ops.chunk_bwd import chunk_bwd_local as ref_bwd_local
from gdn2.ops.chunk_bwd import chunk_bwd_state as ref_bwd_state
from gdn2.tolerances import gate_term_sizes

from gdn2_testing import DEVICE, DT, KIND, PATH, TOLERANCES, assert_close, gate_parameters, gpu, make_inputs

pytestmark = [
    pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None, reason=str(gdn2.fast.unavailable_reason())),
    pytest.mark.usefixtures("poison_triton_outputs"),
]



def cast(inputs: dict, dtype: torch.dtype) -> tuple[dict, dict]:
    """(inputs for the kernel: q, k, v in dtype, the rest float32; the same values in float64)."""
    low = {n: x.to(dtype) if n in "qkv" else x.float() for n, x in inputs.items()}
    return low, {n: x.double() for n, x in low.items()}


def grads(op, inputs: dict, do: torch.Tensor, dht: torch.Tensor | None, **kw) -> tuple:
    """(o, final state, {name: gradient}) of <o, do> + <ht, dht> for every floating input."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    o, ht = op(**leaves, output_final_state=dht is not None, **kw)
    loss = (o * do.to(o.dtype)).sum() + ((ht * dht.to(ht.dtype)).sum() if dht is not None else 0)
    return o, ht, dict(zip(leaves, torch.autograd.grad(loss, list(leaves.values()))))


def check_grads(inputs: dict, dtype: torch.dtype, oracle=recurrent_gdn2, final_state: bool = True,
                **kw) -> dict:
    """Gradients of the Triton op on ``inputs`` cast to dtype against the float64 oracle."""
    low, exact = cast(inputs, dtype)
    B, T, HV, V = low["v"].shape
    N = B if kw.get("cu_seqlens") is None else kw["cu_seqlens"].numel() - 1
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(B, T, HV, V, generator=gen, dtype=torch.float64).to(DEVICE)
    dht = torch.randn(N, HV, low["q"].shape[3], V, generator=gen, dtype=torch.float64).to(DEVICE)
    dht = dht if final_state else None
    ref_kw = {n: x for n, x in kw.items() if n not in ("chunk_size", "chunk_indices", "recompute")}
    _, _, expected = grads(oracle, exact, do, dht, **ref_kw)
    _, _, got = grads(gdn2.fast.chunk_gdn2, low, do, dht, **kw)
    tols = TOLERANCES[PATH[dtype]]
    sizes = (gate_term_sizes(exact["g"], exact["A_log"], exact["dt_bias"], expected["g"]) if "A_log" in exact
             else {})
    for name, g in got.items():
        assert g.dtype == low[name].dtype, f"d{name}: dtype {g.dtype}, expected {low[name].dtype}"
        assert_close(f"d{name}", g, expected[name], tols[KIND["h0" if name == "initial_state" else name]],
                     sizes.get(name))
    return got


def with_gate(inputs: dict, H: int, K: int, seed: int = 0) -> dict:
    """The same inputs with a raw gate (g ~ N(0, 1)) and the in-op gate's A_log, dt_bias (see
    ``gate_parameters``)."""
    gen = torch.Generator().manual_seed(seed)
    out = dict(inputs)
    out["g"] = torch.randn(inputs["g"].shape, generator=gen, dtype=torch.float64).to(DEVICE)
    out["A_log"], out["dt_bias"] = (x.double() for x in gate_parameters(H, K, gen))
    return out


def diag_fast_valid(g: torch.Tensor, C: int) -> torch.Tensor:
    """[B, T, H] whether each token takes the pairwise kernel's fast diagonal products: the kernel's rule
    max_d (G_a − G_t) ≤ EXP_MAX, a = the first token of t's 16-token sub-chunk, G chunk-local."""
    from gdn2.fast.chunk_bwd import BC, EXP_MAX

    B, T, H, K = g.shape
    Tp = -(-T // C) * C
    G = torch.nn.functional.pad(g.double(), (0, 0, 0, 0, 0, Tp - T)).view(B, Tp // C, C, H, K).cumsum(2)
    Ga = G[:, :, ::BC].repeat_interleave(BC, dim=2)
    return ((Ga - G).amax(-1) <= EXP_MAX).view(B, Tp, H)[:, :T]


# ---- CPU interpreter (and GPU): every gradient against the float64 recurrence -----------------
@pytest.mark.parametrize(
    "B,T,H,HV,K,V,dtype",
    [
        pytest.param(2, 45, 2, 4, 32, 16, "fp32", id="B2-T45-H2-HV4-K32-V16-fp32"),
        pytest.param(1, 70, 1, 1, 16, 16, "fp16", id="B1-T70-H1-K16-V16-fp16"),
        pytest.param(2, 40, 1, 1, 20, 12, "fp32", id="B2-T40-H1-K20-V12-unaligned-dims"),
        pytest.param(1, 20, 1, 2, 144, 16, "fp32", id="B1-T20-H1-HV2-K144-V16-two-state-tiles"),
    ],
)
def test_backward_matches_recurrence(B, T, H, HV, K, V, dtype):
    inputs = make_inputs(B, T, H, HV, K, V)
    assert diag_fast_valid(inputs["g"], 64).all()                      # the diagonal fast path only
    check_grads(inputs, DT[dtype])


@pytest.mark.parametrize("recompute,logits", [(True, False), (False, False), ("partial", False), ("states", False),
                                              (True, True)],
                         ids=["recompute", "saved", "partial", "states", "recompute-gate-logits"])
def test_backward_all_options_together(recompute, logits):
    """Packed sequences (one empty), GVA, in-op L2 norm and gate (and the gates b, w as logits, b in
    [0, 2]): every gradient incl. A_log, dt_bias."""
    H, K = 1, 16
    inputs = with_gate(make_inputs(1, 70, H, 2, K, 16, N=3), H, K)
    inputs["q"], inputs["k"] = 3 * inputs["q"], 2 * inputs["k"]          # not unit norm: the op normalises
    cu = torch.tensor([0, 30, 30, 70], device=DEVICE)
    extra = {}
    if logits:
        inputs["b"], inputs["w"] = 2 * torch.randn_like(inputs["b"]), 2 * torch.randn_like(inputs["w"])
        extra = dict(use_gate_sigmoid_in_kernel=True, allow_neg_eigval=True)
    got = check_grads(inputs, torch.float32, cu_seqlens=cu, use_qk_l2norm_in_kernel=True, recompute=recompute,
                      **extra)
    assert set(got) == {"q", "k", "v", "g", "b", "w", "initial_state", "A_log", "dt_bias"}


def test_backward_gate_parameters_of_a_dense_batch():
    """Dense batch of two sequences of two chunks, in-op gate: the gradients of A_log and dt_bias sum the
    partial sums of every chunk of every sequence (each program owns one row of them)."""
    H, K = 2, 16
    check_grads(with_gate(make_inputs(2, 70, H, 2, K, 16), H, K), torch.float32, use_qk_l2norm_in_kernel=True)


@pytest.mark.parametrize("gate", [False, True], ids=["plain", "in-op-gate"])
def test_every_recompute_mode_gives_identical_gradients(gate):
    """What the forward keeps changes which kernels the backward reruns, never a value: the four modes
    give bit-identical gradients (the in-op gate adds its g to what "partial" keeps)."""
    inputs = make_inputs(1, 50, 1, 2, 16, 16)
    if gate:
        inputs = with_gate(inputs, 1, 16)
    low, _ = cast(inputs, torch.float32)
    do = torch.randn(1, 50, 2, 16, device=DEVICE)
    dht = torch.randn(1, 2, 16, 16, device=DEVICE)
    kw = dict(use_qk_l2norm_in_kernel=True) if gate else {}
    _, _, g1 = grads(gdn2.fast.chunk_gdn2, low, do, dht, recompute=True, **kw)
    for mode in (False, "partial", "states"):
        _, _, g2 = grads(gdn2.fast.chunk_gdn2, low, do, dht, recompute=mode, **kw)
        for name in g1:
            assert torch.equal(g1[name], g2[name]), f"d{name} differs between recompute=True and {mode!r}"


@pytest.mark.parametrize("keep", ["intra", "wy", "all"])
@pytest.mark.parametrize("gate", [False, True], ids=["plain", "in-op-gate"])
def test_the_forward_op_keeps_what_its_fake_implementation_says(keep, gate):
    """recompute="partial" ("intra") keeps A, A_qk and the two norms (and the gate's g); "states" ("wy")
    those but the gate's g, and G, Y, Q_γ, K_tail, U, γ_C; False ("all") every intermediate. The fake
    implementation that torch.compile plans memory with gives the same names, shapes and dtypes."""
    import gdn2.fast.custom_op  # noqa: F401  (registers torch.ops.gdn2.*; no earlier test may be relied on)
    from gdn2.fast.chunk_fwd import INTRA, SAVED, WY

    inputs = make_inputs(1, 70, 2, 2, 16, 8)
    if gate:
        inputs = with_gate(inputs, 2, 16)
    low, _ = cast(inputs, torch.float32)
    args = [low[n] for n in "qkvgbw"] + [low.get("A_log"), low.get("dt_bias"), low["initial_state"], None, None,
                                        0.25, False, False, 0.0]
    _, _, kept = torch.ops.gdn2.chunk_gdn2_fwd(*args, keep)
    names = {"intra": INTRA if gate else INTRA[:-1], "wy": INTRA[:-1] + WY, "all": SAVED}[keep]
    assert len(kept) == len(names)
    assert all(x is not None for x in kept)
    with torch._subclasses.fake_tensor.FakeTensorMode(allow_non_fake_inputs=True):
        _, _, fake = torch.ops.gdn2.chunk_gdn2_fwd(*args, keep)
    for name, x, f in zip(names, kept, fake):
        assert (x.shape, x.dtype) == (f.shape, f.dtype), name
    assert torch.ops.gdn2.chunk_gdn2_fwd(*args, "inputs")[2] == []


@pytest.mark.parametrize("recompute,launches", [(True, (2, 2, 2)), ("partial", (1, 2, 2)), ("states", (1, 1, 2)),
                                               (False, (1, 1, 1))],
                         ids=["recompute", "partial", "states", "saved"])
def test_backward_reruns_only_the_stages_not_kept(monkeypatch, recompute, launches):
    """Launches of one forward + backward: the intra kernels (stages (1)-(2)), the WY kernel (stage (3))
    and the state kernel (stages (4)-(5)) run again in the backward exactly when their products were not
    kept."""
    from gdn2.fast import chunk_fwd

    class Counted:
        def __init__(self, kernel):
            self.kernel, self.n = kernel, 0

        def __getitem__(self, grid):
            self.n += 1
            return self.kernel[grid]

    names = ("chunk_intra_diag_kernel", "chunk_intra_offdiag_kernel", "chunk_wy_fwd_kernel",
             "chunk_state_output_fwd_kernel")
    counted = {n: Counted(getattr(chunk_fwd, n)) for n in names}
    for n, c in counted.items():
        monkeypatch.setattr(chunk_fwd, n, c)
    low, _ = cast(make_inputs(1, 40, 1, 1, 16, 16), torch.float32)
    grads(gdn2.fast.chunk_gdn2, low, torch.randn(1, 40, 1, 16, device=DEVICE), None, recompute=recompute)
    assert [c.n for c in counted.values()] == [launches[0]] * 2 + list(launches[1:])


@pytest.mark.parametrize("recompute", [True, "partial", "states", False])
def test_unrecorded_call_keeps_nothing(monkeypatch, recompute):
    """Under no_grad, or with no input that requires a gradient, every recompute mode runs the forward
    that writes no intermediates (keep "inputs") and returns the same output; a recorded call keeps what
    its mode names."""
    from gdn2.fast import custom_op

    seen = []
    real = custom_op.chunk_gdn2_fwd

    def recording(*args, save, **kwargs):
        seen.append(save)
        return real(*args, save=save, **kwargs)

    monkeypatch.setattr(custom_op, "chunk_gdn2_fwd", recording)
    low, _ = cast(make_inputs(1, 40, 1, 1, 16, 16), torch.float32)
    with torch.no_grad():
        o_off = gdn2.fast.chunk_gdn2(**low, recompute=recompute)[0]
    o_plain = gdn2.fast.chunk_gdn2(**low, recompute=recompute)[0]                   # no input requires grad
    leaves = {n: x.detach().clone().requires_grad_() for n, x in low.items()}
    o_rec = gdn2.fast.chunk_gdn2(**leaves, recompute=recompute)[0]
    assert seen == [False, False, {"states": "wy", False: True}.get(recompute, False)]
    assert torch.equal(o_off, o_plain) and torch.equal(o_off, o_rec.detach())


def test_offset_width_does_not_change_gradients(monkeypatch):
    """The local kernels' int32 and int64 offsets address the same elements: bit-identical gradients
    (packed rows with an empty one, GVA, the in-op gate and L2 norm)."""
    from gdn2.fast import chunk_bwd

    H, K = 1, 16
    low, _ = cast(with_gate(make_inputs(1, 70, H, 2, K, 16, N=3), H, K), torch.float32)
    cu = torch.tensor([0, 30, 30, 70], device=DEVICE)
    do, dht = torch.randn(1, 70, 2, 16, device=DEVICE), torch.randn(3, 2, K, 16, device=DEVICE)
    assert not chunk_bwd.needs_int64(*low.values())
    runs = []
    for off64 in (False, True):
        monkeypatch.setattr(chunk_bwd, "needs_int64", lambda *tensors, off64=off64: off64)
        runs.append(grads(gdn2.fast.chunk_gdn2, low, do, dht, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)[2])
    for name in runs[0]:
        assert torch.equal(runs[0][name], runs[1][name]), f"d{name} differs between int32 and int64 offsets"


def test_recompute_must_be_a_bool_or_a_named_mode():
    low, _ = cast(make_inputs(1, 8, 1, 1, 16, 16), torch.float32)
    for bad in ("yes", 1, None, "wy", "intra"):
        with pytest.raises(ValueError, match="recompute"):
            gdn2.fast.chunk_gdn2(**low, recompute=bad)


def test_backward_output_only_without_states():
    """No initial state, no final state: the loss reads o only (dht is None in the backward)."""
    inputs = make_inputs(1, 33, 2, 2, 16, 16, initial_state=False)
    got = check_grads(inputs, torch.float32, final_state=False)
    assert "initial_state" not in got


# ---- stage by stage against the reference's manual backward ------------------------------------
def reference_stages(inputs: dict, C: int, do: torch.Tensor, dht: torch.Tensor) -> dict:
    """The reference's forward intermediates and both backward stages on the chunked layout (float64)."""
    q, k, v, g, b, w, h0 = (inputs[n] for n in ("q", "k", "v", "g", "b", "w", "initial_state"))
    N, H, HV = q.shape[0], q.shape[2], v.shape[2]
    K, V = q.shape[3], v.shape[3]
    scale = K ** -0.5
    key = [to_chunks(x, None, C, H)[:, :, 0] for x in (q, k, g, b)]          # [N, H, NC, C, K]
    val = [to_chunks(x, None, C, H) for x in (v, w, do)]                     # [N, H, Gr, NC, C, V]
    h0c, dhtc = h0.view(N, H, HV // H, K, V), dht.view(N, H, HV // H, K, V)
    qc, kc, gc, bc = key
    _, _, (G, A, Y, U, S0, R) = chunk_forward(qc, kc, val[0], gc, bc, val[1], scale, h0c)
    gamma = torch.exp(G)
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", qc, kc, pairwise_decay(G, strict=False))
    dS_end, dR, dh0 = ref_bwd_state(scale * gamma * qc, torch.exp(G[..., -1:, :] - G) * kc, gamma[..., -1, :],
                                    Y, A_qk, val[2], dhtc)
    local = ref_bwd_local(qc, kc, gc, bc, val[0], val[1], scale, G, A, Y, S0, R, dS_end, dR, val[2])
    return {"dS_end": dS_end, "dR": dR, "dh0": dh0, "local": local}


def slots(x: torch.Tensor) -> torch.Tensor:
    """[N, H, Gr, NC, K, V] per-chunk states -> the forward's slot layout [N·NC, HV, K, V]."""
    N, H, Gr, NC, K, V = x.shape
    return x.permute(0, 3, 1, 2, 4, 5).reshape(N * NC, H * Gr, K, V)


def test_state_stage_matches_reference():
    from gdn2.fast.chunk_bwd import chunk_bwd_state
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import BackwardConfig

    B, T, H, HV, K, V, C = 2, 140, 1, 2, 16, 16, 64
    low, exact = cast(make_inputs(B, T, H, HV, K, V), torch.float32)
    do, dht = torch.randn(B, T, HV, V, device=DEVICE), torch.randn(B, HV, K, V, device=DEVICE)
    ref = reference_stages(exact, C, do.double(), dht.double())
    saved = chunk_gdn2_fwd(**low, scale=K ** -0.5, save=True)
    dS_end, dR, dh0 = chunk_bwd_state(saved, do, dht, low["initial_state"], None, BackwardConfig())
    tol = TOLERANCES["triton-float32"]
    assert_close("dR", dR, from_chunks(ref["dR"], None, T), tol[1])
    assert_close("dS_end", dS_end, slots(ref["dS_end"]), tol[2])
    assert_close("dh0", dh0, ref["dh0"].reshape(B, HV, K, V), tol[2])


def test_local_stage_matches_reference():
    """The local stage fed the reference's dS_end and dR returns the reference's local gradients."""
    from gdn2.fast.chunk_bwd import chunk_bwd_local
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import BackwardConfig

    B, T, H, HV, K, V, C = 1, 150, 2, 4, 16, 16, 64
    low, exact = cast(make_inputs(B, T, H, HV, K, V), torch.float32)
    do, dht = torch.randn(B, T, HV, V, device=DEVICE), torch.randn(B, HV, K, V, device=DEVICE)
    ref = reference_stages(exact, C, do.double(), dht.double())
    saved = chunk_gdn2_fwd(**low, scale=K ** -0.5, save=True)
    dS_end = slots(ref["dS_end"]).float().contiguous()
    dR = from_chunks(ref["dR"], None, T).float().contiguous()
    out = chunk_bwd_local(low["q"], low["k"], low["v"], low["g"], low["b"], low["w"], K ** -0.5, None, saved,
                          do, dR, dS_end, BackwardConfig())
    expected = dict(zip(("q", "k", "g", "b", "v", "w"), ref["local"]))      # the reference's order
    tol = TOLERANCES["triton-float32"]
    for name, got in zip(("q", "k", "v", "g", "b", "w"), out):
        exp = expected[name]
        exp = from_chunks(exp if exp.dim() == 6 else exp[:, :, None], None, T)
        assert_close(f"d{name}", got, exp, tol[KIND[name]])


# ---- numerics: strong decay, saturated gates, causality ------------------------------------------
@pytest.mark.parametrize("case", ["g-20", "chunk-at-1e4"])
def test_backward_strong_decay_is_finite_and_accurate(case):
    """exp(−G) overflows float32 within a chunk here; no gradient may."""
    inputs = make_inputs(1, 150, 1, 1, 16, 16, g_min=-20.0)
    if case == "chunk-at-1e4":
        inputs["g"][:, 64:128] = -1e4                                  # a whole chunk at -1e4
    assert not diag_fast_valid(inputs["g"], 64).all()                  # the diagonal fallback runs
    check_grads(inputs, torch.float32)


@pytest.mark.parametrize("A_log", [20.0, 100.0])
def test_backward_in_op_gate_at_decay_rates_past_the_floor(A_log):
    """The in-op gate with e^A_log large enough that most log-decays fall below the floor of the cumulative
    decay (e^20), or overflow float32 to −inf (e^100, as in the contract fuzzer): such a g has no
    gradient (its decay is exactly 0), and the decay rate must not multiply the rounding left in its dg
    (±inf or NaN at e^100, values up to 1e58 at e^80 before the rule). Every gradient is finite and equals
    the float64 recurrence's; at e^100 those of the raw gate, A_log and dt_bias are exactly 0."""
    H, K = 2, 16
    inputs = with_gate(make_inputs(1, 70, H, 2, K, 16), H, K)
    inputs["A_log"] = torch.full_like(inputs["A_log"], A_log)
    got = check_grads(inputs, torch.float32, use_qk_l2norm_in_kernel=True)
    if A_log == 100.0:
        for name in ("g", "A_log", "dt_bias"):
            assert not got[name].any(), f"d{name} is not 0 where every decay is"


def mixed_decay_inputs(T: int, K: int) -> dict:
    """Moderate decay (logsigmoid of randn) with a few channels of a few tokens at −20 to −200 (chunk
    64): tokens 16..31 keep a fast-valid prefix 16..22 and a strong-decay suffix 23..31; in tokens
    80..95 every token after the sub-chunk's first is past the clamp; in the partly filled sub-chunk
    96..99 the last token is."""
    inputs = make_inputs(1, T, 1, 1, K, 16, seed=5)
    gen = torch.Generator().manual_seed(6)
    g = torch.nn.functional.logsigmoid(torch.randn(inputs["g"].shape, generator=gen, dtype=torch.float64))
    g[0, 21:24, 0, [1, 5, 9]] = torch.tensor([-20.0, -25.0, -30.0], dtype=torch.float64)[:, None]
    g[0, 81, 0, [2, 3]] = torch.tensor([-70.0, -200.0], dtype=torch.float64)    # e^200: no float32 holds it
    g[0, 98:100, 0, 7] = -40.0
    inputs["g"] = g.to(inputs["g"])
    return inputs


@pytest.mark.parametrize(
    "dtype,l2norm,forced",
    [
        pytest.param("fp32", False, False, id="fp32"),
        pytest.param("fp16", True, False, id="fp16-l2norm"),
        pytest.param("fp32", False, True, id="fp32-fallback-everywhere"),
    ],
)
def test_backward_diagonal_fast_path_and_fallback_in_one_call(monkeypatch, dtype, l2norm, forced):
    """The pairwise kernel's diagonal blocks mix the products with the anchor (fast-valid tokens) and
    the element-by-element fallback (the others) inside one sub-chunk; every gradient stays within
    the tolerance. ``fallback-everywhere`` lowers the clamp so that no token is fast-valid (the fallback alone,
    padded rows included)."""
    import gdn2.fast.chunk_bwd

    T, K, C = 100, 32, 64
    inputs = mixed_decay_inputs(T, K)
    valid = diag_fast_valid(inputs["g"], C)[0, :, 0]
    assert valid[16:23].all() and not valid[23:32].any()               # one sub-chunk, both paths
    assert valid[80] and not valid[81:96].any() and valid[96:99].all() and not valid[99]
    assert valid[:16].all() and valid[32:80].all()
    if forced:
        monkeypatch.setattr(gdn2.fast.chunk_bwd, "EXP_MAX", -1.0)
    check_grads(inputs, DT[dtype], use_qk_l2norm_in_kernel=l2norm)


@pytest.mark.parametrize("recompute", ["partial", False])
def test_backward_at_full_reset(recompute):
    """g = −inf, a full reset that the contract allows (a whole token, then three channels over three
    tokens, then a token of a later chunk): finite gradients equal to the float64 chunkwise reference's
    (itself tested against the recurrence at a full reset)."""
    x = make_inputs(1, 150, 1, 2, 16, 16)
    x["g"][0, 7] = float("-inf")
    x["g"][0, 20:23, 0, 3] = float("-inf")
    x["g"][0, 100, 0, :8] = float("-inf")
    check_grads(x, torch.float32, oracle=ref_chunk_gdn2, recompute=recompute)


def test_backward_saturated_gates():
    """b at 0 or 2 (negative eigenvalues) and w at 0 or 1: finite gradients equal to the reference."""
    inputs = make_inputs(1, 60, 1, 1, 16, 16)
    gen = torch.Generator().manual_seed(3)
    pick = lambda x, lo, hi: torch.where(torch.rand(x.shape, generator=gen) < 0.5, lo, hi).to(x)
    inputs["b"], inputs["w"] = pick(inputs["b"], 0.0, 2.0), pick(inputs["w"], 0.0, 1.0)
    check_grads(inputs, torch.float32)


def test_backward_is_causal():
    """The loss reads outputs before the cut only: wild changes after it leave earlier gradients bit-equal."""
    T, cut = 100, 90                                                   # the cut is inside a partly filled chunk
    low, _ = cast(make_inputs(1, T, 1, 2, 16, 16), torch.float32)
    changed = {n: x.clone() for n, x in low.items()}
    for name, scale in (("q", 9.0), ("k", 50.0), ("v", -30.0), ("b", 7.0), ("w", 9.0)):
        changed[name][:, cut:] = scale * changed[name][:, cut:].abs()
    changed["g"][:, cut:] = -1e4
    do = torch.randn(1, T, 2, 16, device=DEVICE)
    do[:, cut:] = 0
    o1, _, g1 = grads(gdn2.fast.chunk_gdn2, low, do, None)
    o2, _, g2 = grads(gdn2.fast.chunk_gdn2, changed, do, None)
    assert not torch.equal(o1[:, cut:], o2[:, cut:])                   # the change is real
    for name in ("q", "k", "v", "g", "b", "w"):
        assert torch.equal(g1[name][:, :cut], g2[name][:, :cut]), f"d{name} changed before the cut"
    assert torch.equal(g1["initial_state"], g2["initial_state"])


def test_backward_does_not_mutate_inputs():
    low, _ = cast(make_inputs(1, 20, 1, 1, 16, 16), torch.float32)
    leaves = {n: x.clone().requires_grad_() for n, x in low.items()}
    o, ht = gdn2.fast.chunk_gdn2(**leaves, output_final_state=True)
    (o.sum() + ht.sum()).backward()
    for n in low:
        assert torch.equal(leaves[n].detach(), low[n]), n


# ---- GPU: realistic shapes in bfloat16 ------------------------------------------------------------
@pytest.mark.gpu
@gpu
@pytest.mark.parametrize(
    "B,T,H,HV,K,V",
    [
        pytest.param(2, 300, 2, 2, 128, 128, id="B2-T300-H2-K128-V128-bf16"),
        pytest.param(1, 257, 2, 4, 128, 64, id="B1-T257-H2-HV4-K128-V64-bf16"),
        pytest.param(1, 200, 2, 2, 64, 128, id="B1-T200-H2-K64-V128-bf16"),
    ],
)
def test_gpu_backward_matches_recurrence(B, T, H, HV, K, V):
    check_grads(make_inputs(B, T, H, HV, K, V, dtype=torch.float64), torch.bfloat16)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("K,V", [(16, 16), (20, 12), (32, 16), (48, 80), (100, 100), (128, 16), (128, 32), (64, 256)],
                         ids=lambda d: str(d))
def test_gpu_bf16_every_tile_regime(K, V):
    """bfloat16 forward and backward at head sizes whose tiles the launch rules size differently (one tile
    narrower than the head or padded, a value tile narrower than the key tile, two state tiles): each
    kernel compiles at each regime, where Triton has miscompiled single settings (benchmarks/triton_faults.py)."""
    check_grads(make_inputs(1, 70, 1, 2, K, V, dtype=torch.float64), torch.bfloat16)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("K,V,dtype", [(256, 256, "bf16"), (192, 64, "bf16"), (256, 256, "fp32"), (160, 64, "fp16")],
                         ids=["K256-V256", "K192-V64", "K256-V256-fp32", "K160-V64-fp16"])
def test_gpu_backward_large_heads(K, V, dtype):
    """K, V above 128 (two state tiles in the forward and the reverse state pass), packed, GVA, h0."""
    cu = torch.tensor([0, 1, 130, 300], device=DEVICE)
    check_grads(make_inputs(1, 300, 1, 2, K, V, N=3, dtype=torch.float64), DT[dtype], cu_seqlens=cu)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("T", [4096, 16384])
def test_gpu_backward_long_matches_float64_chunk(T):
    """Long sequences against gdn2.ops.chunk_gdn2 in float64 (tested equal to the recurrence)."""
    check_grads(make_inputs(1, T, 1, 2, 128, 128, dtype=torch.float64), torch.bfloat16, oracle=ref_chunk_gdn2)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype,recompute", [("fp32", True), ("bf16", "partial"), ("bf16", "states")])
def test_gpu_backward_all_options(dtype, recompute):
    H, K = 2, 128
    inputs = with_gate(make_inputs(1, 1193, H, 4, K, 128, N=5, dtype=torch.float64), H, K)
    inputs["q"], inputs["k"] = 3 * inputs["q"], 2 * inputs["k"]
    cu = torch.tensor([0, 1, 64, 128, 193, 1193], device=DEVICE)
    check_grads(inputs, DT[dtype], oracle=ref_chunk_gdn2, cu_seqlens=cu, use_qk_l2norm_in_kernel=True,
                recompute=recompute)


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("case", ["g-20", "chunk-at-1e4"])
def test_gpu_backward_strong_decay(case):
    inputs = make_inputs(2, 1000, 2, 2, 128, 128, g_min=-20.0, dtype=torch.float64)
    if case == "chunk-at-1e4":
        inputs["g"][:, 256:448] = -1e4
    check_grads(inputs, torch.bfloat16, oracle=ref_chunk_gdn2)


@pytest.mark.gpu
@gpu
def test_gpu_backward_offsets_past_int32():
    """Per-chunk states of more than 2³¹ elements (NSLOT·HV·K·V, dense input; the last eighth of the
    batch past it): three identical batch rows give bit-identical gradients, so no offset wrapped around.
    Inputs drawn on the GPU in bfloat16; about 30 GB at the peak, most of it the saved states."""
    B, T, H, HV, K, V = 3, 12288, 1, 64, 256, 256
    assert B * (T // 64) * HV * K * V > 2 ** 31
    gen = torch.Generator(device=DEVICE).manual_seed(int(torch.randint(2 ** 62, ())))
    rand = lambda *shape: torch.rand(*shape, generator=gen, device=DEVICE)  # noqa: E731
    randn = lambda *shape: torch.randn(*shape, generator=gen, device=DEVICE)  # noqa: E731
    bf16 = torch.bfloat16
    row = dict(q=randn(1, T, H, K).to(bf16), k=torch.nn.functional.normalize(randn(1, T, H, K), dim=-1).to(bf16),
               v=randn(1, T, HV, V).to(bf16), g=-2 * rand(1, T, H, K) - 1e-3, b=(2 * rand(1, T, H, K)).to(bf16),
               w=rand(1, T, HV, V).to(bf16))
    low = {n: x.expand(B, *x.shape[1:]).contiguous() for n, x in row.items()}
    do = randn(1, T, HV, V).to(bf16).expand(B, -1, -1, -1).contiguous()
    _, _, got = grads(gdn2.fast.chunk_gdn2, low, do, None)
    for name, x in got.items():
        for i in range(1, B):
            assert torch.equal(x[i], x[0]), f"d{name}: row {i} differs from row 0"


@pytest.mark.gpu
@gpu
def test_gpu_backward_is_causal():
    T, cut = 1000, 990
    low, _ = cast(make_inputs(1, T, 2, 4, 128, 128), torch.bfloat16)
    changed = {n: x.clone() for n, x in low.items()}
    changed["k"][:, cut:] *= 40
    changed["v"][:, cut:] *= -40
    changed["g"][:, cut:] = -1e4
    do = torch.randn(1, T, 4, 128, device=DEVICE)
    do[:, cut:] = 0
    o1, _, g1 = grads(gdn2.fast.chunk_gdn2, low, do, None)
    o2, _, g2 = grads(gdn2.fast.chunk_gdn2, changed, do, None)
    assert not torch.equal(o1[:, cut:], o2[:, cut:])
    for name in ("q", "k", "v", "g", "b", "w"):
        assert torch.equal(g1[name][:, :cut], g2[name][:, :cut]), f"d{name} changed before the cut"


@pytest.mark.gpu
@gpu
def test_gpu_float32_bound_rejects_tf32_products():
    """On a GPU, the backward with tf32 products instead of near-float32 ones fails the float32 bound."""
    from gdn2.fast.chunk_bwd import chunk_gdn2_bwd
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import BackwardConfig, StateBwdLaunch

    low, exact = cast(make_inputs(2, 300, 2, 2, 128, 128, dtype=torch.float64), torch.float32)
    do = torch.randn_like(low["v"])
    _, _, expected = grads(recurrent_gdn2, exact, do.double(), None)
    tol = TOLERANCES["triton-float32"][KIND["q"]]
    saved = chunk_gdn2_fwd(**low, scale=128 ** -0.5, save=True)
    args = (low["q"], low["k"], low["v"], low["g"], low["b"], low["w"], 128 ** -0.5, low["initial_state"], None,
            saved, do, None)
    assert_close("dq", chunk_gdn2_bwd(*args)[0], expected["q"], tol)
    with pytest.raises(AssertionError, match="rel-RMS"):
        # tf32 operands take other layouts, and more shared memory: narrower state blocks, one stage
        config = BackwardConfig(precision="tf32", state=StateBwdLaunch(BV=32, num_stages=1))
        assert_close("dq", chunk_gdn2_bwd(*args, config=config)[0], expected["q"], tol)
