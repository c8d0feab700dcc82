"""``gdn2 check``: every available backend's operators against the float64 token-by-token reference.

For a few small random problems (plain, grouped value heads, packed sequences, the in-op gate and
L2 norm, T not a multiple of the chunk size, an initial state), each backend's ``chunk_gdn2`` and
``fused_recurrent_gdn2`` run in each of its dtypes; outputs, final states and (where the backend
has a backward) the gradients of every input are compared with ``recurrent_gdn2`` in float64 on
the same rounded inputs, by relative RMS error against the tolerance-table bounds of
:mod:`gdn2.tolerances`. dA_log and ddt_bias, sums of signed terms that can cancel, are measured
against the size of their terms (:func:`gdn2.tolerances.gate_term_sizes`).
"""

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from .backends import BACKENDS, available_backends, get_backend
from .ops import recurrent_gdn2
from .tolerances import gate_term_sizes, path_name, tolerance

__all__ = ["Case", "CASES", "Row", "run_check", "format_table"]


@dataclass(frozen=True)
class Case:
    """One random operator problem; ``lengths`` packs sequences into one row (B = 1)."""

    name: str
    B: int
    T: int
    H: int
    HV: int
    K: int
    V: int
    lengths: tuple[int, ...] | None = None
    initial_state: bool = True
    gate_in_op: bool = False

    @property
    def N(self) -> int:
        return self.B if self.lengths is None else len(self.lengths)


CASES = (
    Case("B2-T65-H2-K16-V16", 2, 65, 2, 2, 16, 16),
    Case("B2-T40-H2-HV4-K16-V32-gva", 2, 40, 2, 4, 16, 32),
    Case("T90-N3-H2-K16-V16-varlen", 1, 90, 2, 2, 16, 16, lengths=(17, 0, 73)),
    Case("B1-T70-H2-K32-V16-gate-l2norm", 1, 70, 2, 2, 32, 16, initial_state=False, gate_in_op=True),
)


@dataclass
class Row:
    backend: str
    op: str
    case: str
    dtype: str
    quantity: str
    error: float
    tol: float

    @property
    def ok(self) -> bool:
        return self.error <= self.tol  # NaN compares False: a non-finite result fails


def _rel_rms(actual: Tensor, expected: Tensor, scale: Tensor | None = None) -> float:
    """RMS(actual − expected) / RMS(scale), the scale being expected unless given."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if a.shape != e.shape:
        return float("nan")
    s = e if scale is None else scale.detach().double().cpu()
    return ((a - e).pow(2).mean().sqrt() / s.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def _problem(case: Case, seed: int) -> dict[str, Tensor]:
    """Fresh random float64 inputs (never zeros) and the upstream gradients do, dht."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)
    B, T, H, HV, K, V, N = case.B, case.T, case.H, case.HV, case.K, case.V, case.N
    p = {"q": r(B, T, H, K), "k": r(B, T, H, K), "v": r(B, T, HV, V), "b": 2 * u(B, T, H, K), "w": u(B, T, HV, V)}
    if case.gate_in_op:
        p["g"] = r(B, T, H, K)                                    # raw gate, any sign
        p["A_log"], p["dt_bias"] = u(H).mul(15).add(1).log(), r(H * K) - 2
    else:
        p["k"] = torch.nn.functional.normalize(p["k"], dim=-1)    # unit keys, as the layer makes them
        p["g"] = -2 * u(B, T, H, K).clamp_min(1e-3)               # log-decay in [-2, 0)
    if case.initial_state:
        p["h0"] = r(N, HV, K, V)
    p["do"], p["dht"] = r(B, T, HV, V), r(N, HV, K, V)
    return p


def _call(op: Callable, p: dict[str, Tensor], case: Case, dtype: torch.dtype, device: str, grads: bool
          ) -> tuple[dict[str, Tensor], bool]:
    """Run ``op`` on the problem cast to ``dtype`` (gates and state in float32, or float64).

    Returns the named results (o, ht and, with ``grads``, the input gradients) and whether the op
    has a backward (False when its output does not require grad)."""
    side = torch.float64 if dtype == torch.float64 else torch.float32
    names = [n for n in ("q", "k", "v", "g", "b", "w", "h0", "A_log", "dt_bias") if n in p]
    x = {n: p[n].to(device=device, dtype=dtype if n in ("q", "k", "v") else side).requires_grad_(grads)
         for n in names}
    cu = None if case.lengths is None else torch.tensor([0, *torch.tensor(case.lengths).cumsum(0).tolist()],
                                                        device=device)
    extras = ({"use_qk_l2norm_in_kernel": True, "A_log": x["A_log"], "dt_bias": x["dt_bias"]}
              if case.gate_in_op else {})
    with torch.set_grad_enabled(grads):
        o, ht = op(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], initial_state=x.get("h0"),
                   output_final_state=True, cu_seqlens=cu, **extras)
    out = {"o": o, "ht": ht}
    if not grads:
        return out, True
    if not o.requires_grad:
        return out, False
    loss = (o.double() * p["do"].to(device)).sum() + (ht.double() * p["dht"].to(device)).sum()
    for n, gr in zip(names, torch.autograd.grad(loss, [x[n] for n in names], allow_unused=True)):
        out[n] = gr if gr is not None else torch.zeros_like(x[n])
    return out, True


