"""Exercise 4: the transition of one step, its eigenvalue along k, and its norm.

    S_t = M_t S_{t-1} + k_t z_tᵀ,   M_t = (I − k_t e_tᵀ) Diag(α_t),   e_t = b_t⊙k_t,  α_t = exp(g_t)

I − k eᵀ has the eigenvalue 1 − eᵀk = 1 − Σ_d b_d k_d² along k (and 1 on the K − 1 directions
orthogonal to e); for ‖k‖ = 1 and b ∈ [0, 2] it lies in [−1, 1]. M is not symmetric unless e ∥ k, so
its spectral norm ‖M‖₂ (largest singular value) can exceed its largest |eigenvalue|.
"""

import torch

from gdn2.ops.recurrent import recurrent_step
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mismatch, Mistake, Out, Property, Run

TOL = TOLERANCES["reference-float64"][0]
#: the norm goes through an SVD and the student may use eigvals or power iteration: 1e-9 is still sharp
TOL_NORM = 1e-9


def _draw(case: Case, g_min: float = -0.5) -> tuple:
    """(k, g, b) of one token: unit keys, b in [0, 2] drawn per channel (untied)."""
    N, HV, K = case.size("N", 1, 2), case.size("HV", 1, 3), case.size("K", 2, 8)
    return case.unit(N, HV, K), case.log_decay(g_min, N, HV, K), case.gate("b", 2.0, N, HV, K)


def transition(k, g, b, *, decay_first=True, transposed=False):
    """(I − k eᵀ) Diag(α) with the mistakes as switches: [N, HV, K, K]."""
    K = k.shape[-1]
    e = b * k
    outer = e[..., :, None] * k[..., None, :] if transposed else k[..., :, None] * e[..., None, :]
    erase = torch.eye(K, dtype=k.dtype) - outer
    decay = torch.diag_embed(torch.exp(g))
    return erase @ decay if decay_first else decay @ erase


TRANSITION_MISTAKES = (
    Mistake("decay-after-erase", "Your M is Diag(α)(I − k eᵀ): the decay acts first, so it is the right "
            "factor, M = (I − k eᵀ) Diag(α).", lambda k, g, b: transition(k, g, b, decay_first=False)),
    Mistake("erase-transposed", "Your M is I − e kᵀ: the read is along e (r = S̄ᵀe, a row vector eᵀS̄) and "
            "the write along k, so the rank-one term is k eᵀ.", lambda k, g, b: transition(k, g, b, transposed=True)),
    Mistake("decay-missing", "Your M has no decay: M = (I − k eᵀ) Diag(exp g).",
            lambda k, g, b: transition(k, torch.zeros_like(g), b)),
)


def check_transition(run: Run) -> None:
    for case in run.cases(4):
        k, g, b = _draw(case)
        got = case.call("transition", k, g, b)
        case.expect(got, transition(k, g, b), (Out("M", "N HV K K"),), TOL, what="transition",
                    mistakes=TRANSITION_MISTAKES, args=(k, g, b))
        # the claim: the step is M S + k zᵀ
        V = case.size("V", 2, 6, avoid=(k.shape[-1],))
        S, v, w = case.normal(*k.shape, V), case.normal(*k.shape[:-1], V), case.gate("w", 1.0, *k.shape[:-1], V)
        _, S_new = recurrent_step(S, torch.zeros_like(k), k, v, g, b, w, 1.0)
        case.expect(got @ S + k[..., :, None] * (w * v)[..., None, :], S_new, (Out("M S + k zᵀ", "N HV K V"),), TOL,
                    what="your M")


def erase_eigenvalue(k, b):
    return 1 - (b * k * k).sum(-1)


EIGEN_MISTAKES = (
    Mistake("eigenvalue-k-not-squared", "Your eigenvalue is 1 − Σ_d b_d k_d: (I − k eᵀ)k = k − k (eᵀk), so "
            "the eigenvalue is 1 − eᵀk = 1 − Σ_d b_d k_d².", lambda k, b: 1 - (b * k).sum(-1)),
    Mistake("eigenvalue-of-rank-one", "You returned eᵀk, the eigenvalue of the rank-one term k eᵀ; the "
            "transition's is 1 − eᵀk.", lambda k, b: (b * k * k).sum(-1)),
)


