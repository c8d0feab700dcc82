"""Grade a student's folder: every property of every exercise, a report that explains each failure, a
score table, and a JSON form of the same for a learning-management system.

A property ends in one of four states: passed; failed (the result differs from the reference: the
case, the first mismatching element and a diagnosis are reported); error (the student's code
raised: a short traceback of the student's own frames); not attempted (the function still raises
NotImplementedError). An exercise is passed when all its properties are, partial when the others are
not attempted. No student code can crash the grader: whatever it raises is reported, and a Triton
kernel runs in a child process, whose end by a wild pointer is reported too.
"""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import json
import linecache
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
import traceback
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .exercises import EXERCISES
from .framework import Exercise, Mismatch, NotAttempted, Run, Student, StudentError

__all__ = ["PropertyResult", "ExerciseResult", "grade_exercise", "grade_folder", "format_report", "as_json"]

#: seconds a Triton exercise may take to grade (the interpreter runs the kernels on the CPU)
KERNEL_TIMEOUT = 300
_modules = itertools.count()


@dataclass
class PropertyResult:
    name: str
    status: str
    case: str = ""            # the failing case: sizes, ranges, seed
    detail: str = ""          # what differs, or the traceback
    diagnosis: str = ""       # the diagnosis id ("decay-after-write"), empty when passed
    explanation: str = ""     # the diagnosis in words


@dataclass
class ExerciseResult:
    number: int
    slug: str
    title: str
    seed: int
    seconds: float
    properties: list[PropertyResult] = field(default_factory=list)

    @property
    def passed(self) -> int:
        return sum(p.status == "passed" for p in self.properties)

    @property
    def status(self) -> str:
        states = {p.status for p in self.properties}
        if states == {"passed"}:
            return "passed"
        if states == {"not attempted"}:
            return "not attempted"
        if states == {"passed", "not attempted"}:
            return "partial"
        return "error" if "error" in states else "failed"

    @property
    def diagnoses(self) -> list[str]:
        return [p.diagnosis for p in self.properties if p.diagnosis]


@contextlib.contextmanager
def _student(exercise: Exercise, path: Path) -> Iterator[Student]:
    """Load the student's file as a fresh module (its folder importable, so one exercise may import
    another); Triton exercises load and run with the interpreter on. Everything is restored after."""
    folder = str(path.parent.resolve())
    before = set(sys.modules)
    saved_env = os.environ.get("TRITON_INTERPRET")
    sys.path.insert(0, folder)
    if exercise.triton:
        os.environ["TRITON_INTERPRET"] = "1"  # read when @triton.jit runs, i.e. while the file loads
    name = f"_gdn2_course_{exercise.slug}_{next(_modules)}"
    try:
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        student = Student(module, path)
        linecache.checkcache(str(path))
        try:
            # compiled from the text each time: a byte-code cache could hold an older version of the file
            exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), module.__dict__)  # noqa: S102
        except Exception as exc:  # a syntax or import error in the student's file is an error, not a crash
            raise StudentError(f"loading {path.name} raised {type(exc).__name__}",
                               student.short_traceback(exc)) from None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)   # numpy's overflow warnings in the interpreter
            yield student
    finally:
        sys.path.remove(folder)
        if saved_env is None:
            os.environ.pop("TRITON_INTERPRET", None)
        else:
            os.environ["TRITON_INTERPRET"] = saved_env
        for added in set(sys.modules) - before:
            file = getattr(sys.modules[added], "__file__", None) or ""
            if added == name or file.startswith(folder + os.sep):
                del sys.modules[added]


def _grade_property(exercise: Exercise, index: int, student: Student, seed: int) -> PropertyResult:
    prop = exercise.properties[index]
    run = Run(student, seed, stream=exercise.number * 100 + index)
    try:
        prop.check(run)
    except NotAttempted as exc:
        return PropertyResult(prop.name, "not attempted", detail=str(exc))
    except StudentError as exc:
        return PropertyResult(prop.name, "error", detail=f"{exc.summary}\n{exc.trace}".strip())
    except Mismatch as exc:
        diagnosis = exc.diagnosis or prop.hint
        return PropertyResult(prop.name, "failed", exc.case, exc.detail, diagnosis.id, diagnosis.text)
    except Exception as exc:  # an output the checks could not even compare (e.g. a wrong type deep inside)
        trace = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        return PropertyResult(prop.name, "error", detail=f"checking the result raised: {trace[:500]}")
    return PropertyResult(prop.name, "passed")


def _grade_here(exercise: Exercise, path: Path, seed: int) -> ExerciseResult:
    start = time.perf_counter()
    result = ExerciseResult(exercise.number, exercise.slug, exercise.title, seed, 0.0)
    if not path.is_file():
        result.properties = [PropertyResult(p.name, "not attempted", detail=f"no file {path.name}")
                             for p in exercise.properties]
    else:
        try:
            with _student(exercise, path) as student:
                result.properties = [_grade_property(exercise, i, student, seed)
                                     for i in range(len(exercise.properties))]
        except StudentError as exc:
            result.properties = [PropertyResult(p.name, "error", detail=f"{exc.summary}\n{exc.trace}")
                                 for p in exercise.properties]
    result.seconds = time.perf_counter() - start
    return result


def _child(number: str, path: str, seed: str, out: str) -> None:
    """The child process of :func:`_grade_in_child`: grade, and write the result as JSON to ``out``."""
    exercise = next(e for e in EXERCISES if e.number == int(number))
    Path(out).write_text(json.dumps(asdict(_grade_here(exercise, Path(path), int(seed)))), encoding="utf-8")


