"""The reference operators against the float64 token-by-token recurrence."""

import pytest
import torch

from gdn2.ops import chunk_gdn2, fused_recurrent_gdn2, recurrent_gdn2
from gdn2.ops.chunk import (
    anchored_pairwise_decay,
    chunk_intra,
    chunk_intra_t,
    chunk_local_cumsum,
    pairwise_decay,
    solve_unit_lower,
    solve_unit_lower_blocked,
)
from gdn2.tolerances import gate_term_sizes

from gdn2_testing import TOLERANCES, assert_close, make_inputs, rel_rms

F64 = TOLERANCES["reference-float64"]
NAMES = ("q", "k", "v", "g", "b", "w", "initial_state")


# --8<-- [start:run_with_grads]
def run_with_grads(op, inputs, do, dht, **kw):
    """Forward, then gradients of <o, do> + <ht, dht> for every input."""
    leaves = {n: x.detach().clone().requires_grad_() for n, x in inputs.items()}
    o, ht = op(**leaves, output_final_state=True, **kw)
    loss = (o * do).sum() + (ht * dht).sum()
    grads = torch.autograd.grad(loss, list(leaves.values()))
    return o, ht, dict(zip(leaves, grads))
# --8<-- [end:run_with_grads]


# --8<-- [start:check_against_recurrence]
def check_against_recurrence(inputs, tol=F64, **kw):
    o_ref, ht_ref = recurrent_gdn2(**inputs, output_final_state=True, cu_seqlens=kw.get("cu_seqlens"))
    o, ht = chunk_gdn2(**inputs, output_final_state=True, **kw)
    assert_close("o", o, o_ref, tol[0])
    assert_close("ht", ht, ht_ref, tol[0])
# --8<-- [end:check_against_recurrence]


# ---- chunk vs recurrence ----------------------------------------------------------------------------
# --8<-- [start:test_chunk_equals_recurrence]
@pytest.mark.parametrize("T", [1, 7, 63, 64, 65, 200])
@pytest.mark.parametrize("C", [16, 32, 64])
def test_chunk_equals_recurrence(T, C):
    inputs = make_inputs(2, T, 2, 2, 8, 8)
    check_against_recurrence(inputs, chunk_size=C)
# --8<-- [end:test_chunk_equals_recurrence]


@pytest.mark.parametrize(
    "B,T,H,HV,K,V,C",
    [
        pytest.param(2, 65, 2, 2, 16, 8, 16, id="B2-T65-H2-K16-V8-KneV"),
        pytest.param(1, 50, 2, 6, 8, 12, 16, id="B1-T50-H2-HV6-K8-V12-gva"),
        pytest.param(3, 33, 1, 4, 4, 4, 32, id="B3-T33-H1-HV4-K4-V4-gva4"),
        pytest.param(1, 1, 3, 3, 8, 8, 64, id="B1-T1-H3"),
    ],
)
def test_chunk_equals_recurrence_shapes(B, T, H, HV, K, V, C):
    check_against_recurrence(make_inputs(B, T, H, HV, K, V), chunk_size=C)


def test_chunk_without_initial_state_and_final_state_off():
    inputs = make_inputs(2, 40, 2, 2, 8, 8, initial_state=False)
    o, ht = chunk_gdn2(**inputs, chunk_size=16)
    o_ref, _ = recurrent_gdn2(**inputs)
    assert ht is None
    assert_close("o", o, o_ref, F64[0])


# --8<-- [start:test_cu_seqlens_packing_equals_one_by_one]
@pytest.mark.parametrize("C", [16, 64])
def test_cu_seqlens_packing_equals_one_by_one(C):
    lengths = [1, 17, 0, 40, 16]
    T = sum(lengths)
    inputs = make_inputs(1, T, 2, 4, 8, 8, N=len(lengths))
    cu = torch.tensor([0] + lengths).cumsum(0)
    o, ht = chunk_gdn2(**inputs, output_final_state=True, cu_seqlens=cu, chunk_size=C)
    for n, (s, e) in enumerate(zip(cu[:-1].tolist(), cu[1:].tolist())):
        one = {name: x[:, s:e] for name, x in inputs.items() if name != "initial_state"}
        o_n, ht_n = recurrent_gdn2(**one, initial_state=inputs["initial_state"][n : n + 1], output_final_state=True)
        assert_close(f"o[seq {n}]", o[:, s:e], o_n, F64[0])
        assert_close(f"ht[seq {n}]", ht[n : n + 1], ht_n, F64[0])
