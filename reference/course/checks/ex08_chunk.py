"""Exercise 8: state passing across chunks and the chunk output; the five stages equal the recurrence.

    (4)  R = U − Y S_0,   S_C = Diag(γ_C) S_0 + K_tailᵀ R,   K_tail = exp(G_C − G)⊙K
    (5)  O = (scale·γ⊙Q) S_0 + A_qk R,   A_qk_rs = scale Σ_d q_rd k_sd exp(G_rd − G_sd) for r ≥ s
"""

import torch

from gdn2.ops import recurrent_gdn2
from gdn2.ops.chunk import (
    chunk_intra_t,
    chunk_output,
    chunk_state_passing,
    chunk_wy,
    pairwise_decay,
    solve_unit_lower,
)
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum

TOL = TOLERANCES["reference-float64"][0]
STATE_OUTS = (Out("S0", "N H GR NC K V"), Out("R", "N H GR NC C V"), Out("ht", "N H GR K V"))
O_OUT = (Out("O", "N H GR NC C V"),)


def chunked(case: Case, *, NC_range=(2, 4)):
    """(q, k, g, b, v, w, h0) on the chunked layout, and the stages 1-3 of the reference."""
    N, H, Gr = case.size("N", 1, 2), case.size("H", 1, 2), case.size("HV/H", 1, 3)
    NC, C = case.size("NC", *NC_range), case.size("C", 2, 8)
    K = case.size("K", 2, 7)
    V = case.size("V", 2, 7, avoid=(K,))
    q, k = case.normal(N, H, NC, C, K), case.unit(N, H, NC, C, K)
    g = case.log_decay(-1.0 if case.index % 2 == 0 else -20.0, N, H, NC, C, K)
    b = case.gate("b", 2.0, N, H, NC, C, K)
    v, w = case.normal(N, H, Gr, NC, C, V), case.gate("w", 1.0, N, H, Gr, NC, C, V)
    h0 = case.normal(N, H, Gr, K, V)
    G = local_cumsum(g)
    A = solve_unit_lower(chunk_intra_t(k, b, G))
    Y, U = chunk_wy(A, k, b, G, v, w)
    return q, k, G, Y, U, h0


def _state_passing(k, G, Y, U, h0, *, tail=True, gamma=True, shifted=False):
    NC = k.shape[2]
    gamma_C = torch.exp(G[:, :, :, -1]) if gamma else torch.ones_like(G[:, :, :, -1])
    k_tail = torch.exp(G[:, :, :, -1:] - G) * k if tail else k
    S, starts, residuals = h0, [], []
    for n in range(NC):
        if not shifted:
            starts.append(S)
        R = U[:, :, :, n] - Y[:, :, None, n] @ S
        residuals.append(R)
        S = gamma_C[:, :, None, n, :, None] * S + k_tail[:, :, None, n].transpose(-1, -2) @ R
        if shifted:
            starts.append(S)
    return torch.stack(starts, dim=3), torch.stack(residuals, dim=3), S


STATE_MISTAKES = (
    Mistake("missing-tail-decay", "Your state update adds Kᵀ R: the write of token r still decays from r to "
            "the end of the chunk, K_tail = exp(G_C − G_r)⊙K_r.", lambda *a: _state_passing(*a, tail=False)),
    Mistake("missing-chunk-decay", "Your state update does not decay S_0: S_C = Diag(γ_C) S_0 + K_tailᵀ R with "
            "γ_C = exp(G_C), the decay of the whole chunk.", lambda *a: _state_passing(*a, gamma=False)),
    Mistake("start-state-off-by-one", "Your S0 holds the state at the end of each chunk: S0[..., n, :, :] is "
            "the state chunk n starts from (h0 for the first chunk).", lambda *a: _state_passing(*a, shifted=True)),
)


def check_state_passing(run: Run) -> None:
    for case in run.cases(4):
        _, k, G, Y, U, h0 = chunked(case)
        got = case.call("state_passing", k, G, Y, U, h0)
        case.expect(got, chunk_state_passing(k, G, Y, U, h0), STATE_OUTS, TOL, what="state_passing",
                    mistakes=STATE_MISTAKES, args=(k, G, Y, U, h0))


def _output(q, k, G, S0, R, scale, *, strict=False, state=True, gamma=True):
    q_gamma = scale * (torch.exp(G) if gamma else 1.0) * q
    A_qk = scale * torch.einsum("...rd,...sd,...rsd->...rs", q, k, pairwise_decay(G, strict=strict))
    return (q_gamma[:, :, None] @ S0 if state else 0.0) + A_qk[:, :, None] @ R


OUTPUT_MISTAKES = (
    Mistake("causal-mask-off-by-one", "Your A_qk is strictly lower: o_r reads the state after token r's own "
            "write, so A_qk includes the diagonal (r ≥ s).", lambda *a: _output(*a, strict=True)),
    Mistake("missing-state-term", "Your output has only the intra-chunk term: O = (scale·γ⊙Q) S_0 + A_qk R, "
            "the first term reads the chunk's start state.", lambda *a: _output(*a, state=False)),
    Mistake("missing-gamma-on-q", "Your state term reads S_0 undecayed: token r sees S_0 decayed by γ_r = "
            "exp(G_r), so the query is scale·γ⊙Q.", lambda *a: _output(*a, gamma=False)),
)


