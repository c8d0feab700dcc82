"""Exercise 3: the update is the minimiser of the fast-weight objective.

    L_t(S) = ‖S − S̄_t‖²_F − 2⟨Sᵀk_t, z_t − S̄_tᵀe_t⟩,   e_t = b_t⊙k_t,  z_t = w_t⊙v_t,  S̄_t = Diag(exp g_t) S_{t-1}

and L_t(S) = ‖S − S_t‖²_F + const, so S_t of the recurrence is its unique minimiser.
"""

import torch

from gdn2.ops.recurrent import recurrent_step
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run

TOL = TOLERANCES["reference-float64"][0]
#: a numerical minimiser may stop at a small gradient; 1e-8 is far below any wrong answer's error
TOL_MINIMISER = 1e-8


def _draw(case: Case) -> tuple:
    """(S_prev, k, v, g, b, w) of one token."""
    N, HV = case.size("N", 1, 2), case.size("HV", 1, 3)
    K = case.size("K", 3, 8)
    V = case.size("V", 2, 8, avoid=(K,))
    return (case.normal(N, HV, K, V), case.unit(N, HV, K), case.normal(N, HV, V), case.log_decay(-1.0, N, HV, K),
            case.gate("b", 2.0, N, HV, K), case.gate("w", 1.0, N, HV, V))


def loss(S, S_prev, k, v, g, b, w, *, sign=-2.0, decayed_read=True, decayed_anchor=True):
    """L_t(S) per sequence and head, with the mistakes as switches."""
    S_bar = torch.exp(g)[..., None] * S_prev
    read = S_bar if decayed_read else S_prev
    anchor = S_bar if decayed_anchor else S_prev
    target = w * v - torch.einsum("nhkv,nhk->nhv", read, b * k)                  # z − S̄ᵀe, [N, HV, V]
    return (S - anchor).pow(2).sum((-2, -1)) + sign * torch.einsum("nhkv,nhk,nhv->nh", S, k, target)


def recurrent_state(S_prev, k, v, g, b, w):
    return recurrent_step(S_prev, torch.zeros_like(k), k, v, g, b, w, 1.0)[1]


LOSS_MISTAKES = (
    Mistake("inner-product-sign", "Your loss adds the inner product: L = ‖S − S̄‖² − 2⟨Sᵀk, z − S̄ᵀe⟩ rewards "
            "a memory that returns z − S̄ᵀe along k, so its term enters with a minus sign.",
            lambda *a: loss(*a, sign=2.0)),
    Mistake("read-before-decay", "Your target reads the undecayed state: it is z − S̄ᵀe with the decayed "
            "S̄ = Diag(exp g) S_{t-1}.", lambda *a: loss(*a, decayed_read=False)),
    Mistake("anchor-undecayed", "Your first term measures the distance to S_{t-1}: the update stays close "
            "to the decayed memory S̄ (‖S − S̄‖²).", lambda *a: loss(*a, decayed_anchor=False)),
)


def check_loss(run: Run) -> None:
    for case in run.cases(4):
        x = _draw(case)
        S = case.normal(*x[0].shape)
        got = case.call("fast_weight_loss", S, *x)
        case.expect(got, loss(S, *x), (Out("L", "N HV"),), TOL, what="fast_weight_loss",
                    mistakes=LOSS_MISTAKES, args=(S, *x))


def check_minimum(run: Run) -> None:
    for case in run.cases(3):
        x = _draw(case)
        S_t = recurrent_state(*x)
        delta = case.normal(*S_t.shape)
        at_min = case.call("fast_weight_loss", S_t, *x)
        moved = case.call("fast_weight_loss", S_t + delta, *x)
        got = moved - at_min if isinstance(moved, torch.Tensor) and isinstance(at_min, torch.Tensor) else moved
        mistakes = [Mistake(m.id, m.text, lambda *a, m=m, S=S_t, d=delta: m.wrong(S + d, *a) - m.wrong(S, *a))
                    for m in LOSS_MISTAKES]
        case.expect(got, delta.pow(2).sum((-2, -1)), (Out("L(S_t + Δ) − L(S_t)", "N HV"),), 1e-9,
                    what="fast_weight_loss", mistakes=mistakes, args=x)


MINIMISER_MISTAKES = (
    Mistake("step-size", "Your result is S̄ − ∇L(S̄) = 2S_t − S̄: the Hessian of L is 2I, so a gradient step "
            "of size 1/2 (not 1) from any S lands on the minimiser.",
            lambda S_prev, k, v, g, b, w: 2 * recurrent_state(S_prev, k, v, g, b, w) - torch.exp(g)[..., None]
            * S_prev),
    Mistake("not-moved", "Your result is the start point S̄: the minimisation made no progress (is the "
            "gradient zero? is the step applied to a copy?).",
            lambda S_prev, k, v, g, b, w: torch.exp(g)[..., None] * S_prev),
)


def check_minimiser(run: Run) -> None:
    for case in run.cases(3):
        x = _draw(case)
        got = case.call("minimise", *x)
        case.expect(got, recurrent_state(*x), (Out("S", "N HV K V"),), TOL_MINIMISER, what="minimise",
                    mistakes=MINIMISER_MISTAKES, args=x)


EXERCISE = Exercise(
    number=3,
    slug="ex03_fast_weight",
    title="The fast-weight objective",
    functions=("fast_weight_loss", "minimise"),
    properties=(
        Property("the loss is ‖S − S̄‖² − 2⟨Sᵀk, z − S̄ᵀe⟩", check_loss,
                 Diagnosis("loss", "Sum over both state axes for the squared norm; ⟨Sᵀk, c⟩ = kᵀ S c is one "
                                   "number per sequence and head.")),
        Property("L(S_t + Δ) = L(S_t) + ‖Δ‖²: the step is the minimiser", check_minimum,
                 Diagnosis("minimum", "Expand ‖S_t + Δ − S̄‖²: the cross term 2⟨Δ, S_t − S̄⟩ must cancel the "
                                      "change of the inner-product term.")),
        Property("minimising numerically lands on S_t", check_minimiser,
                 Diagnosis("minimiser", "Start at S̄ and take gradient steps on your loss (torch.autograd.grad) "
                                        "until the gradient vanishes; L is quadratic with Hessian 2I.")),
    ),
    minutes=40,
    difficulty=1,
)
