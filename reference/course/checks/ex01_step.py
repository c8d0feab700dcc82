"""Exercise 1: one recurrent step and its output.

    S̄_t = Diag(exp g_t) S_{t-1},  r_t = S̄_tᵀ(b_t⊙k_t),  S_t = S̄_t + k_t(w_t⊙v_t − r_t)ᵀ,  o_t = S_tᵀ(scale·q_t)

The oracle is ``gdn2.ops.recurrent.recurrent_step`` in float64, and a loop of the student's steps
is compared with ``gdn2.ops.recurrent_gdn2``, the ground truth of the project.
"""

import torch

from gdn2.ops import recurrent_gdn2
from gdn2.ops.recurrent import recurrent_step
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mismatch, Mistake, Out, Property, Run

TOL = TOLERANCES["reference-float64"][0]
OUTS = (Out("o", "N HV V"), Out("S_new", "N HV K V"))


def draw_step(case: Case, g_min: float, dtype: torch.dtype = torch.float64) -> tuple:
    """(S, q, k, v, g, b, w, scale) of one token, K ≠ V, b in [0, 2]."""
    N, HV = case.size("N", 1, 3), case.size("HV", 1, 3)
    K = case.size("K", 3, 9)
    V = case.size("V", 2, 8, avoid=(K,))
    S, q, k, v = case.normal(N, HV, K, V), case.normal(N, HV, K), case.unit(N, HV, K), case.normal(N, HV, V)
    g = case.log_decay(g_min, N, HV, K)
    b, w = case.gate("b", 2.0, N, HV, K), case.gate("w", 1.0, N, HV, V)
    return tuple(x.to(dtype) for x in (S, q, k, v, g, b, w)) + (K ** -0.5,)


def reference_step(S, q, k, v, g, b, w, scale):
    return recurrent_step(*(x.double() for x in (S, q, k, v, g, b, w)), scale)


# ---- typical mistakes: each takes the step's arguments and returns (o, S_new) ------------------------
def _read(S, e):
    return torch.einsum("nhkv,nhk->nhv", S, e)


def _out(S, q, scale):
    return _read(S, scale * q), S


def _decay_after_write(S, q, k, v, g, b, w, scale):
    S_new = torch.exp(g)[..., None] * (S + k[..., None] * (w * v - _read(S, b * k))[..., None, :])
    return _out(S_new, q, scale)


def _read_before_decay(S, q, k, v, g, b, w, scale):
    S_bar = torch.exp(g)[..., None] * S
    return _out(S_bar + k[..., None] * (w * v - _read(S, b * k))[..., None, :], q, scale)


def _erase_on_value_axis(S, q, k, v, g, b, w, scale):
    S_bar = torch.exp(g)[..., None] * S
    return _out(S_bar + k[..., None] * (w * (v - _read(S_bar, k)))[..., None, :], q, scale)


def _erase_gate_on_write_key(S, q, k, v, g, b, w, scale):
    S_bar = torch.exp(g)[..., None] * S
    return _out(S_bar + (b * k)[..., None] * (w * v - _read(S_bar, k))[..., None, :], q, scale)


def _output_before_write(S, q, k, v, g, b, w, scale):
    _, S_new = reference_step(S, q, k, v, g, b, w, scale)
    return _read(torch.exp(g)[..., None] * S, scale * q), S_new


def _output_without_scale(S, q, k, v, g, b, w, scale):
    return reference_step(S, q, k, v, g, b, w, 1.0)[0], reference_step(S, q, k, v, g, b, w, scale)[1]


MISTAKES = (
    Mistake("decay-after-write", "Your step equals the update with the decay applied after the write. "
            "Decay first: S̄ = Diag(exp g) S_{t-1}; then read r = S̄ᵀ(b⊙k) and write into S̄.",
            _decay_after_write),
    Mistake("read-before-decay", "Your step reads the undecayed state: r must be S̄ᵀ(b⊙k) with "
            "S̄ = Diag(exp g) S_{t-1}, the state the write goes into.", _read_before_decay),
    Mistake("erase-on-value-axis", "Your step gates the erase on the value axis (w⊙(v − S̄ᵀk), the KDA habit "
            "β(v − S̄ᵀk)). In GDN-2 the erase gate b acts on the key axis, inside the read: r = S̄ᵀ(b⊙k); "
            "w gates only the written value: w⊙v − r.", _erase_on_value_axis),
    Mistake("erase-gate-on-write-key", "Your step puts the erase gate on the key of the outer product "
            "((b⊙k)(…)ᵀ). The write direction is k itself; b belongs to the read direction e = b⊙k.",
            _erase_gate_on_write_key),
    Mistake("output-before-write", "Your output reads the state before the write: o_t = S_tᵀ(scale·q_t) "
            "uses the new state S_t.", _output_before_write),
    Mistake("output-without-scale", "Your output forgets the scale: o_t = S_tᵀ(scale·q_t).",
            _output_without_scale),
)


