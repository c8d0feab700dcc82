"""What an exercise is made of: properties, seeded cases, typical mistakes, and the comparison that
explains a failure.

A property is a function ``check(run)`` that draws seeded cases (``run.cases(n)``), calls the
student's function through the case (``case.call``), and compares the result with the float64
reference (``case.expect``). Error is measured as in the project's tolerance table
(``gdn2.tolerances``): relative RMS error against the reference,

    rel_rms(got, expected) = RMS(got − expected) / RMS(expected),

and a failure reports the first element whose error exceeds tol·RMS(expected) (such an element
exists whenever rel_rms > tol). On a failure the case also evaluates the exercise's typical
mistakes on the same inputs; a student result that equals one of them names that mistake.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

__all__ = [
    "Diagnosis", "Mistake", "Property", "Exercise", "NotAttempted", "StudentError", "Rejected", "Mismatch", "Student",
    "Run", "Case", "Out", "rel_rms",
]

F64 = torch.float64


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong, under a stable id (the mutation tests assert on it) and in words."""

    id: str
    text: str


@dataclass(frozen=True)
class Mistake:
    """A typical wrong answer: ``wrong`` takes the reference's arguments and returns what the mistake
    computes. A student result equal to it (within the property's tolerance) gets this diagnosis."""

    id: str
    text: str
    wrong: Callable[..., Any]

    @property
    def diagnosis(self) -> Diagnosis:
        return Diagnosis(self.id, self.text)


@dataclass(frozen=True)
class Property:
    """One graded claim about the student's code; ``hint`` explains a failure no mistake matches."""

    name: str
    check: Callable[[Run], None]
    hint: Diagnosis


@dataclass(frozen=True)
class Exercise:
    """One exercise: its file (``slug``.py in the student's folder), the functions it defines, its
    properties in the order they are graded, and what the course page says about it."""

    number: int
    slug: str
    title: str
    functions: tuple[str, ...]
    properties: tuple[Property, ...]
    minutes: int
    difficulty: int                      # 1 (warm-up) to 3 (hard)
    triton: bool = False                 # graded in Triton's interpreter

    @property
    def filename(self) -> str:
        return f"{self.slug}.py"


class NotAttempted(Exception):
    """The student's function raised NotImplementedError (the starter's body)."""


class StudentError(Exception):
    """The student's code raised: ``summary`` says where, ``trace`` is the traceback of the student's frames."""

    def __init__(self, summary: str, trace: str):
        super().__init__(summary)
        self.summary, self.trace = summary, trace


class Rejected(Exception):
    """A launcher found a fault of the kernel it ran (a store out of bounds); carries its diagnosis."""

    def __init__(self, detail: str, diagnosis: Diagnosis):
        super().__init__(detail)
        self.diagnosis = diagnosis


class Mismatch(Exception):
    """A property does not hold: in which case, what differs, and (when known) why."""

    def __init__(self, case: str, detail: str, diagnosis: Diagnosis | None = None):
        super().__init__(detail)
        self.case, self.detail, self.diagnosis = case, detail, diagnosis


def rel_rms(got: Tensor, expected: Tensor) -> float:
    """RMS(got − expected) / RMS(expected), in float64 (0 for empty tensors)."""
    if expected.numel() == 0:
        return 0.0
    g, e = got.to(F64), expected.to(F64)
    return ((g - e).pow(2).mean().sqrt() / e.pow(2).mean().sqrt().clamp_min(1e-300)).item()


def _cause(exc: BaseException) -> BaseException:
    """Triton's interpreter wraps an exception raised inside a kernel; this is the original."""
    while type(exc).__name__ == "InterpreterError" and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


class Student:
    """The student's module for one exercise; every call goes through :meth:`call`."""

    def __init__(self, module: ModuleType, path: Path):
        self.module, self.path = module, path

    def function(self, name: str) -> Callable:
        fn = getattr(self.module, name, None)
        if fn is None or not (callable(fn) or hasattr(fn, "__getitem__")):   # a function, or a Triton kernel
            raise StudentError(f"{self.path.name} defines no function {name!r}", "")
        return fn

    def short_traceback(self, exc: BaseException) -> str:
        """The frames of the student's file (the last three frames if none is), then the exception's line."""
        exc = _cause(exc)
        if isinstance(exc, SyntaxError):
            where = f'  File "{Path(exc.filename or self.path).name}", line {exc.lineno}'
            return f"{where}\n    {(exc.text or '').strip()}\nSyntaxError: {exc.msg}"
        frames = traceback.extract_tb(exc.__traceback__)
        mine = [f for f in frames if Path(f.filename).resolve() == self.path.resolve()]
        lines = [f'  File "{Path(f.filename).name}", line {f.lineno}, in {f.name}\n    {f.line}'
                 for f in (mine or frames[-3:])]
        message = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
        lines.append(f"{type(exc).__name__}: {message}")
        if isinstance(exc, RuntimeError) and ("size of tensor" in message or "shape" in message):
            lines.append("hint: K ≠ V in every drawn case, so a tensor on the wrong axis cannot "
                         "broadcast; compare the sizes in the case line with the shapes in the docstring")
        return "\n".join(lines)