def _grade_in_child(exercise: Exercise, path: Path, seed: int) -> ExerciseResult:
    """Grade in a child process. Triton's interpreter reads and writes raw memory, so a kernel's wild
    pointer ends the process that runs it; the child's end is then reported as an error."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gdn2-course-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-c", "import sys; from gdn2.course.grader import _child; _child(*sys.argv[1:])",
                   str(exercise.number), str(path), str(seed), str(out)]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=KERNEL_TIMEOUT)
        except subprocess.TimeoutExpired:
            why = f"grading did not finish in {KERNEL_TIMEOUT} s: does a loop of the kernel never end?"
        else:
            if proc.returncode == 0 and out.is_file():
                fields = json.loads(out.read_text(encoding="utf-8"))
                fields["properties"] = [PropertyResult(**p) for p in fields["properties"]]
                return ExerciseResult(**{**fields, "seconds": time.perf_counter() - start})
            if proc.returncode < 0:
                why = (f"the kernel ended the process with {signal.Signals(-proc.returncode).name}:\n"
                       "a load or store far outside its buffers (a wrong stride? a wrong program index?)")
            else:
                why = "grading ended without a result:\n" + "\n".join(proc.stderr.strip().splitlines()[-8:])
    return ExerciseResult(exercise.number, exercise.slug, exercise.title, seed, time.perf_counter() - start,
                          [PropertyResult(p.name, "error", detail=why) for p in exercise.properties])


def grade_exercise(exercise: Exercise, path: Path, seed: int = 0) -> ExerciseResult:
    """Grade one file against one exercise's properties (a Triton exercise in a child process)."""
    if exercise.triton and path.is_file():
        return _grade_in_child(exercise, path, seed)
    return _grade_here(exercise, path, seed)


def select(numbers: Sequence[int]) -> list[Exercise]:
    """The exercises with these numbers (all when empty); an unknown number is a ValueError."""
    known = {e.number: e for e in EXERCISES}
    unknown = [n for n in numbers if n not in known]
    if unknown:
        raise ValueError(f"no exercise {', '.join(map(str, unknown))}; the course has 1 to {len(EXERCISES)}")
    return [known[n] for n in sorted(set(numbers))] if numbers else list(EXERCISES)


def grade_folder(folder: Path, numbers: Sequence[int] = (), seed: int = 0) -> list[ExerciseResult]:
    """Grade the exercises ``numbers`` (all when empty) of a folder made by ``gdn2 course start``."""
    return [grade_exercise(e, folder / e.filename, seed) for e in select(numbers)]


# ---- the report ------------------------------------------------------------------------------------
#: the report's lines are wrapped to this width (code lines of a traceback are left as they are)
WIDTH = 100


def _wrap(text: str, prefix: str = "    ") -> str:
    """Each line of text indented by prefix and wrapped at WIDTH, continuation lines indented 2 more."""
    lines = []
    for line in text.splitlines():
        extra = prefix + line[: len(line) - len(line.lstrip())]
        lines += textwrap.wrap(line.strip(), WIDTH, initial_indent=extra, subsequent_indent=extra + "  ",
                               break_long_words=False, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def format_exercise(result: ExerciseResult, folder_hint: str = "DIR") -> str:
    """The explanation of one exercise's failed and erroneous properties (empty when none)."""
    lines, previous = [], ""
    for p in result.properties:
        if p.status == "error" and p.detail == previous:
            lines += [f"  property {p.name!r}: ERROR (as above)"]
        elif p.status == "failed":
            lines += [f"  property {p.name!r} FAILED", _wrap(p.case), _wrap(p.detail),
                      _wrap(f"diagnosis ({p.diagnosis}): {p.explanation}")]
        elif p.status == "error":
            lines += [f"  property {p.name!r}: ERROR", _indent(p.detail)]
        elif p.status == "not attempted" and result.status != "not attempted":
            lines += [f"  property {p.name!r}: not attempted ({p.detail})"]
        previous = p.detail
    if not lines:
        return ""
    head = f"── exercise {result.number}: {result.title} ({result.slug}.py): {result.status.upper()}"
    rerun = f"  reproduce: gdn2 course grade {folder_hint} {result.number} --seed {result.seed}"
    return "\n".join([head, *lines, rerun])


def format_table(results: Sequence[ExerciseResult]) -> str:
    width = max(len(r.title) for r in results)
    rows = [f"{'#':>3}  {'exercise':<{width}}  {'status':<13}  {'properties':>10}  {'time':>6}"]
    for r in results:
        rows.append(f"{r.number:>3}  {r.title:<{width}}  {r.status:<13}  "
                    f"{f'{r.passed}/{len(r.properties)}':>10}  {r.seconds:>5.1f}s")
    passed = sum(r.passed for r in results)
    total = sum(len(r.properties) for r in results)
    done = sum(r.status == "passed" for r in results)
    rows.append(f"score: {passed}/{total} properties, {done}/{len(results)} exercises passed")
    return "\n".join(rows)


def format_report(results: Sequence[ExerciseResult], folder_hint: str = "DIR") -> str:
    """Every failure explained, then the score table."""
    details = [text for r in results if (text := format_exercise(r, folder_hint))]
    return "\n\n".join([*details, format_table(results)])


def as_json(results: Sequence[ExerciseResult]) -> dict:
    """The report as one JSON object: per exercise its status, score and properties, and the total."""
    return {
        "score": {"passed": sum(r.passed for r in results), "total": sum(len(r.properties) for r in results),
                  "exercises_passed": sum(r.status == "passed" for r in results), "exercises": len(results)},
        "seed": results[0].seed if results else 0,
        "exercises": [{"number": r.number, "slug": r.slug, "title": r.title, "status": r.status,
                       "passed": r.passed, "total": len(r.properties), "seconds": round(r.seconds, 3),
                       "properties": [asdict(p) for p in r.properties]} for r in results],
    }
