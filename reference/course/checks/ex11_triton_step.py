"""Exercise 11: the fused recurrent decoding step as a Triton kernel (run by Triton's interpreter).

One program per (sequence n, value head hv) holds the [K, V] state in registers, padded to a block
[BK, BV] of powers of two, and applies exercise 1's step to it:

    S̄ = Diag(exp g) S,  r = S̄ᵀ(b⊙k),  S' = S̄ + k (w⊙v − r)ᵀ,  o = S'ᵀ(scale·q)

The key side comes from key head hv // (HV/H) (GVA). The oracle is exercise 1's reference step in
float64 on the float32 inputs.
"""

import torch

from gdn2.tolerances import TOLERANCES

from .. import launch
from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run
from .ex01_step import MISTAKES as STEP_MISTAKES
from .ex01_step import reference_step

TOL = TOLERANCES["reference-float32"][0]
OUTS = (Out("o", "N HV V"), Out("S_out", "N HV K V"))


def _draw(case: Case, K: tuple[int, int], V: tuple[int, int], group: tuple[int, int], g_min: float) -> tuple:
    """(S, q, k, v, g, b, w, scale) in float32: key side [N, H, K], value side [N, HV, V]."""
    N, H = case.size("N", 1, 2), case.size("H", 1, 2)
    HV = H * case.size("HV/H", *group)
    K_ = case.size("K", *K)
    V_ = case.size("V", *V, avoid=(K_,))
    f32 = torch.float32
    S, q = case.normal(N, HV, K_, V_, dtype=f32), case.normal(N, H, K_, dtype=f32)
    k, v = case.unit(N, H, K_, dtype=f32), case.normal(N, HV, V_, dtype=f32)
    g = case.log_decay(g_min, N, H, K_, dtype=f32)
    b, w = case.gate("b", 2.0, N, H, K_, dtype=f32), case.gate("w", 1.0, N, HV, V_, dtype=f32)
    return S, q, k, v, g, b, w, K_ ** -0.5


def per_value_head(fn):
    """A step on per-value-head key sides ([N, HV, K]) as one on the kernel's layout ([N, H, K]), in float64."""
    def step(S, q, k, v, g, b, w, scale):
        G = S.shape[1] // q.shape[1]
        q, k, g, b = (x.double().repeat_interleave(G, dim=1) for x in (q, k, g, b))
        return fn(S.double(), q, k, v.double(), g, b, w.double(), scale)
    return step


MISTAKES = tuple(Mistake(m.id, m.text, per_value_head(m.wrong)) for m in STEP_MISTAKES) + (
    Mistake("gva-key-head", "Your value head hv reads key head hv: with GVA, HV/H value heads share one key "
            "head, i_h = i_hv // (HV // H).", lambda S, q, k, v, g, b, w, scale: reference_step(
                S, *(x[:, : S.shape[1]] for x in (q, k)), v, g[:, : S.shape[1]], b[:, : S.shape[1]], w, scale)),
)


def _checker(K, V, group, g_min, count):
    def check(run: Run) -> None:
        for case in run.cases(count):
            args = _draw(case, K, V, group, g_min)
            got = case.call("decode_step_kernel", *args, via=launch.decode_step)
            case.expect(got, per_value_head(reference_step)(*args), OUTS, TOL, what="decode_step",
                        mistakes=MISTAKES, args=args, dtype=torch.float32)
    return check


EXERCISE = Exercise(
    number=11,
    slug="ex11_triton_step",
    title="Triton: the fused decoding step",
    functions=("decode_step_kernel",),
    properties=(
        Property("full blocks: K = 16, V = 32, HV = H", _checker((16, 16), (32, 32), (1, 1), -1.0, 2),
                 Diagnosis("kernel-step", "Load the state block S[n, hv] and the token's rows, then follow "
                                          "exercise 1: decay the rows, r = Σ_k (b⊙k)_k S̄[k, :] (tl.sum over "
                                          "axis 0), write, and o = Σ_k (scale·q)_k S'[k, :].")),
        Property("K and V below the block sizes (masked lanes)", _checker((5, 15), (3, 13), (1, 1), -1.0, 2),
                 Diagnosis("missing-mask", "Your kernel is right when K and V fill the blocks and wrong when they "
                                           "do not: every tl.load and tl.store of a padded block needs the mask of "
                                           "its valid lanes (o_k < K, o_v < V) and other=0.0 for the loads.")),
        Property("GVA: value head hv reads key head hv // (HV/H)", _checker((16, 16), (32, 32), (2, 3), -1.0, 2),
                 Diagnosis("gva-key-head", "Your kernel is right when HV = H and wrong with GVA: value head hv "
                                           "reads key head i_h = i_hv // (HV // H), so the key-side offset is "
                                           "(i_n·H + i_h)·K.")),
        Property("any sizes, g down to −20, b in [0, 2]", _checker((5, 40), (5, 40), (1, 2), -20.0, 2),
                 Diagnosis("kernel-any", "Check the offsets: state (i_n·HV + i_hv)·K·V + k·V + v, value side "
                                         "(i_n·HV + i_hv)·V + v, key side (i_n·H + i_h)·K + k.")),
    ),
    minutes=60,
    difficulty=3,
    triton=True,
)
