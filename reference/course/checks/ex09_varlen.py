"""Exercise 9: packed sequences. N sequences are concatenated along T (B = 1) with offsets
cu_seqlens = [0, T_1, T_1 + T_2, …, T]; each starts from its own initial state and none sees another.

    for each n:  o[cu_n : cu_{n+1}], ht[n] = chunk form of sequence n from initial_state[n]
"""

import torch

from gdn2.ops import recurrent_gdn2
from gdn2.tolerances import TOLERANCES

from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run

TOL = TOLERANCES["reference-float64"][0]
OUTS = (Out("o", "B T HV V"), Out("ht", "N HV K V"))


def _draw(case: Case, lengths: list[int] | None = None):
    """(q, k, v, g, b, w, scale, cu_seqlens, initial_state, chunk_size), lengths drawn around C."""
    C = case.size("chunk_size", 2, 5)
    if lengths is None:
        N = case.size("N", 2, 4)
        lengths = [int(n) for n in torch.randint(1, 3 * C + 2, (N,), generator=case.gen)]
    case.fixed("lengths", lengths)
    N, T = len(lengths), sum(lengths)
    H = case.size("H", 1, 2)
    HV = H * case.size("HV/H", 1, 2)
    K = case.size("K", 2, 6)
    V = case.size("V", 2, 6, avoid=(K,))
    q, k, v = case.normal(1, T, H, K), case.unit(1, T, H, K), case.normal(1, T, HV, V)
    g = case.log_decay(-1.0, 1, T, H, K)
    b, w = case.gate("b", 2.0, 1, T, H, K), case.gate("w", 1.0, 1, T, HV, V)
    cu = torch.tensor([0, *torch.tensor(lengths).cumsum(0).tolist()], dtype=torch.int64)
    return q, k, v, g, b, w, K ** -0.5, cu, case.normal(N, HV, K, V), C


def reference(q, k, v, g, b, w, scale, cu_seqlens, initial_state, chunk_size):
    return recurrent_gdn2(q, k, v, g, b, w, scale, initial_state=initial_state, output_final_state=True,
                          cu_seqlens=cu_seqlens)


def _leaking(q, k, v, g, b, w, scale, cu_seqlens, initial_state, chunk_size):
    """The whole stream as one sequence from initial_state[0]; the state at each end is that sequence's."""
    outs, finals, S = [], [], initial_state[:1]
    bounds = cu_seqlens.tolist()
    for s, e in zip(bounds[:-1], bounds[1:]):
        o, S = recurrent_gdn2(*(x[:, s:e] for x in (q, k, v, g, b, w)), scale, initial_state=S,
                              output_final_state=True)
        outs.append(o)
        finals.append(S[0])
    return torch.cat(outs, dim=1), torch.stack(finals)


def _zero_start(q, k, v, g, b, w, scale, cu_seqlens, initial_state, chunk_size):
    return reference(q, k, v, g, b, w, scale, cu_seqlens, torch.zeros_like(initial_state), chunk_size)


LEAK = "state-leak"
LEAK_TEXT = ("A sequence sees the sequence before it: its state must start from its own initial_state[n], "
             "not from where the previous one ended, and no chunk may hold tokens of two sequences (pad each "
             "sequence to a multiple of the chunk size on its own).")
MISTAKES = (
    Mistake(LEAK, LEAK_TEXT, _leaking),
    Mistake("initial-state-ignored", "Your sequences start from zero: sequence n starts from initial_state[n].",
            _zero_start),
)


def check_matches_reference(run: Run) -> None:
    for case in run.cases(4):
        args = _draw(case)
        got = case.call("packed_chunk_gdn2", *args)
        case.expect(got, reference(*args), OUTS, TOL, what="packed_chunk_gdn2", mistakes=MISTAKES, args=args)


def check_no_leak(run: Run) -> None:
    for case in run.cases(3):
        q, k, v, g, b, w, scale, cu, h0, C = _draw(case)
        bounds = cu.tolist()
        n = case.fixed("changed sequence", int(torch.randint(len(bounds) - 2, (1,), generator=case.gen)))
        s, e = bounds[n], bounds[n + 1]
        v2 = v.clone()
        v2[:, s:e] += 1.0
        k2 = k.clone()
        k2[:, s:e] = k2[:, s:e].flip(-1)
        first = case.call("packed_chunk_gdn2", q, k, v, g, b, w, scale, cu, h0, C)
        second = case.call("packed_chunk_gdn2", q, k2, v2, g, b, w, scale, cu, h0, C)
        (o1, h1), (o2, h2) = (case.as_tuple(x, OUTS, "packed_chunk_gdn2") for x in (first, second))
        if o1.shape != o2.shape or o1.shape[1] != bounds[-1] or h1.shape != h2.shape or h1.shape[0] != len(h0):
            case.expect(first, reference(q, k, v, g, b, w, scale, cu, h0, C), OUTS, TOL, what="packed_chunk_gdn2")
        change = (o1 - o2).abs().flatten(2).amax(-1)[0]                      # per token, [T]
        change[s:e] = 0
        if (change > 1e-12).any():
            t = int((change > 1e-12).nonzero()[0, 0])
            m = next(i for i in range(len(bounds) - 1) if bounds[i] <= t < bounds[i + 1])
            raise case.fail(f"changing only sequence {n} (tokens {s}..{e - 1}) changed o[t={t}], a token of "
                            f"sequence {m} (tokens {bounds[m]}..{bounds[m + 1] - 1})", Diagnosis(LEAK, LEAK_TEXT))
        keep = [i for i in range(len(h0)) if i != n]
        if not torch.equal(h1[keep], h2[keep]):
            raise case.fail(f"changing only sequence {n} changed the final state of another sequence",
                            Diagnosis(LEAK, LEAK_TEXT))


def check_empty_and_single(run: Run) -> None:
    for case in run.cases(2):
        args = _draw(case, lengths=[3, 0, 1, 4] if case.index == 0 else [0, 5, 1])
        got = case.call("packed_chunk_gdn2", *args)
        case.expect(got, reference(*args), OUTS, TOL, what="packed_chunk_gdn2", mistakes=MISTAKES, args=args)


EXERCISE = Exercise(
    number=9,
    slug="ex09_varlen",
    title="Packed sequences (cu_seqlens)",
    functions=("packed_chunk_gdn2",),
    properties=(
        Property("equals recurrent_gdn2 with cu_seqlens", check_matches_reference,
                 Diagnosis("varlen", "Split at cu_seqlens, pad each sequence to a multiple of chunk_size "
                                     "(zeros: a padded token has k = 0 and g = 0, so it changes nothing), run "
                                     "the chunk form per sequence from initial_state[n], drop the padding.")),
        Property("no state leaks across sequence boundaries", check_no_leak, Diagnosis(LEAK, LEAK_TEXT)),
        Property("empty and one-token sequences", check_empty_and_single,
                 Diagnosis("empty-sequence", "A sequence of length 0 has no output rows and its final state is "
                                             "its initial state; one of length 1 is one padded chunk.")),
    ),
    minutes=45,
    difficulty=2,
)
