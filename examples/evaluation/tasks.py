"""Synthetic retrieval tasks, generated on the fly from a seeded ``torch.Generator``.

Both tasks return ``(inputs, targets)`` of shape [N, T] (int64): the model reads ``inputs`` and is
scored by next-token prediction at the positions where ``targets`` is not :data:`IGNORE`; those are
the query positions, and accuracy counts only them.

**MQAR** (multi-query associative recall, as in Zoology): the context opens with ``num_pairs``
key-value pairs ``k_1 v_1 … k_n v_n`` (distinct keys from the key half of the vocabulary, distinct
values from the value half), then every key is queried once, in a random order, at random slots of
the rest of the sequence: the query token is the key, its target the value (the value follows it
in the input, teacher-forced, as in Zoology). Every other position holds a random filler token,
never one of this sequence's keys, so that each key occurrence after the pairs is a query.

    [k_1 v_1 k_2 v_2 … k_n v_n | f f k_3 (v_3) f k_1 (v_1) f f …]      (x) = target of the token before

**Multi-key needle in a haystack** (after RULER's multi-key NIAH): a haystack of filler tokens holds
``num_pairs`` needles ``NEEDLE k v`` at uniformly random, non-overlapping places (anywhere in the
context); ``num_queries`` of them are asked for at the end, ``QUERY k`` → v; the other needles are
distractors with their own keys and values (all keys distinct, all values distinct). Marker, key,
value and filler tokens come from disjoint ranges of the vocabulary.

    [f f NEEDLE k_2 v_2 f … f NEEDLE k_1 v_1 f … | QUERY k_1 (v_1) QUERY k_2 (v_2)]
"""

from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["IGNORE", "TaskSpec", "mqar", "niah", "make_batch", "niah_layout", "mqar_layout"]

IGNORE = -100  # the target of a position that is not scored (torch's cross-entropy ignore_index)
NEEDLE, QUERY = 1, 2  # marker tokens of the needle task (token 0 is never used)


@dataclass(frozen=True)
class TaskSpec:
    """One cell of the grid: the task and its difficulty knobs."""

    task: str            # "mqar" or "niah"
    num_pairs: int       # key-value pairs in the context (needles and distractors for "niah")
    seq_len: int         # tokens the model reads
    vocab_size: int
    num_queries: int = 0  # "niah": needles asked for (0: all of them, like MQAR)

    def __post_init__(self) -> None:
        if self.task not in ("mqar", "niah"):
            raise ValueError(f"task must be 'mqar' or 'niah', got {self.task!r}")
        layout = mqar_layout if self.task == "mqar" else niah_layout
        layout(self)  # raises if the knobs do not fit together

    @property
    def queries(self) -> int:
        return self.num_pairs if self.task == "mqar" or self.num_queries == 0 else self.num_queries


def mqar_layout(spec: TaskSpec) -> tuple[range, range]:
    """(key tokens, value tokens) of MQAR: the vocabulary's halves; fillers are any non-key token."""
    half = spec.vocab_size // 2
    keys, values = range(0, half), range(half, spec.vocab_size)
    if spec.num_pairs < 1 or spec.num_pairs > min(len(keys), len(values)):
        raise ValueError(f"mqar: num_pairs = {spec.num_pairs} must be in [1, {min(len(keys), len(values))}] "
                         f"for vocab_size = {spec.vocab_size}")
    if spec.seq_len + 1 < 4 * spec.num_pairs:
        raise ValueError(f"mqar: seq_len = {spec.seq_len} is too short for {spec.num_pairs} pairs and their "
                         f"queries (needs seq_len >= {4 * spec.num_pairs - 1})")
    return keys, values


def niah_layout(spec: TaskSpec) -> tuple[range, range, range]:
    """(key, value, filler) token ranges of the needle task, after the two markers."""
    rest = spec.vocab_size - 3
    third = rest // 3
    keys, values, fillers = range(3, 3 + third), range(3 + third, 3 + 2 * third), range(3 + 2 * third, spec.vocab_size)
    if third < 1 or len(fillers) < 1:
        raise ValueError(f"niah: vocab_size = {spec.vocab_size} is too small (needs at least 6)")
    q = spec.num_pairs if spec.num_queries == 0 else spec.num_queries
    if not 1 <= spec.num_pairs <= third or not 1 <= q <= spec.num_pairs:
        raise ValueError(f"niah: need 1 <= num_queries = {q} <= num_pairs = {spec.num_pairs} <= {third} "
                         f"(keys of vocab_size = {spec.vocab_size})")
    if spec.seq_len + 1 - 3 * q < 3 * spec.num_pairs:
        raise ValueError(f"niah: seq_len = {spec.seq_len} is too short for {spec.num_pairs} needles and "
                         f"{q} queries")
    return keys, values, fillers