@dataclass(frozen=True)
class Out:
    """One output to compare: its name and its axes (``"N HV V"``), which label a failing index."""

    name: str
    axes: str


def _index(idx: Sequence[int], axes: str) -> str:
    names = axes.split()
    if len(names) != len(idx):
        return ", ".join(str(i) for i in idx)
    return ", ".join(f"{a.lower()}={i}" for a, i in zip(names, idx))


def _num(x: float) -> str:
    return f"{x:.6g}"


@dataclass
class Case:
    """One seeded draw of a property: a generator, and a label that records every size and range drawn."""

    run: Run
    index: int
    count: int
    gen: torch.Generator
    parts: list[str] = field(default_factory=list)

    # ---- drawing -------------------------------------------------------------------------------
    def size(self, name: str, low: int, high: int, *, avoid: Sequence[int] = ()) -> int:
        """An integer in [low, high], not in ``avoid`` (K ≠ V: a mixed-up axis then shows as a shape error)."""
        choices = [n for n in range(low, high + 1) if n not in avoid]
        value = choices[int(torch.randint(len(choices), (1,), generator=self.gen))]
        self.parts.append(f"{name}={value}")
        return value

    def fixed(self, name: str, value: Any) -> Any:
        self.parts.append(f"{name}={value}")
        return value

    def note(self, text: str) -> None:
        self.parts.append(text)

    def normal(self, *shape: int, dtype: torch.dtype = F64) -> Tensor:
        return torch.randn(*shape, generator=self.gen, dtype=F64).to(dtype)

    def uniform(self, low: float, high: float, *shape: int, dtype: torch.dtype = F64) -> Tensor:
        return (low + (high - low) * torch.rand(*shape, generator=self.gen, dtype=F64)).to(dtype)

    def unit(self, *shape: int, dtype: torch.dtype = F64) -> Tensor:
        """Normal draws scaled to unit norm along the last axis (the keys of the project's tests)."""
        return torch.nn.functional.normalize(self.normal(*shape), dim=-1).to(dtype)

    def log_decay(self, g_min: float, *shape: int, dtype: torch.dtype = F64) -> Tensor:
        """g in [g_min, 0): the log-decay, α = exp(g) in [exp(g_min), 1)."""
        self.parts.append(f"g in [{g_min:g}, 0]")
        return (g_min * torch.rand(*shape, generator=self.gen, dtype=F64).clamp_min(1e-3)).to(dtype)

    def gate(self, name: str, high: float, *shape: int, dtype: torch.dtype = F64) -> Tensor:
        self.parts.append(f"{name} in [0, {high:g}]")
        return self.uniform(0.0, high, *shape, dtype=dtype)

    @property
    def label(self) -> str:
        what = ", ".join(self.parts) if self.parts else "no drawn sizes"
        return f"case {self.index + 1} of {self.count}: {what} (seed {self.run.seed})"

    # ---- calling the student -------------------------------------------------------------------
    def call(self, name: str, *args: Any, clone: bool = True, via: Callable | None = None) -> Any:
        """The student's ``name(*args)``, or ``via(name's object, *args)`` for a kernel and its launcher;
        tensors are passed as copies unless ``clone`` is false."""
        fn = self.run.student.function(name)
        if clone:
            args = tuple(a.clone() if isinstance(a, Tensor) else a for a in args)
        try:
            return fn(*args) if via is None else via(fn, *args)
        except Rejected as exc:
            raise Mismatch(self.label, str(exc), exc.diagnosis) from None
        except Exception as exc:  # the student's code may raise anything; it is reported, never re-raised
            cause = _cause(exc)
            if isinstance(cause, NotImplementedError):
                raise NotAttempted(f"{name} raises NotImplementedError") from None
            raise StudentError(f"{name} raised {type(cause).__name__} in {self.label}",
                               self.run.student.short_traceback(exc)) from None

    # ---- comparing -----------------------------------------------------------------------------
    def fail(self, detail: str, diagnosis: Diagnosis | None = None) -> Mismatch:
        return Mismatch(self.label, detail, diagnosis)

    def as_tuple(self, got: Any, outs: Sequence[Out], what: str) -> tuple[Tensor, ...]:
        """``got`` as one tensor per output, or a Mismatch that says what came back instead."""
        names = ", ".join(o.name for o in outs)
        if len(outs) == 1:
            got = (got,)
        elif not isinstance(got, (tuple, list)) or len(got) != len(outs):
            kind = f"a {type(got).__name__} of length {len(got)}" if isinstance(got, (tuple, list)) else \
                type(got).__name__
            raise self.fail(f"{what} returned {kind}; expected the tuple ({names})")
        for out, x in zip(outs, got):
            if not isinstance(x, Tensor):
                raise self.fail(f"{out.name} is a {type(x).__name__}, expected a tensor [{out.axes}]")
        return tuple(got)

    def expect(
        self,
        got: Any,
        expected: Tensor | Sequence[Tensor],
        outs: Sequence[Out],
        tol: float,
        *,
        what: str,
        mistakes: Sequence[Mistake] = (),
        args: Sequence[Any] = (),
        dtype: torch.dtype | None = F64,
    ) -> None:
        """Every output close to the reference, or a Mismatch naming the first bad element.

        ``mistakes`` are evaluated on ``args`` only after a failure, to name the mistake."""
        expected = (expected,) if isinstance(expected, Tensor) else tuple(expected)
        got = self.as_tuple(got, outs, what)
        for out, x, e in zip(outs, got, expected):
            if tuple(x.shape) != tuple(e.shape):
                raise self.fail(f"{out.name} has shape {list(x.shape)}, expected {list(e.shape)} [{out.axes}]")
            if dtype is not None and x.dtype != dtype:
                raise self.fail(
                    f"{out.name} is {str(x.dtype).removeprefix('torch.')}, expected "
                    f"{str(dtype).removeprefix('torch.')} like the inputs",
                    Diagnosis("dtype", "A tensor you created has torch's default dtype: make new tensors "
                                       "with the inputs' dtype (torch.zeros_like, x.new_zeros, dtype=x.dtype)."))
        problems = [self._problem(out, x, e, tol) for out, x, e in zip(outs, got, expected)]
        problems = [p for p in problems if p]
        if problems:
            raise self.fail("\n".join(problems), self._diagnose(got, outs, tol, mistakes, args))

    def _problem(self, out: Out, got: Tensor, expected: Tensor, tol: float) -> str | None:
        g, e = got.detach().to(F64), expected.detach().to(F64)
        bad_finite = ~torch.isfinite(g) & torch.isfinite(e)
        if bad_finite.any():
            idx = tuple(int(i) for i in bad_finite.nonzero()[0])
            return (f"{out.name} has {int(bad_finite.sum())} non-finite values\n"
                    f"  the first is {out.name}[{_index(idx, out.axes)}] = {_num(g[idx].item())}, "
                    f"expected {_num(e[idx].item())}")
        err = rel_rms(g, e)
        if not err <= tol:
            scale = e.pow(2).mean().sqrt().item()
            over = ((g - e).abs() > tol * scale).nonzero()
            idx = tuple(int(i) for i in over[0])
            return (f"{out.name}: relative RMS error {err:.2e} > tolerance {tol:.0e}\n"
                    f"  first mismatch {out.name}[{_index(idx, out.axes)}]: got {_num(g[idx].item())}, "
                    f"expected {_num(e[idx].item())}")
        return None

    def _diagnose(self, got, outs, tol, mistakes, args) -> Diagnosis | None:
        for mistake in mistakes:
            try:
                wrong = mistake.wrong(*args)
            except Exception:  # a mistake that cannot be evaluated on these inputs names nothing
                continue
            wrong = (wrong,) if isinstance(wrong, Tensor) else tuple(wrong)
            if all(x.shape == w.shape and bool(torch.isfinite(w).all() == torch.isfinite(x).all())
                   and rel_rms(torch.nan_to_num(x.detach()), torch.nan_to_num(w)) <= max(tol, 1e-6)
                   for x, w in zip(got, wrong)):
                return mistake.diagnosis
        return None


@dataclass
class Run:
    """One property's run on one student: the seed it draws from."""

    student: Student
    seed: int
    stream: int       # distinct per (exercise, property), so two properties never share a draw

    def cases(self, count: int) -> Iterator[Case]:
        for i in range(count):
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.stream * 1_009 + i)
            yield Case(self, i, count, gen)


def local_cumsum(g: torch.Tensor) -> torch.Tensor:
    """The reference's G = cumsum(g) inside each chunk, in g's dtype (the reference sums in float64)."""
    from gdn2.ops.chunk import chunk_local_cumsum

    return chunk_local_cumsum(g).to(g.dtype)
