"""Exercise 7: the WY auxiliaries, one inverse for the erase side and the write side.

    Y = A Ē,  Ē = γ⊙B⊙K  (γ_r = exp(G_r), erase side);   U = A Z,  Z = W⊙V  (write side)

and then R = U − Y S_0 holds, row by row, the write u_r = z_r − S̄_rᵀ e_r that the recurrence makes
at token r of a chunk that starts from S_0. Layout: key side [N, H, NC, C, K], value side
[N, H, Gr, NC, C, V] (Gr = HV/H value heads share a key head, and A).
"""

import torch

from gdn2.ops.chunk import chunk_intra_t, chunk_wy, solve_unit_lower
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum

TOL = TOLERANCES["reference-float64"][0]
OUTS = (Out("Y", "N H NC C K"), Out("U", "N H GR NC C V"))


def _draw(case: Case, NC_range=(1, 3)):
    """(A, k, b, G, v, w) with A from the reference stages, so it is the inverse of a real T."""
    N, H, Gr = case.size("N", 1, 2), case.size("H", 1, 2), case.size("HV/H", 2, 3)
    NC, C = case.size("NC", *NC_range), case.size("C", 2, 8)
    K = case.size("K", 2, 7)
    V = case.size("V", 2, 7, avoid=(K,))
    k, b = case.unit(N, H, NC, C, K), case.gate("b", 2.0, N, H, NC, C, K)
    G = local_cumsum(case.log_decay(-1.0, N, H, NC, C, K))
    v, w = case.normal(N, H, Gr, NC, C, V), case.gate("w", 1.0, N, H, Gr, NC, C, V)
    return solve_unit_lower(chunk_intra_t(k, b, G)), k, b, G, v, w


def _wy(A, k, b, G, v, w, *, gamma=True, tail=False, erase_gate=True, write_gate=True):
    decay = torch.exp(G[..., -1:, :] - G) if tail else (torch.exp(G) if gamma else torch.ones_like(G))
    Y = A @ (decay * (b if erase_gate else 1.0) * k)
    U = A[:, :, None] @ ((w if write_gate else 1.0) * v)
    return Y, U


MISTAKES = (
    Mistake("missing-gamma", "Your Y has no decay: Ē = γ⊙B⊙K with γ_r = exp(G_r), because the read at token "
            "r sees S_0 decayed by everything up to r (S̄_r = Diag(γ_r) S_0 + …).", lambda *a: _wy(*a, gamma=False)),
    Mistake("tail-decay", "Your Y uses exp(G_C − G_r), the decay to the end of the chunk (that one is K_tail's, "
            "for the state update). The erase side reads S_0 decayed up to r: γ_r = exp(G_r).",
            lambda *a: _wy(*a, tail=True)),
    Mistake("erase-gate-missing", "Your Y has no erase gate: Ē = γ⊙B⊙K (the read direction is e = b⊙k).",
            lambda *a: _wy(*a, erase_gate=False)),
    Mistake("write-gate-missing", "Your U has no write gate: Z = W⊙V.", lambda *a: _wy(*a, write_gate=False)),
)


def check_wy(run: Run) -> None:
    for case in run.cases(4):
        args = _draw(case)
        got = case.call("wy", *args)
        case.expect(got, chunk_wy(*args), OUTS, TOL, what="wy", mistakes=MISTAKES, args=args)


def recurrent_writes(k, b, g, v, w, S0):
    """u_r = z_r − S̄_rᵀ(b_r⊙k_r) token by token through one chunk: [N, H, Gr, C, V]."""
    S, writes = S0, []
    for r in range(k.shape[-2]):
        S_bar = torch.exp(g[:, :, None, r, :, None]) * S                               # [N, H, Gr, K, V]
        u = w[..., r, :] * v[..., r, :] - torch.einsum("nhgkv,nhk->nhgv", S_bar, b[:, :, r] * k[:, :, r])
        writes.append(u)
        S = S_bar + k[:, :, None, r, :, None] * u[..., None, :]
    return torch.stack(writes, dim=-2)


def check_residual(run: Run) -> None:
    for case in run.cases(3):
        A, k, b, G, v, w = _draw(case, NC_range=(1, 1))
        S0 = case.normal(*v.shape[:3], k.shape[-1], v.shape[-1])
        g = torch.diff(G, dim=-2, prepend=torch.zeros_like(G[..., :1, :]))
        expected = recurrent_writes(k[:, :, 0], b[:, :, 0], g[:, :, 0], v[:, :, :, 0], w[:, :, :, 0], S0)

        def residual(fn, *args, S0=S0):
            Y, U = fn(*args)
            return U[:, :, :, 0] - Y[:, :, None, 0] @ S0

        got = case.call("wy", A, k, b, G, v, w, via=residual)
        case.expect(got, expected, (Out("R", "N H GR C V"),), TOL, what="U − Y S_0",
                    mistakes=[Mistake(m.id, m.text, lambda *a, m=m: residual(m.wrong, *a)) for m in MISTAKES],
                    args=(A, k, b, G, v, w))


EXERCISE = Exercise(
    number=7,
    slug="ex07_wy",
    title="The WY auxiliaries Y and U",
    functions=("wy",),
    properties=(
        Property("Y = A(γ⊙b⊙k), U = A(w⊙v), GVA", check_wy,
                 Diagnosis("wy", "One inverse A serves both sides. A is [N, H, NC, C, C] and is shared by the "
                                 "Gr value heads of a key head: insert the group axis (A[:, :, None]) for U.")),
        Property("R = U − Y S_0 is the recurrence's write at every token", check_residual,
                 Diagnosis("residual", "Y and U passed alone but not together: check the decay on the erase "
                                       "side against the recurrence, token by token.")),
    ),
    minutes=30,
    difficulty=2,
)