def check_output(run: Run) -> None:
    for case in run.cases(4):
        q, k, G, Y, U, h0 = chunked(case)
        S0, R, _ = chunk_state_passing(k, G, Y, U, h0)
        scale = k.shape[-1] ** -0.5
        got = case.call("chunk_output", q, k, G, S0, R, scale)
        case.expect(got, chunk_output(q, k, G, S0, R, scale), O_OUT, TOL, what="chunk_output",
                    mistakes=OUTPUT_MISTAKES, args=(q, k, G, S0, R, scale))


def to_chunks(x, C, H):
    """[B, T, HX, D] -> [B, H, HX/H, NC, C, D], zero-padded to a multiple of C (a padded token has k = 0)."""
    B, T, HX, D = x.shape
    NC = -(-T // C)
    padded = torch.cat([x, x.new_zeros(B, NC * C - T, HX, D)], dim=1)
    return padded.view(B, NC, C, H, HX // H, D).permute(0, 3, 4, 1, 2, 5)


def from_chunks(y, T):
    B, H, Gr, NC, C, D = y.shape
    return y.permute(0, 3, 4, 1, 2, 5).reshape(B, NC * C, H * Gr, D)[:, :T]


def five_stages(state_passing, output, q, k, v, g, b, w, scale, h0, C):
    """Stages 1-3 of the reference, 4 and 5 given; [B, T, ·] in and out."""
    B, T, H, K = q.shape
    HV, V = v.shape[2], v.shape[3]
    qc, kc, gc, bc = (to_chunks(x, C, H)[:, :, 0] for x in (q, k, g, b))
    vc, wc = to_chunks(v, C, H), to_chunks(w, C, H)
    G = local_cumsum(gc)
    Y, U = chunk_wy(solve_unit_lower(chunk_intra_t(kc, bc, G)), kc, bc, G, vc, wc)
    S0, R, ht = state_passing(kc, G, Y, U, h0.view(B, H, HV // H, K, V))
    return from_chunks(output(qc, kc, G, S0, R, scale), T), ht.reshape(B, HV, K, V)


def check_equals_recurrence(run: Run) -> None:
    for case in run.cases(3):
        B, T, H = case.size("B", 1, 2), case.size("T", 5, 20), case.size("H", 1, 2)
        HV = H * case.size("HV/H", 1, 3)
        C = case.size("C", 2, 6, avoid=tuple(c for c in range(2, 7) if T % c == 0))     # T not a multiple of C
        K = case.size("K", 2, 6)
        V = case.size("V", 2, 6, avoid=(K,))
        q, k, v = case.normal(B, T, H, K), case.unit(B, T, H, K), case.normal(B, T, HV, V)
        g = case.log_decay(-1.0 if case.index < 2 else -20.0, B, T, H, K)
        b, w = case.gate("b", 2.0, B, T, H, K), case.gate("w", 1.0, B, T, HV, V)
        h0 = case.normal(B, HV, K, V)
        scale = K ** -0.5
        output = run.student.function("chunk_output")
        args = (q, k, v, g, b, w, scale, h0, C)
        got = case.call("state_passing", *args, via=lambda fn, *a, out=output: five_stages(fn, out, *a))
        expected = recurrent_gdn2(q, k, v, g, b, w, scale, initial_state=h0, output_final_state=True)
        mistakes = [Mistake(m.id, m.text, lambda *a, m=m: five_stages(m.wrong, chunk_output, *a))
                    for m in STATE_MISTAKES]
        mistakes += [Mistake(m.id, m.text, lambda *a, m=m: five_stages(chunk_state_passing, m.wrong, *a))
                     for m in OUTPUT_MISTAKES]
        case.expect(got, expected, (Out("o", "B T HV V"), Out("final state", "B HV K V")), TOL,
                    what="the five stages with your state_passing and chunk_output", mistakes=mistakes, args=args)


EXERCISE = Exercise(
    number=8,
    slug="ex08_chunk",
    title="Chunk state passing and output",
    functions=("state_passing", "chunk_output"),
    properties=(
        Property("state passing: R = U − Y S_0, S_C = Diag(γ_C) S_0 + K_tailᵀ R", check_state_passing,
                 Diagnosis("state-passing", "Walk the chunks in order; for each, record the start state, form "
                                            "R from it, then update it. Gr value heads share Y: Y[:, :, None, n].")),
        Property("output: O = (scale·γ⊙Q) S_0 + A_qk R", check_output,
                 Diagnosis("output", "Two terms: the start state read by the decayed query, and the residual "
                                     "writes of the chunk through the causal, decayed q·k scores (r ≥ s).")),
        Property("the five stages equal recurrent_gdn2 (T not a multiple of C, GVA)", check_equals_recurrence,
                 Diagnosis("chunk-form", "If stages 4 and 5 pass alone, check that they assume nothing the "
                                         "pipeline breaks: a last chunk that is part padding, Gr = 1, NC = 1.")),
    ),
    minutes=60,
    difficulty=2,
)
