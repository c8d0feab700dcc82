"""Exercise 5: the local cumulative decay and the pairwise exponents, without overflow.

    G_r = Σ_{i≤r} g_i inside each chunk;   D_rsd = exp(G_rd − G_sd) for r ≥ s (r > s when strict), else 0

With g down to −20 and a chunk of 64 tokens, G reaches −1280: exp(−G) overflows every floating
format, so the factorised exp(G_r)·exp(−G_s) is inf·0 = nan. The exponent is formed first and masked
to −inf above the diagonal *before* exp, which also keeps the gradient finite.
"""

import torch

from gdn2.ops.chunk import pairwise_decay
from gdn2.tolerances import TOLERANCES

from ..framework import Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum

TOL = TOLERANCES["reference-float64"][0]
TOL_F32 = TOLERANCES["reference-float32"][0]

CUMSUM_MISTAKES = (
    Mistake("global-cumsum", "Your sum runs on across chunks. Each chunk restarts: G is the cumulative sum "
            "over the C axis (dim −2) only; the state carries the decay between chunks.",
            lambda g: g.flatten(-3, -2).cumsum(-2).view(g.shape)),
    Mistake("exclusive-cumsum", "Your G_r leaves out g_r: G_r = Σ_{i≤r} g_i includes the token's own decay "
            "(it decays the state before the token's write).", lambda g: g.cumsum(-2) - g),
    Mistake("cumsum-over-keys", "Your sum runs over the key axis: G accumulates over tokens (dim −2), each "
            "key channel separately.", lambda g: g.cumsum(-1)),
)


def check_cumsum(run: Run) -> None:
    for case in run.cases(3):
        N, H, NC = case.size("N", 1, 2), case.size("H", 1, 2), case.size("NC", 2, 4)
        C, K = case.size("C", 2, 9), case.size("K", 2, 6)
        g = case.log_decay(-1.0, N, H, NC, C, K)
        got = case.call("local_cumsum", g)
        case.expect(got, local_cumsum(g), (Out("G", "N H NC C K"),), TOL, what="local_cumsum",
                    mistakes=CUMSUM_MISTAKES, args=(g,))


def _naive(G, strict, *, flip=False, reverse=False):
    C = G.shape[-2]
    mask = torch.ones(C, C, dtype=torch.bool).tril(-1 if strict != flip else 0)
    diff = G[..., :, None, :] - G[..., None, :, :]
    return torch.where(mask[:, :, None], torch.exp(-diff if reverse else diff), 0.0)


PAIRWISE_MISTAKES = (
    Mistake("diagonal-off-by-one", "Your diagonal is wrong for this `strict`: strict=True is r > s (the "
            "diagonal is 0, as in T), strict=False is r ≥ s (the diagonal is exp(0) = 1, as in the output's "
            "A_qk).", lambda G, strict: _naive(G, strict, flip=True)),
    Mistake("reversed-exponent", "Your exponent is G_s − G_r: the write of token s has decayed from s to r, "
            "exp(G_r − G_s) ≤ 1 for r ≥ s.", lambda G, strict: _naive(G, strict, reverse=True)),
)


def check_pairwise(run: Run) -> None:
    for case in run.cases(4):
        lead, C, K = case.size("N·H", 1, 3), case.size("C", 2, 9), case.size("K", 2, 6)
        strict = case.fixed("strict", case.index % 2 == 1)
        G = local_cumsum(case.log_decay(-1.0, lead, C, K))
        got = case.call("pairwise_decay", G, strict)
        case.expect(got, pairwise_decay(G, strict), (Out("D", "NH R S K"),), TOL, what="pairwise_decay",
                    mistakes=PAIRWISE_MISTAKES, args=(G, strict))


def _strong_decay(case):
    lead, K = case.size("N·H", 1, 2), case.size("K", 2, 6)
    C = case.fixed("C", 64)
    case.note("float32")
    G = local_cumsum(case.log_decay(-20.0, lead, C, K, dtype=torch.float32))
    return G, case.fixed("strict", case.index % 2 == 0)


def check_no_overflow(run: Run) -> None:
    for case in run.cases(2):
        G, strict = _strong_decay(case)
        got = case.call("pairwise_decay", G, strict)
        case.expect(got, pairwise_decay(G.double(), strict), (Out("D", "NH R S K"),), TOL_F32,
                    what="pairwise_decay", dtype=torch.float32)


def check_finite_gradient(run: Run) -> None:
    for case in run.cases(2):
        G, strict = _strong_decay(case)
        weights = case.normal(*G.shape[:-1], G.shape[-2], G.shape[-1], dtype=torch.float32)
        leaf = G.clone().requires_grad_()
        out = case.call("pairwise_decay", leaf, strict, clone=False)
        if not isinstance(out, torch.Tensor):
            raise case.fail(f"pairwise_decay returned a {type(out).__name__}, expected a tensor")
        if not torch.isfinite(out).all():
            raise case.fail("pairwise_decay has non-finite values", OVERFLOW)
        if not out.requires_grad:
            raise case.fail("the result of pairwise_decay does not depend on G through autograd (detached?)")
        (got,) = torch.autograd.grad((out * weights).sum(), leaf)
        exp_leaf = G.double().requires_grad_()
        (expected,) = torch.autograd.grad((pairwise_decay(exp_leaf, strict) * weights.double()).sum(), exp_leaf)
        case.expect(got, expected, (Out("dG", "NH C K"),), TOL_F32, what="the gradient", dtype=torch.float32)


OVERFLOW = Diagnosis("overflow", "exp(G_r)·exp(−G_s) overflows: exp(−G) is inf once −G > 88 in float32 (709 "
                     "in float64), and inf·0 = nan. Form the difference G_r − G_s first, set it to −inf above "
                     "the diagonal, then take exp: every entry is ≤ 1.")

EXERCISE = Exercise(
    number=5,
    slug="ex05_decay",
    title="Decay: local cumsum, pairwise exponents",
    functions=("local_cumsum", "pairwise_decay"),
    properties=(
        Property("the cumulative decay restarts in every chunk", check_cumsum,
                 Diagnosis("cumsum", "g has the layout [..., NC, C, K]: sum over the C axis.")),
        Property("pairwise decay: exp(G_r − G_s) on and below the diagonal, 0 above", check_pairwise,
                 Diagnosis("pairwise", "D[..., r, s, d] = exp(G[..., r, d] − G[..., s, d]) where s ≤ r "
                                       "(s < r when strict), and 0 elsewhere.")),
        Property("no overflow in float32 with g down to −20 (C = 64)", check_no_overflow,
                 OVERFLOW),
        Property("the gradient through the mask is finite", check_finite_gradient,
                 Diagnosis("mask-after-exp", "The gradient has nan although the values are right: masking after "
                                             "exp (where(mask, exp(d), 0)) computes exp(d) = inf above the "
                                             "diagonal, and its gradient is 0·inf = nan. Mask the exponent "
                                             "(−inf) before exp instead.")),
    ),
    minutes=30,
    difficulty=1,
)