def _rounded(p: dict[str, Tensor], dtype: torch.dtype) -> dict[str, Tensor]:
    """The problem as the op sees it in ``dtype``, back in float64: the oracle's inputs."""
    side = torch.float64 if dtype == torch.float64 else torch.float32
    return {n: x.to(dtype if n in ("q", "k", "v") else side).double() if n not in ("do", "dht") else x
            for n, x in p.items()}


def _dtypes(backend: str, device: str) -> tuple[tuple[torch.dtype, ...], dict[str, str]]:
    """(the dtypes a backend is checked in here, {dtype: why it is not checked here})."""
    if backend == "reference":
        return (torch.float64, torch.float32, torch.bfloat16), {}
    if device == "cpu":
        return (torch.float32, torch.float16), {
            "bfloat16": "Triton's CPU interpreter computes tl.dot on bfloat16 operands wrongly, so the backend "
                        "refuses bfloat16 there; it is checked on a GPU"}
    return (torch.float32, torch.bfloat16, torch.float16), {}


def run_check(backends: list[str] | None = None, seed: int = 0, log: Callable[[str], None] = print
              ) -> tuple[list[Row], dict[str, str]]:
    """Compare every available backend (or those named) with the float64 recurrence.

    Returns the table rows and ``{backend: reason}`` for the backends (or ``"backend dtype"`` for the dtypes)
    that could not be checked here.
    """
    available = available_backends()
    names = list(BACKENDS) if backends is None else backends
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown backend(s) {unknown}; registered backends: {', '.join(BACKENDS)}")
    skipped = {n: available[n] for n in names if available[n] is not None}
    rows: list[Row] = []
    oracle_cache: dict[tuple[str, torch.dtype], tuple[dict[str, Tensor], dict[str, Tensor]]] = {}
    problems = {c.name: _problem(c, seed + i) for i, c in enumerate(CASES)}
    for name in (n for n in names if n not in skipped):
        module = get_backend(name)
        device = "cuda" if name != "reference" and torch.cuda.is_available() else "cpu"
        dtypes, not_here = _dtypes(name, device)
        skipped.update({f"{name} {dt}": why for dt, why in not_here.items()})
        for case in CASES:
            p = problems[case.name]
            for dtype in dtypes:
                key = (case.name, dtype)
                if key not in oracle_cache:   # the oracle's results, and the term sizes of dA_log, ddt_bias
                    r = _rounded(p, dtype)
                    oracle, _ = _call(recurrent_gdn2, r, case, torch.float64, "cpu", grads=True)
                    oracle_cache[key] = oracle, (gate_term_sizes(r["g"], r["A_log"], r["dt_bias"], oracle["g"])
                                                 if case.gate_in_op else {})
                expected, sizes = oracle_cache[key]
                path = path_name(name, dtype)
                for op_name in ("chunk_gdn2", "fused_recurrent_gdn2"):
                    got, has_backward = _call(getattr(module, op_name), p, case, dtype, device, grads=True)
                    for quantity, exp in expected.items():
                        if quantity not in got:
                            continue  # forward-only op: gradients are not part of its contract
                        rows.append(Row(name, op_name, case.name, str(dtype).removeprefix("torch."),
                                        quantity if quantity in ("o", "ht") else f"d{quantity}",
                                        _rel_rms(got[quantity], exp, sizes.get(quantity)),
                                        tolerance(path, quantity)))
                    if not has_backward:
                        rows.append(Row(name, op_name, case.name, str(dtype).removeprefix("torch."),
                                        "(forward only)", 0.0, 0.0))
    return rows, skipped


def format_table(rows: list[Row], skipped: dict[str, str]) -> str:
    """The rows as a fixed-width table, then the unavailable backends with their reasons."""
    head = ("backend", "op", "shape", "dtype", "quantity", "rel-RMS err", "tol", "ok")
    body = [(r.backend, r.op, r.case, r.dtype, r.quantity,
             "-" if r.quantity == "(forward only)" else f"{r.error:.2e}",
             "-" if r.quantity == "(forward only)" else f"{r.tol:.0e}", "ok" if r.ok else "FAIL") for r in rows]
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    fmt = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    if any(r.quantity in ("dA_log", "ddt_bias") for r in rows):
        lines.append("dA_log, ddt_bias: RMS error over the RMS of the sum of |terms| (their sums can cancel)")
    lines += [f"backend {n!r} unavailable: {reason}" if " " not in n else f"skipped {n}: {reason}"
              for n, reason in skipped.items()]
    return "\n".join(lines)