def check_eigenvalue(run: Run) -> None:
    for case in run.cases(4):
        k, _, b = _draw(case)
        got = case.call("erase_eigenvalue", k, b)
        case.expect(got, erase_eigenvalue(k, b), (Out("λ", "N HV"),), TOL, what="erase_eigenvalue",
                    mistakes=EIGEN_MISTAKES, args=(k, b))


def _spectral_norm(M):
    return torch.linalg.matrix_norm(M, ord=2)


NORM_MISTAKES = (
    Mistake("spectral-radius", "You returned the spectral radius max|λ|. M is not symmetric when b is not "
            "constant (e is not parallel to k), and for such a matrix ‖M‖₂ = σ_max can exceed max|λ|: a "
            "single step can grow the state even though no eigenvalue exceeds 1. Use the largest "
            "singular value.", lambda k, g, b: torch.linalg.eigvals(transition(k, g, b)).abs().amax(-1)),
    Mistake("frobenius-norm", "You returned the Frobenius norm ‖M‖_F; the growth of one step is bounded by "
            "the spectral norm ‖M‖₂ (largest singular value).",
            lambda k, g, b: torch.linalg.matrix_norm(transition(k, g, b))),
    Mistake("decay-after-erase", "Your norm is that of Diag(α)(I − k eᵀ): the decay acts first, so it is the "
            "right factor, M = (I − k eᵀ) Diag(α).",
            lambda k, g, b: _spectral_norm(transition(k, g, b, decay_first=False))),
    Mistake("norm-without-decay", "Your norm ignores the decay: it is the norm of M = (I − k eᵀ) Diag(α).",
            lambda k, g, b: _spectral_norm(transition(k, torch.zeros_like(g), b))),
)


def check_norm(run: Run) -> None:
    for case in run.cases(4):
        k, g, b = _draw(case, g_min=-0.2)
        got = case.call("transition_norm", k, g, b)
        case.expect(got, _spectral_norm(transition(k, g, b)), (Out("‖M‖₂", "N HV"),), TOL_NORM,
                    what="transition_norm", mistakes=NORM_MISTAKES, args=(k, g, b))


def check_tied_gates_are_contractions(run: Run) -> None:
    for case in run.cases(3):
        N, HV, K = case.size("N", 1, 2), case.size("HV", 1, 3), case.size("K", 2, 8)
        k = case.unit(N, HV, K)
        beta = case.gate("beta", 2.0, N, HV, 1)
        got = case.call("transition_norm", k, torch.zeros_like(k), beta.expand(N, HV, K))
        (norm,) = case.as_tuple(got, (Out("‖M‖₂", "N HV"),), "transition_norm")
        if (norm > 1 + 1e-12).any():
            idx = tuple(int(i) for i in (norm > 1 + 1e-12).nonzero()[0])
            raise Mismatch(case.label, f"‖I − β k kᵀ‖₂ = {norm[idx].item():.6g} > 1 at [{idx[0]}, {idx[1]}] "
                                       f"with β = {beta[idx].item():.4g}")


EXERCISE = Exercise(
    number=4,
    slug="ex04_stability",
    title="Stability of the transition",
    functions=("transition", "erase_eigenvalue", "transition_norm"),
    properties=(
        Property("S_t = M_t S_{t-1} + k_t z_tᵀ", check_transition,
                 Diagnosis("transition", "Collect the terms of S_t in S_{t-1}: the decay is applied first "
                                         "(right factor), then the erase I − k eᵀ.")),
        Property("the eigenvalue along k is 1 − kᵀ(b⊙k)", check_eigenvalue,
                 Diagnosis("eigenvalue", "Apply I − k eᵀ to k.")),
        Property("the norm is the largest singular value", check_norm,
                 Diagnosis("norm", "‖M‖₂ = σ_max(M): torch.linalg.matrix_norm(M, ord=2), or the square "
                                   "root of the largest eigenvalue of MᵀM.")),
        Property("tied gates: ‖I − β k kᵀ‖₂ ≤ 1 for β in [0, 2]", check_tied_gates_are_contractions,
                 Diagnosis("tied-norm", "I − β k kᵀ is symmetric with eigenvalues 1 and 1 − β; if your norm "
                                        "exceeds 1 here it is not the spectral norm.")),
    ),
    minutes=40,
    difficulty=2,
)