# --8<-- [end:test_cu_seqlens_packing_equals_one_by_one]


def test_float32_reference_within_tolerance():
    inputs = make_inputs(2, 100, 2, 4, 16, 16)
    o64, ht64 = recurrent_gdn2(**inputs, output_final_state=True)
    f32 = {n: x.float() for n, x in inputs.items()}
    tol = TOLERANCES["reference-float32"]
    for op in (recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2):
        o, ht = op(**f32, output_final_state=True)
        assert o.dtype == torch.float32 and ht.dtype == torch.float32
        assert_close(f"{op.__name__}.o", o, o64, tol[0])
        assert_close(f"{op.__name__}.ht", ht, ht64, tol[0])


# --8<-- [start:test_fused_recurrent_equals_recurrent]
def test_fused_recurrent_equals_recurrent():
    inputs = make_inputs(3, 9, 2, 4, 8, 4)
    o, ht = fused_recurrent_gdn2(**inputs, output_final_state=True)
    o_ref, ht_ref = recurrent_gdn2(**inputs, output_final_state=True)
    assert_close("o", o, o_ref, F64[0])
    assert_close("ht", ht, ht_ref, F64[0])
# --8<-- [end:test_fused_recurrent_equals_recurrent]


def test_half_precision_inputs_return_their_dtype():
    inputs = make_inputs(1, 20, 1, 1, 8, 8, dtype=torch.bfloat16)
    o, ht = chunk_gdn2(**inputs, output_final_state=True, chunk_size=16)
    assert o.dtype == torch.bfloat16 and ht.dtype == torch.float32
    ref = {n: x.double() for n, x in inputs.items()}
    o_ref, _ = recurrent_gdn2(**ref)
    assert_close("o", o, o_ref, TOLERANCES["triton-bfloat16"][0])