def check_one_step(run: Run) -> None:
    for case in run.cases(6):
        args = draw_step(case, g_min=-1.0 if case.index < 3 else -20.0)
        got = case.call("step", *args)
        case.expect(got, reference_step(*args), OUTS, TOL, what="step", mistakes=MISTAKES, args=args)


def check_inputs_unchanged(run: Run) -> None:
    names = ("S", "q", "k", "v", "g", "b", "w")
    for case in run.cases(2):
        args = draw_step(case, g_min=-1.0)
        mine = [x.clone() for x in args[:-1]]
        case.call("step", *mine, args[-1], clone=False)
        for name, before, after in zip(names, args, mine):
            if not torch.equal(before, after):
                idx = tuple(int(i) for i in (before != after).nonzero()[0])
                raise Mismatch(case.label, f"step changed its argument {name} in place; first change at "
                                           f"{name}{list(idx)}", HINT_INPLACE)


def _loop(step, q, k, v, g, b, w, scale, h0):
    """A sequence [B, T, H, ...] through ``step``, the key side repeated for each value head (GVA)."""
    G = v.shape[2] // q.shape[2]
    q, k, g, b = (x.repeat_interleave(G, dim=2) for x in (q, k, g, b))
    S, outs = h0, []
    for t in range(q.shape[1]):
        o, S = step(S, q[:, t], k[:, t], v[:, t], g[:, t], b[:, t], w[:, t], scale)
        outs.append(o)
    return torch.stack(outs, dim=1), S


def check_loop_is_recurrent_gdn2(run: Run) -> None:
    for case in run.cases(3):
        B, T, H = case.size("B", 1, 2), case.size("T", 2, 7), case.size("H", 1, 2)
        HV = H * case.size("HV/H", 2, 3)
        K = case.size("K", 3, 8)
        V = case.size("V", 2, 8, avoid=(K,))
        q, k, v = case.normal(B, T, H, K), case.unit(B, T, H, K), case.normal(B, T, HV, V)
        g = case.log_decay(-1.0 if case.index == 0 else -20.0, B, T, H, K)
        b, w = case.gate("b", 2.0, B, T, H, K), case.gate("w", 1.0, B, T, HV, V)
        h0 = case.normal(B, HV, K, V)
        got = case.call("step", q, k, v, g, b, w, K ** -0.5, h0, via=_loop)
        expected = recurrent_gdn2(q, k, v, g, b, w, K ** -0.5, initial_state=h0, output_final_state=True)
        mistakes = [Mistake(m.id, m.text, lambda *a, m=m: _loop(m.wrong, *a)) for m in MISTAKES]
        case.expect(got, expected, (Out("o", "B T HV V"), Out("final state", "B HV K V")), TOL,
                    what="the loop of your steps", mistakes=mistakes, args=(q, k, v, g, b, w, K ** -0.5, h0))


HINT_INPLACE = Diagnosis("in-place", "Your step modifies its inputs (S.mul_, S *= …, S[...] = …). The caller "
                         "keeps S_{t-1}: build S̄ and S_t as new tensors.")

EXERCISE = Exercise(
    number=1,
    slug="ex01_step",
    title="One recurrent step",
    functions=("step",),
    properties=(
        Property("one step matches the reference", check_one_step,
                 Diagnosis("step", "Follow the four lines in order: decay the rows of S by exp(g); read "
                                   "r = S̄ᵀ(b⊙k) (a [V] vector); write S̄ + k (w⊙v − r)ᵀ; read out "
                                   "o = S_tᵀ(scale·q).")),
        Property("the inputs are left unchanged", check_inputs_unchanged, HINT_INPLACE),
        Property("a loop of steps equals recurrent_gdn2 (GVA)", check_loop_is_recurrent_gdn2,
                 Diagnosis("loop", "The single step passed but the loop did not: check that the step "
                                   "does not depend on anything but its arguments.")),
    ),
    minutes=30,
    difficulty=1,
)
