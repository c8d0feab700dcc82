"""Exercise 6: the intra-chunk matrix T and A = (I + T)⁻¹ by forward substitution.

    T_rs = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd)  for r > s, else 0
    A = (I + T)⁻¹:   A_r = e_r − Σ_{s<r} T_rs A_s   (row by row, T strictly lower)
"""

import torch

from gdn2.ops.chunk import chunk_intra_t, solve_unit_lower
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum

TOL = TOLERANCES["reference-float64"][0]
TOL_F32 = TOLERANCES["reference-float32"][0]


def _draw(case: Case, C_range=(3, 16), g_min=-1.0, dtype=torch.float64):
    lead, K = case.size("N·H", 1, 3), case.size("K", 2, 8)
    C = case.size("C", *C_range)
    k = case.unit(lead, C, K, dtype=dtype)
    b = case.gate("b", 2.0, lead, C, K, dtype=dtype)
    G = local_cumsum(case.log_decay(g_min, lead, C, K, dtype=dtype))
    return k, b, G


def t_variant(k, b, G, *, diagonal=False, gate_on_column=False, upper=False):
    C = k.shape[-2]
    left, right = (k, b * k) if gate_on_column else (b * k, k)
    mask = torch.ones(C, C, dtype=torch.bool).tril(0 if diagonal else -1)
    diff = torch.where(mask[:, :, None], G[..., :, None, :] - G[..., None, :, :], float("-inf"))
    T = torch.einsum("...rd,...sd,...rsd->...rs", left, right, torch.exp(diff))
    return T.transpose(-1, -2) if upper else T


T_MISTAKES = (
    Mistake("t-includes-diagonal", "Your T has a diagonal: T is strictly lower (r > s). The token's own "
            "key interaction is the 1 of I + T; including it counts it twice.",
            lambda k, b, G: t_variant(k, b, G, diagonal=True)),
    Mistake("erase-gate-on-column", "Your T gates the earlier token s: the erase gate belongs to the row "
            "token r, whose read along e_r = b_r⊙k_r meets the earlier write k_s.",
            lambda k, b, G: t_variant(k, b, G, gate_on_column=True)),
    Mistake("t-transposed", "Your T is upper triangular: row r (the later token) reads the writes of the "
            "earlier tokens s < r, so T is lower.", lambda k, b, G: t_variant(k, b, G, upper=True)),
)


def check_t(run: Run) -> None:
    for case in run.cases(4):
        k, b, G = _draw(case, g_min=-1.0 if case.index < 2 else -20.0)
        got = case.call("intra_t", k, b, G)
        case.expect(got, chunk_intra_t(k, b, G), (Out("T", "NH R S"),), TOL, what="intra_t",
                    mistakes=T_MISTAKES, args=(k, b, G))


def check_t_no_overflow(run: Run) -> None:
    for case in run.cases(2):
        case.note("float32")
        k, b, G = _draw(case, C_range=(64, 64), g_min=-20.0, dtype=torch.float32)
        got = case.call("intra_t", k, b, G)
        case.expect(got, chunk_intra_t(k.double(), b.double(), G.double()), (Out("T", "NH R S"),), TOL_F32,
                    what="intra_t", dtype=torch.float32, mistakes=T_MISTAKES, args=(k, b, G))


def _identity_like(T):
    return torch.eye(T.shape[-1], dtype=T.dtype).expand(T.shape)


SOLVE_MISTAKES = (
    Mistake("first-order-inverse", "Your A is I − T, the first term of the series (I + T)⁻¹ = I − T + T² − …; "
            "forward substitution keeps every term: A_r = e_r − Σ_{s<r} T_rs A_s uses the rows already "
            "solved.", lambda T: _identity_like(T) - T),
    Mistake("inverse-sign", "Your A is (I − T)⁻¹: the system is (I + T) A = I, so A_r = e_r − Σ_{s<r} T_rs A_s "
            "(minus).", lambda T: torch.linalg.inv(_identity_like(T) - T)),
    Mistake("inverse-transposed", "Your A is the transpose of (I + T)⁻¹: substitute row by row "
            "(A_r = e_r − Σ_{s<r} T_rs A_s), A is lower triangular.",
            lambda T: torch.linalg.inv(_identity_like(T) + T).transpose(-1, -2)),
)


def check_solve(run: Run) -> None:
    for case in run.cases(4):
        T = chunk_intra_t(*_draw(case))
        got = case.call("solve_unit_lower", T)
        case.expect(got, solve_unit_lower(T), (Out("A", "NH R S"),), TOL, what="solve_unit_lower",
                    mistakes=SOLVE_MISTAKES, args=(T,))


EXERCISE = Exercise(
    number=6,
    slug="ex06_intra",
    title="Intra-chunk T and forward substitution",
    functions=("intra_t", "solve_unit_lower"),
    properties=(
        Property("T_rs = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd) for r > s", check_t,
                 Diagnosis("intra-t", "Row r is the later token: its erase direction b_r⊙k_r against the "
                                      "earlier key k_s, decayed from s to r, strictly below the diagonal.")),
        Property("T is finite in float32 with g down to −20 (C = 64)", check_t_no_overflow,
                 Diagnosis("overflow", "Do not split exp(G_r − G_s) into exp(G_r)·exp(−G_s): exp(−G) overflows "
                                       "(−G reaches 1280 here). Use the masked pairwise exponents of "
                                       "exercise 5.")),
        Property("A = (I + T)⁻¹ by forward substitution", check_solve,
                 Diagnosis("solve", "Row 0 of A is e_0; row r is e_r − Σ_{s<r} T_rs A_s with the rows s < r "
                                    "already solved. Stack the rows (no in-place writes into a tensor that "
                                    "autograd needs).")),
    ),
    minutes=45,
    difficulty=2,
)