def _distinct(n: int, choices: range, k: int, gen: torch.Generator) -> Tensor:
    """[n, k]: k distinct tokens of ``choices`` per row, in random order."""
    return torch.rand(n, len(choices), generator=gen).argsort(dim=1)[:, :k] + choices.start


def _places(n: int, slots: int, k: int, gen: torch.Generator) -> Tensor:
    """[n, k]: k distinct slots of ``range(slots)`` per row, ascending."""
    return torch.rand(n, slots, generator=gen).argsort(dim=1)[:, :k].sort(dim=1).values


def _shuffle(x: Tensor, gen: torch.Generator) -> Tensor:
    """Each row of x in a random order."""
    return x.gather(1, torch.rand(x.shape, generator=gen).argsort(dim=1))


def mqar(spec: TaskSpec, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` MQAR sequences: (inputs, targets), each [n, seq_len]."""
    keys, values = mqar_layout(spec)
    P, T = spec.num_pairs, spec.seq_len
    k, v = _distinct(n, keys, P, gen), _distinct(n, values, P, gen)             # [n, P]
    # fillers: uniform over the vocab − P tokens that are not this row's keys (x ↦ x + #keys ≤ it)
    seqs = torch.randint(0, spec.vocab_size - P, (n, T + 1), generator=gen)
    for key in k.sort(dim=1).values.unbind(1):
        seqs += (seqs >= key[:, None]).long()
    seqs[:, 0:2 * P:2], seqs[:, 1:2 * P:2] = k, v
    order = _shuffle(torch.arange(P).expand(n, P), gen)                         # the order of the queries
    at = 2 * P + 2 * _places(n, (T + 1 - 2 * P) // 2, P, gen)                   # two-token slots after the pairs
    qk, qv = k.gather(1, order), v.gather(1, order)
    seqs.scatter_(1, at, qk)
    seqs.scatter_(1, at + 1, qv)
    labels = torch.full((n, T + 1), IGNORE, dtype=torch.long).scatter_(1, at, qv)
    return seqs[:, :-1], labels[:, :-1]


def niah(spec: TaskSpec, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` needle-in-a-haystack sequences: (inputs, targets), each [n, seq_len]."""
    keys, values, fillers = niah_layout(spec)
    P, Q, T = spec.num_pairs, spec.queries, spec.seq_len
    hay = T + 1 - 3 * Q                                           # haystack length; the queries fill the rest
    seqs = torch.randint(fillers.start, fillers.stop, (n, T + 1), generator=gen)
    k, v = _distinct(n, keys, P, gen), _distinct(n, values, P, gen)
    # P non-overlapping triples, uniformly: P sorted distinct offsets of [0, hay − 2P), the j-th shifted by
    # 2j; then needle j goes to a random one of the places
    start = _shuffle(_places(n, hay - 2 * P, P, gen) + 2 * torch.arange(P), gen)
    seqs.scatter_(1, start, NEEDLE)
    seqs.scatter_(1, start + 1, k)
    seqs.scatter_(1, start + 2, v)
    asked = _shuffle(torch.arange(P).expand(n, P), gen)[:, :Q]                # the needles asked for
    at = hay + 3 * torch.arange(Q).expand(n, Q)
    seqs.scatter_(1, at, QUERY)
    seqs.scatter_(1, at + 1, k.gather(1, asked))
    seqs.scatter_(1, at + 2, v.gather(1, asked))
    labels = torch.full((n, T + 1), IGNORE, dtype=torch.long).scatter_(1, at + 1, v.gather(1, asked))
    return seqs[:, :-1], labels[:, :-1]


def make_batch(spec: TaskSpec, n: int, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """``n`` sequences of the task of ``spec``, drawn from ``gen``: (inputs, targets), each [n, seq_len]."""
    return (mqar if spec.task == "mqar" else niah)(spec, n, gen)
