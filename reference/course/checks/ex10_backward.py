"""Exercise 10: the gate-aware backward of the WY stage, checked against autograd.

Forward (one chunk; T is an input of the stage):

    A = (I + T)⁻¹,   Y = A Ē,  Ē = γ⊙B⊙K,   U = A Z,  Z = W⊙V

Backward, given dY and dU:

    dA = dU Zᵀ + dY Ēᵀ,   dT = −strict_lower(Aᵀ dA Aᵀ)      (from δA = −A δT A)
    dZ = Aᵀ dU → dv = dZ⊙w, dw = dZ⊙v;    dĒ = Aᵀ dY → dk = dĒ⊙γ⊙b, db = dĒ⊙γ⊙k, dG = dĒ⊙Ē
"""

import torch

from gdn2.ops.chunk import chunk_intra_t
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum

TOL = TOLERANCES["reference-float64"][0]
OUTS = (Out("dT", "N H R S"), Out("dk", "N H C K"), Out("db", "N H C K"), Out("dG", "N H C K"),
        Out("dv", "N H C V"), Out("dw", "N H C V"))


def _draw(case: Case):
    """(T, k, b, G, v, w, dY, dU), T from the intra stage so that A is a real inverse."""
    N, H, C = case.size("N", 1, 2), case.size("H", 1, 2), case.size("C", 3, 10)
    K = case.size("K", 2, 7)
    V = case.size("V", 2, 7, avoid=(K,))
    k, b = case.unit(N, H, C, K), case.gate("b", 2.0, N, H, C, K)
    G = local_cumsum(case.log_decay(-1.0, N, H, C, K))
    v, w = case.normal(N, H, C, V), case.gate("w", 1.0, N, H, C, V)
    return chunk_intra_t(k, b, G), k, b, G, v, w, case.normal(N, H, C, K), case.normal(N, H, C, V)


def forward(T, k, b, G, v, w):
    eye = torch.eye(T.shape[-1], dtype=T.dtype).expand(T.shape)
    A = torch.linalg.solve_triangular(eye + T.tril(-1), eye, upper=False, unitriangular=True)
    return A @ (torch.exp(G) * b * k), A @ (w * v)


def autograd_backward(T, k, b, G, v, w, dY, dU):
    """The oracle: autograd through the forward (T enters through its strict lower triangle only)."""
    leaves = [x.detach().clone().requires_grad_() for x in (T, k, b, G, v, w)]
    Y, U = forward(*leaves)
    return torch.autograd.grad((Y * dY).sum() + (U * dU).sum(), leaves)


def manual(T, k, b, G, v, w, dY, dU, *, dY_term=True, dU_term=True, transpose=True, mask=True):
    """The backward by hand, with the mistakes as switches."""
    eye = torch.eye(T.shape[-1], dtype=T.dtype).expand(T.shape)
    A = torch.linalg.solve_triangular(eye + T, eye, upper=False, unitriangular=True)
    gamma = torch.exp(G)
    E, Z = gamma * b * k, w * v
    dA = (dU @ Z.transpose(-1, -2) if dU_term else 0.0) + (dY @ E.transpose(-1, -2) if dY_term else 0.0)
    At = A.transpose(-1, -2) if transpose else A
    dT = -(At @ dA @ At)
    dT = dT.tril(-1) if mask else dT
    dZ, dE = At @ dU, At @ dY
    return dT, dE * gamma * b, dE * gamma * k, dE * E, dZ * w, dZ * v


MISTAKES = (
    Mistake("forgotten-erase-term", "Your dA lacks the erase side: A is shared by Y = AĒ and U = AZ, so "
            "dA = dU Zᵀ + dY Ēᵀ collects both.", lambda *a: manual(*a, dY_term=False)),
    Mistake("forgotten-write-term", "Your dA lacks the write side: dA = dU Zᵀ + dY Ēᵀ collects both outputs "
            "of the shared inverse.", lambda *a: manual(*a, dU_term=False)),
    Mistake("missing-transpose", "Your gradients use A where Aᵀ belongs: for Y = A Ē, dĒ = Aᵀ dY; and δA = "
            "−A δT A gives dT = −Aᵀ dA Aᵀ.", lambda *a: manual(*a, transpose=False)),
    Mistake("dT-not-strictly-lower", "Your dT has entries on or above the diagonal. T has no entries there (it "
            "is strictly lower), so its gradient is strict_lower(−Aᵀ dA Aᵀ).", lambda *a: manual(*a, mask=False)),
)


def _check(run: Run, picks: tuple[int, ...]) -> None:
    for case in run.cases(3):
        args = _draw(case)
        with torch.no_grad():                    # a backward by hand needs no autograd
            got = case.call("wy_backward", *args)
        expected = autograd_backward(*args)
        got = case.as_tuple(got, OUTS, "wy_backward")

        def pick(xs):
            return xs[picks[0]] if len(picks) == 1 else tuple(xs[i] for i in picks)

        case.expect(pick(got), pick(expected), [OUTS[i] for i in picks], TOL, what="wy_backward",
                    mistakes=[Mistake(m.id, m.text, lambda *a, m=m: pick(m.wrong(*a))) for m in MISTAKES],
                    args=args)

EXERCISE = Exercise(
    number=10,
    slug="ex10_backward",
    title="The gate-aware backward of the WY stage",
    functions=("wy_backward",),
    properties=(
        Property("dT = −strict_lower(Aᵀ dA Aᵀ), dA = dU Zᵀ + dY Ēᵀ", lambda run: _check(run, (0,)),
                 Diagnosis("dT", "Differentiate A(I + T) = I: δA = −A δT A. Then ⟨dA, δA⟩ = ⟨−Aᵀ dA Aᵀ, δT⟩, "
                                 "restricted to where T lives.")),
        Property("dv, dw through Z = w⊙v", lambda run: _check(run, (4, 5)),
                 Diagnosis("dZ", "dZ = Aᵀ dU, then each factor of Z = w⊙v gets dZ times the other.")),
        Property("dk, db, dG through Ē = γ⊙b⊙k", lambda run: _check(run, (1, 2, 3)),
                 Diagnosis("dE", "dĒ = Aᵀ dY; Ē = exp(G)⊙b⊙k, so dG = dĒ⊙Ē (the derivative of exp is exp).")),
    ),
    minutes=60,
    difficulty=3,
)