# ---- extras -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", [recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2])
def test_in_op_l2norm_and_gate_equal_preprocessing(op):
    inputs = make_inputs(2, 21, 2, 4, 8, 8)
    gen = torch.Generator().manual_seed(0)
    raw = torch.randn(2, 21, 2, 8, generator=gen, dtype=torch.float64)
    A_log = torch.log(torch.empty(2, dtype=torch.float64).uniform_(1, 16, generator=gen))
    dt_bias = torch.randn(16, generator=gen, dtype=torch.float64)
    q = 3 * inputs["q"]
    k = 0.5 * inputs["k"] + 0.1
    o, ht = op(**{**inputs, "q": q, "k": k, "g": raw}, output_final_state=True,
               use_qk_l2norm_in_kernel=True, A_log=A_log, dt_bias=dt_bias)
    g = -A_log.exp()[:, None] * torch.nn.functional.softplus(raw + dt_bias.view(2, 8))
    qn = q / (q.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()        # the contract's L2 norm: eps = 1e-6
    kn = k / (k.pow(2).sum(-1, keepdim=True) + 1e-6).sqrt()        # under the square root
    o_ref, ht_ref = recurrent_gdn2(**{**inputs, "q": qn, "k": kn, "g": g}, output_final_state=True)
    assert_close("o", o, o_ref, F64[0])
    assert_close("ht", ht, ht_ref, F64[0])


@pytest.mark.parametrize("op", [recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2])
@pytest.mark.parametrize("neg", [False, True], ids=["b-in-0-1", "b-in-0-2"])
def test_in_op_gate_sigmoid_equals_preprocessing(op, neg):
    """b and w given as logits: the op applies b = s·σ(b), w = σ(w) (s = 2 with allow_neg_eigval)."""
    inputs = make_inputs(1, 21, 2, 4, 8, 8)
    b_logit, w_logit = torch.randn_like(inputs["b"]), torch.randn_like(inputs["w"])
    o, ht = op(**{**inputs, "b": b_logit, "w": w_logit}, output_final_state=True,
               use_gate_sigmoid_in_kernel=True, allow_neg_eigval=neg)
    s = 2.0 if neg else 1.0
    o_ref, ht_ref = recurrent_gdn2(**{**inputs, "b": s * torch.sigmoid(b_logit), "w": torch.sigmoid(w_logit)},
                                   output_final_state=True)
    assert_close("o", o, o_ref, F64[0])
    assert_close("ht", ht, ht_ref, F64[0])
    with pytest.raises(ValueError, match="allow_neg_eigval applies to gates given as logits"):
        op(**inputs, allow_neg_eigval=True)


def test_gate_term_sizes_are_the_terms_of_the_gate_parameter_gradients():
    """gate_term_sizes (how dA_log, ddt_bias are judged) against autograd: with dL/dx > 0 every term is
    positive, so the sizes are the gradients themselves; with signed dL/dx they bound them."""
    gen = torch.Generator().manual_seed(torch.seed())
    raw = 3 * torch.randn(2, 9, 3, 4, generator=gen, dtype=torch.float64)
    A_log = torch.rand(3, generator=gen, dtype=torch.float64).mul(15).add(1).log().requires_grad_()
    dt_bias = torch.randn(12, generator=gen, dtype=torch.float64).requires_grad_()
    x = raw.requires_grad_() + dt_bias.view(3, 4)
    gate = -A_log.exp()[:, None] * torch.nn.functional.softplus(x)
    for dx, positive in ((torch.rand(raw.shape, generator=gen, dtype=torch.float64) + 0.1, True),
                         (torch.randn(raw.shape, generator=gen, dtype=torch.float64), False)):
        weight = (dx / (-A_log.exp()[:, None] * torch.sigmoid(x))).detach()      # so that dL/dx = dx
        d_raw, d_A, d_bias = torch.autograd.grad((weight * gate).sum(), [raw, A_log, dt_bias], retain_graph=True)
        assert torch.allclose(d_raw, dx, rtol=1e-12, atol=0)
        sizes = gate_term_sizes(raw.detach(), A_log.detach(), dt_bias.detach(), d_raw)
        for name, grad in (("A_log", d_A), ("dt_bias", d_bias)):
            if positive:
                assert torch.allclose(sizes[name], grad, rtol=1e-12, atol=0), name
            else:
                assert (sizes[name] >= grad.abs() * (1 - 1e-12)).all() and (sizes[name] > grad.abs()).any(), name


# ---- the tied-gate reductions, against independent recurrences -------------------------------
# --8<-- [start:kda_recurrence]
def kda_recurrence(q, k, v, alpha, beta, S, scale):
    """KDA (Kimi Delta Attention): S_t = (I − β k kᵀ) Diag(α) S + β k vᵀ, written independently."""
    outs = []
    for t in range(q.shape[0]):
        S = torch.diag(alpha[t]) @ S
        S = S - beta[t] * torch.outer(k[t], k[t] @ S) + beta[t] * torch.outer(k[t], v[t])
        outs.append(S.T @ (scale * q[t]))
    return torch.stack(outs), S
# --8<-- [end:kda_recurrence]


# --8<-- [start:gated_deltanet_recurrence]
def gated_deltanet_recurrence(q, k, v, a, beta, S, scale):
    """Gated DeltaNet with a scalar decay a_t: S_t = a_t (I − β k kᵀ) S + β k vᵀ."""
    outs = []
    for t in range(q.shape[0]):
        S = a[t] * (S - beta[t] * torch.outer(k[t], k[t] @ S)) + beta[t] * torch.outer(k[t], v[t])
        outs.append(S.T @ (scale * q[t]))
    return torch.stack(outs), S
# --8<-- [end:gated_deltanet_recurrence]


# --8<-- [start:test_tied_gate_reductions]
@pytest.mark.parametrize("case", ["kda", "gated_deltanet", "deltanet", "pure_decay"])
def test_tied_gate_reductions(case):
    T, K, V = 30, 8, 6
    x = make_inputs(1, T, 1, 1, K, V)
    q, k, v, S0 = x["q"][0, :, 0], x["k"][0, :, 0], x["v"][0, :, 0], x["initial_state"][0, 0]
    beta = torch.rand(T, dtype=torch.float64)
    scale = K ** -0.5
    if case == "kda":
        g = x["g"][0, :, 0]
        o_ref, S_ref = kda_recurrence(q, k, v, g.exp(), beta, S0, scale)
    elif case == "gated_deltanet":
        g = x["g"][0, :, 0, :1].expand(T, K)
        o_ref, S_ref = gated_deltanet_recurrence(q, k, v, g[:, 0].exp(), beta, S0, scale)
    elif case == "deltanet":
        g = torch.zeros(T, K, dtype=torch.float64)
        o_ref, S_ref = gated_deltanet_recurrence(q, k, v, torch.ones(T, dtype=torch.float64), beta, S0, scale)
    else:
        g = x["g"][0, :, 0]
        beta = torch.zeros(T, dtype=torch.float64)
        S = S0
        outs = []
        for t in range(T):
            S = torch.diag(g[t].exp()) @ S
            outs.append(S.T @ (scale * q[t]))
        o_ref, S_ref = torch.stack(outs), S
    b = beta[:, None].expand(T, K)
    w = beta[:, None].expand(T, V)
    lift = lambda t: t[None, :, None]
    for op in (recurrent_gdn2, chunk_gdn2):
        o, ht = op(lift(q), lift(k), lift(v), lift(g), lift(b), lift(w), initial_state=S0[None, None],
                   output_final_state=True)
        assert_close(f"{op.__name__}.o", o[0, :, 0], o_ref, F64[0])
        assert_close(f"{op.__name__}.ht", ht[0, 0], S_ref, F64[0])
# --8<-- [end:test_tied_gate_reductions]


# ---- gradients ----------------------------------------------------------------------------------------------
def test_gradcheck_recurrence():
    x = make_inputs(1, 4, 1, 2, 3, 2, b_max=2.0)
    leaves = [x[n].clone().requires_grad_() for n in NAMES]

    def f(*args):
        o, ht = recurrent_gdn2(*args[:6], initial_state=args[6], output_final_state=True)
        return o, ht

    assert torch.autograd.gradcheck(f, leaves)


# --8<-- [start:test_gradcheck_manual_backward]
def test_gradcheck_manual_backward():
    x = make_inputs(1, 9, 1, 2, 3, 2)
    leaves = [x[n].clone().requires_grad_() for n in NAMES]

    def f(*args):
        return chunk_gdn2(*args[:6], initial_state=args[6], output_final_state=True, chunk_size=4)

    assert torch.autograd.gradcheck(f, leaves)
# --8<-- [end:test_gradcheck_manual_backward]


# --8<-- [start:test_manual_backward_equals_autograd_of_recurrence]
@pytest.mark.parametrize(
    "B,T,H,HV,K,V,C",
    [
        pytest.param(2, 65, 2, 2, 8, 8, 16, id="B2-T65-H2-K8-V8-C16"),
        pytest.param(1, 40, 2, 4, 8, 12, 32, id="B1-T40-H2-HV4-K8-V12-C32-gva"),
        pytest.param(2, 7, 1, 1, 16, 4, 64, id="B2-T7-H1-K16-V4-C64"),
    ],
)
def test_manual_backward_equals_autograd_of_recurrence(B, T, H, HV, K, V, C):
    inputs = make_inputs(B, T, H, HV, K, V)
    do = torch.randn(B, T, HV, V, dtype=torch.float64)
    dht = torch.randn(B, HV, K, V, dtype=torch.float64)
    o_r, ht_r, g_r = run_with_grads(recurrent_gdn2, inputs, do, dht)
    o_c, ht_c, g_c = run_with_grads(chunk_gdn2, inputs, do, dht, chunk_size=C)
    assert_close("o", o_c, o_r, F64[0])
    for name in NAMES:
        assert_close(f"d{name}", g_c[name], g_r[name], F64[1])
# --8<-- [end:test_manual_backward_equals_autograd_of_recurrence]


def test_manual_backward_varlen_and_extras():
    lengths = [5, 0, 33, 20]
    cu = torch.tensor([0] + lengths).cumsum(0)
    inputs = make_inputs(1, sum(lengths), 2, 4, 8, 8, N=len(lengths))
    do = torch.randn(1, sum(lengths), 4, 8, dtype=torch.float64)
    dht = torch.randn(len(lengths), 4, 8, 8, dtype=torch.float64)
    kw = dict(cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
    _, _, g_r = run_with_grads(recurrent_gdn2, inputs, do, dht, **kw)
    _, _, g_c = run_with_grads(chunk_gdn2, inputs, do, dht, chunk_size=16, **kw)
    for name in NAMES:
        assert_close(f"d{name}", g_c[name], g_r[name], F64[1])


# ---- numerics: strong decay, causality -----------------------------------------------------------------------
# --8<-- [start:test_strong_decay_is_finite_and_exact]
def test_strong_decay_is_finite_and_exact():
    inputs = make_inputs(1, 150, 1, 2, 8, 8, g_min=-20.0)
    inputs["g"][:, 64:128] = -1e4                       # whole chunks at -1e4
    do = torch.randn(1, 150, 2, 8, dtype=torch.float64)
    dht = torch.randn(1, 2, 8, 8, dtype=torch.float64)
    o_r, ht_r, g_r = run_with_grads(recurrent_gdn2, inputs, do, dht)
    o_c, ht_c, g_c = run_with_grads(chunk_gdn2, inputs, do, dht, chunk_size=64)
    assert_close("o", o_c, o_r, F64[0])
    assert_close("ht", ht_c, ht_r, F64[0])
    for name in NAMES:
        assert_close(f"d{name}", g_c[name], g_r[name], F64[1])
# --8<-- [end:test_strong_decay_is_finite_and_exact]


def test_strong_decay_float32_is_finite():
    inputs = {n: x.float() for n, x in make_inputs(1, 128, 1, 1, 16, 16, g_min=-20.0).items()}
    inputs["g"][:, 64:] = -1e4
    o, ht = chunk_gdn2(**inputs, output_final_state=True)
    o_ref, ht_ref = recurrent_gdn2(**{n: x.double() for n, x in inputs.items()}, output_final_state=True)
    assert_close("o", o, o_ref, TOLERANCES["reference-float32"][0])
    assert_close("ht", ht, ht_ref, TOLERANCES["reference-float32"][0])


# --8<-- [start:test_causality_outputs_and_gradients]
@pytest.mark.parametrize("op", [recurrent_gdn2, chunk_gdn2])
def test_causality_outputs_and_gradients(op):
    T, cut = 70, 50                                      # the cut falls inside a partly filled chunk
    inputs = make_inputs(1, T, 2, 2, 8, 8, initial_state=False)
    changed = {n: x.clone() for n, x in inputs.items()}
    for name in ("q", "k", "v", "b", "w"):
        changed[name][:, cut:] = torch.randn_like(changed[name][:, cut:])
    changed["g"][:, cut:] = -30 * torch.rand_like(changed["g"][:, cut:])
    do = torch.randn(1, T, 2, 8, dtype=torch.float64)
    do[:, cut:] = 0                                      # the loss reads only the early outputs
    kw = {"chunk_size": 32} if op is chunk_gdn2 else {}
    leaves = [{n: x.clone().requires_grad_() for n, x in d.items()} for d in (inputs, changed)]
    outs = [op(**lv, **kw)[0] for lv in leaves]
    assert torch.equal(outs[0][:, :cut], outs[1][:, :cut])
    grads = [torch.autograd.grad((o * do).sum(), list(lv.values())) for o, lv in zip(outs, leaves)]
    for name, g0, g1 in zip(inputs, *grads):
        assert torch.allclose(g0[:, :cut], g1[:, :cut], rtol=0, atol=1e-12), f"d{name} changed before the cut"
# --8<-- [end:test_causality_outputs_and_gradients]


# ---- stages --------------------------------------------------------------------------------------------------
# --8<-- [start:test_forward_substitution_is_the_inverse]
def test_forward_substitution_is_the_inverse():
    C = 32
    T = torch.randn(3, C, C, dtype=torch.float64).tril(-1) * 0.3
    A = solve_unit_lower(T)
    eye = torch.eye(C, dtype=torch.float64)
    assert_close("A", A, torch.linalg.inv(eye + T), 1e-12)
    assert torch.equal(A.triu(1), torch.zeros_like(A)) and torch.equal(A.diagonal(dim1=-2, dim2=-1),
                                                                      torch.ones(3, C, dtype=torch.float64))
# --8<-- [end:test_forward_substitution_is_the_inverse]


# --8<-- [start:test_pairwise_decay_is_causal_bounded_and_finite]
def test_pairwise_decay_is_causal_bounded_and_finite():
    g = -100 * torch.rand(4, 64, 8, dtype=torch.float64)       # G reaches -6400: exp(-G) would overflow
    D = pairwise_decay(chunk_local_cumsum(g), strict=False)
    assert torch.isfinite(D).all() and (D <= 1).all() and (D >= 0).all()
    assert torch.equal(D.permute(0, 3, 1, 2).triu(1), torch.zeros(4, 8, 64, 64, dtype=torch.float64))
# --8<-- [end:test_pairwise_decay_is_causal_bounded_and_finite]


# --8<-- [start:test_intra_t_matches_its_definition]
def test_intra_t_matches_its_definition():
    C, K = 8, 4
    k, b, g = torch.randn(C, K, dtype=torch.float64), torch.rand(C, K, dtype=torch.float64), -torch.rand(C, K,
                                                                                                       dtype=torch.float64)
    G = g.cumsum(0)
    T = chunk_intra_t(k, b, G)
    expected = torch.zeros(C, C, dtype=torch.float64)
    for r in range(C):
        for s in range(r):
            expected[r, s] = (b[r] * k[r] * k[s] * (G[r] - G[s]).exp()).sum()
    assert_close("T", T, expected, 1e-14)
# --8<-- [end:test_intra_t_matches_its_definition]


# ---- stage 2 as the kernels compute it, against the plain stage ----------------------------------------
@pytest.mark.parametrize("g_scale", [1.0, 20.0, 1e3], ids=["mild", "g-20", "g-1e3"])
def test_anchored_pairwise_decay_is_the_pairwise_decay(g_scale):
    """The kernels' anchored factorisation (row factor × column factor, the diagonal block's column
    factor clamped and replaced by the exact factor past the clamp) equals exp(G_r − G_s), with decay
    strong enough that the clamp acts in some rows; every factor it forms is at most 1 or clamped."""
    g = -g_scale * torch.rand(3, 64, 8, dtype=torch.float64) ** 3
    G = chunk_local_cumsum(g)
    for strict in (True, False):
        got = anchored_pairwise_decay(G, strict)
        assert torch.isfinite(got).all()
        assert_close("decay", got, pairwise_decay(G, strict), 1e-12)
    if g_scale > 100:
        a = torch.arange(64) // 16 * 16
        assert ((G[..., a, :] - G).amax(-1) > 60).any()             # the clamp acted somewhere


def test_chunk_intra_gives_t_and_the_output_matrix():
    """Stage (2) as the kernels compute it, T and A_qk in one pass, equals chunk_intra_t and the A_qk of
    chunk_output."""
    q, k = torch.randn(2, 64, 8, dtype=torch.float64), torch.randn(2, 64, 8, dtype=torch.float64)
    b, g = 2 * torch.rand(2, 64, 8, dtype=torch.float64), -3 * torch.rand(2, 64, 8, dtype=torch.float64)
    G = chunk_local_cumsum(g)
    T, A_qk = chunk_intra(q, k, b, G, 0.5)
    assert_close("T", T, chunk_intra_t(k, b, G), 1e-12)
    expected = 0.5 * torch.einsum("...rd,...sd,...rsd->...rs", q, k, pairwise_decay(G, strict=False))
    assert_close("A_qk", A_qk, expected, 1e-12)


@pytest.mark.parametrize("C,block", [(64, 16), (40, 16), (32, 8)], ids=["C64-b16", "C40-partial-block", "C32-b8"])
def test_blocked_inverse_is_the_forward_substitution(C, block):
    """(I + T)⁻¹ from diagonal-block inverses and the block rows below them, as the intra kernels form it."""
    T = torch.randn(3, C, C, dtype=torch.float64).tril(-1) * 0.2
    assert_close("A", solve_unit_lower_blocked(T, block), solve_unit_lower(T), 1e-12)


# ---- contract: validation and no mutation -------------------------------------------------------------------
def _valid():
    return make_inputs(2, 8, 2, 4, 4, 4)


@pytest.mark.parametrize(
    "change,exc,match",
    [
        pytest.param(lambda x: x.update(q=x["q"][0]), ValueError, "q must have rank 4", id="q-rank"),
        pytest.param(lambda x: x.update(k=x["k"][:, :5]), ValueError, "k must have the shape of q", id="k-T"),
        pytest.param(lambda x: x.update(g=x["g"][..., :3]), ValueError, "g must have the shape", id="g-K"),
        pytest.param(lambda x: x.update(v=x["v"][:1]), ValueError, "v must have shape", id="v-B"),
        pytest.param(lambda x: x.update(v=x["v"][:, :, :3], w=x["w"][:, :, :3]), ValueError, "multiple of H",
                     id="HV-not-multiple"),
        pytest.param(lambda x: x.update(w=x["w"][..., :2]), ValueError, "w must have the shape of v", id="w-V"),
        pytest.param(lambda x: x.update(b=x["b"].long()), TypeError, "b must have a floating dtype", id="b-int"),
        pytest.param(lambda x: x.update(q=[1.0]), TypeError, "q must be a torch.Tensor", id="q-list"),
        pytest.param(lambda x: x.update(initial_state=x["initial_state"][:1]), ValueError,
                     r"initial_state must have shape \[N, HV, K, V\]", id="h0-N"),
        pytest.param(lambda x: x.update(g=-x["g"]), ValueError, "g is a log-decay", id="g-positive"),
        pytest.param(lambda x: x.update(scale="1"), TypeError, "scale", id="scale-str"),
        pytest.param(lambda x: x.update(v=x["v"].float()), TypeError, "share one dtype", id="v-dtype"),
        pytest.param(lambda x: x.update(A_log=torch.zeros(2, dtype=torch.float64), g=x["g"] * 0,
                                        dt_bias=torch.zeros(2, 2, 2, dtype=torch.float64)), ValueError,
                     r"dt_bias must have shape \[H\*K\]", id="dt_bias-rank3"),
        pytest.param(lambda x: x.update(initial_state=x["initial_state"].to("meta")), ValueError,
                     "initial_state is on meta", id="h0-device"),
        pytest.param(lambda x: x.update(cu_seqlens=torch.tensor([0])), ValueError, "N\\+1 >= 2 offsets",
                     id="cu_seqlens-one-offset"),
    ],
)
@pytest.mark.parametrize("op", [recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2])
def test_bad_input_is_named(op, change, exc, match):
    x = _valid()
    change(x)
    with pytest.raises(exc, match=match):
        op(**x)


@pytest.mark.parametrize(
    "cu,match",
    [
        pytest.param([0, 5, 3, 8], "non-decreasing", id="decreasing"),
        pytest.param([1, 8], "from 0 to T", id="not-from-0"),
        pytest.param([0, 7], "from 0 to T", id="not-to-T"),
    ],
)
def test_bad_cu_seqlens(cu, match):
    x = make_inputs(1, 8, 1, 1, 4, 4, initial_state=False)
    with pytest.raises(ValueError, match=match):
        chunk_gdn2(**x, cu_seqlens=torch.tensor(cu))


def test_cu_seqlens_needs_batch_one_and_int():
    x = make_inputs(2, 8, 1, 1, 4, 4, initial_state=False)
    with pytest.raises(ValueError, match="requires B == 1"):
        chunk_gdn2(**x, cu_seqlens=torch.tensor([0, 8]))
    x = make_inputs(1, 8, 1, 1, 4, 4, initial_state=False)
    with pytest.raises(TypeError, match="cu_seqlens must be int32 or int64"):
        chunk_gdn2(**x, cu_seqlens=torch.tensor([0.0, 8.0]))


def test_bad_chunk_size_and_gate_extras():
    x = make_inputs(1, 8, 2, 2, 4, 4)
    with pytest.raises(ValueError, match="chunk_size"):
        chunk_gdn2(**x, chunk_size=0)
    with pytest.raises(ValueError, match="A_log must have shape"):
        chunk_gdn2(**x, A_log=torch.zeros(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="dt_bias was given without A_log"):
        chunk_gdn2(**x, dt_bias=torch.zeros(8, dtype=torch.float64))


@pytest.mark.parametrize("op", [recurrent_gdn2, chunk_gdn2, fused_recurrent_gdn2])
def test_inputs_are_not_mutated(op):
    """Forward and backward leave every input as it was (and the backward reaches every one of them)."""
    x = {n: t.requires_grad_() for n, t in _valid().items()}
    before = {n: t.detach().clone() for n, t in x.items()}
    o, ht = op(**x, output_final_state=True, use_qk_l2norm_in_kernel=True)
    assert o.requires_grad and ht.requires_grad
    (o.sum() + ht.sum()).backward()
    for n in x:
        assert x[n].grad is not None and torch.isfinite(x[n].grad).all(), f"no gradient reached {n}"
        assert torch.equal(x[n].detach(), before[n]), f"{n} was modified"


def test_chunk_size_does_not_change_the_answer():
    x = make_inputs(1, 77, 1, 2, 8, 8)
    outs = [chunk_gdn2(**x, chunk_size=c)[0] for c in (1, 5, 16, 100)]
    for o in outs[1:]:
        assert rel_rms(o, outs[0]) < 1e-12

