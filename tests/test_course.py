"""The coursework (``gdn2.course``, docs/course/): every solution passes its grader, every starter grades as
"not attempted", every typical wrong answer of tests/course_mutants/ is rejected with its own
diagnosis, a student's exception is reported (never a crash), and a newcomer's first loop through
the command line works: start, a wrong exercise 1, the diagnosis, the fix, a pass.
"""

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gdn2.course import EXERCISES, SOLUTIONS, STARTERS
from gdn2.course.grader import format_report, grade_exercise

ROOT = Path(__file__).resolve().parents[1]
MUTANTS = sorted((ROOT / "tests" / "course_mutants").glob("ex*.py"))
BY_NUMBER = {e.number: e for e in EXERCISES}
EXERCISE_IDS = [pytest.param(e, id=e.slug) for e in EXERCISES]


def _diagnosis(path: Path) -> str:
    """The diagnosis a mutant must get: its module's DIAGNOSIS = "..."."""
    return re.search(r'^DIAGNOSIS = "([\w-]+)"$', path.read_text(encoding="utf-8"), flags=re.M).group(1)


@pytest.mark.parametrize("exercise", EXERCISE_IDS)
def test_solution_passes(exercise):
    result = grade_exercise(exercise, SOLUTIONS / exercise.filename)
    assert result.status == "passed", format_report([result])


@pytest.mark.parametrize("exercise", EXERCISE_IDS)
def test_starter_is_not_attempted(exercise):
    result = grade_exercise(exercise, STARTERS / exercise.filename)
    assert [p.status for p in result.properties] == ["not attempted"] * len(exercise.properties), \
        format_report([result])


@pytest.mark.parametrize("path", [pytest.param(p, id=p.stem) for p in MUTANTS])
def test_mutant_is_rejected_with_its_diagnosis(path):
    result = grade_exercise(BY_NUMBER[int(path.name[2:4])], path)
    assert result.status == "failed", format_report([result])
    assert _diagnosis(path) in result.diagnoses, format_report([result])


def test_every_exercise_has_a_mutant_and_its_files():
    assert len(EXERCISES) >= 12
    assert [e.number for e in EXERCISES] == list(range(1, len(EXERCISES) + 1))
    assert {int(p.name[2:4]) for p in MUTANTS} == set(BY_NUMBER)
    for e in EXERCISES:
        for folder, must_raise in ((STARTERS, True), (SOLUTIONS, False)):
            tree = ast.parse((folder / e.filename).read_text(encoding="utf-8"))
            defined = {f.name: f for f in tree.body if isinstance(f, ast.FunctionDef)}
            assert set(e.functions) <= set(defined), (folder.name, e.filename)
            for name in e.functions:
                last = defined[name].body[-1]
                raises = isinstance(last, ast.Raise) and ast.unparse(last.exc) == "NotImplementedError"
                assert raises == must_raise, (folder.name, e.filename, name)


def test_a_student_exception_is_an_error_with_a_short_traceback(tmp_path):
    student = tmp_path / "ex01_step.py"
    student.write_text("def step(S, q, k, v, g, b, w, scale):\n    return 1 / 0\n", encoding="utf-8")
    result = grade_exercise(BY_NUMBER[1], student)
    assert result.status == "error"
    detail = result.properties[0].detail
    assert 'File "ex01_step.py", line 2, in step' in detail and "ZeroDivisionError" in detail
    assert "case 1 of" in detail and "seed 0" in detail
    student.write_text("def step(:\n", encoding="utf-8")
    result = grade_exercise(BY_NUMBER[1], student)
    assert result.status == "error" and "SyntaxError" in result.properties[0].detail


def test_an_exercise_done_in_part_is_partial(tmp_path):
    starter = (STARTERS / "ex02_special_cases.py").read_text(encoding="utf-8")
    solution = (SOLUTIONS / "ex02_special_cases.py").read_text(encoding="utf-8")
    kda = re.search(r"\ndef kda_gates.*?\n(?=\n\ndef )", solution, flags=re.S).group(0)
    done = re.sub(r"\ndef kda_gates.*?\n(?=\n\ndef )", lambda _: kda, starter, count=1, flags=re.S)
    (tmp_path / "ex02_special_cases.py").write_text(done, encoding="utf-8")
    result = grade_exercise(BY_NUMBER[2], tmp_path / "ex02_special_cases.py")
    assert [p.status for p in result.properties] == ["passed", "not attempted", "not attempted"]
    assert result.status == "partial"


def test_a_kernel_that_ends_the_process_is_an_error(tmp_path):
    """The interpreter dereferences raw pointers: a wild one ends the child process that grades, not the grader."""
    kernel = (SOLUTIONS / "ex11_triton_step.py").read_text(encoding="utf-8")
    wild = kernel.replace("tl.load(q + p_key,", "tl.load(q + p_key * 1_000_000_000,")
    assert wild != kernel
    (tmp_path / "ex11_triton_step.py").write_text(wild, encoding="utf-8")
    result = grade_exercise(BY_NUMBER[11], tmp_path / "ex11_triton_step.py")
    assert result.status == "error"
    assert all("the kernel ended the process with SIG" in p.detail for p in result.properties), result.properties


def test_the_seed_is_printed_and_draws_other_cases():
    mutant = ROOT / "tests" / "course_mutants" / "ex01_decay_after_write.py"
    cases = [grade_exercise(BY_NUMBER[1], mutant, seed=seed).properties[0].case for seed in (0, 7)]
    assert cases[0].endswith("(seed 0)") and cases[1].endswith("(seed 7)")
    assert cases[0].removesuffix("(seed 0)") != cases[1].removesuffix("(seed 7)")


# ---- the newcomer's loop, through the command line ----------------------------------------------------
WRONG_STEP = '''import torch


def step(S, q, k, v, g, b, w, scale):
    r = torch.einsum("nhkv,nhk->nhv", S, b * k)
    S_new = torch.exp(g)[..., :, None] * (S + k[..., :, None] * (w * v - r)[..., None, :])
    return torch.einsum("nhkv,nhk->nhv", S_new, scale * q), S_new
'''
RIGHT_STEP = '''import torch


def step(S, q, k, v, g, b, w, scale):
    S_bar = torch.exp(g)[..., :, None] * S
    r = torch.einsum("nhkv,nhk->nhv", S_bar, b * k)
    S_new = S_bar + k[..., :, None] * (w * v - r)[..., None, :]
    return torch.einsum("nhkv,nhk->nhv", S_new, scale * q), S_new
'''


def _gdn2(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("gdn2")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gdn2"]
    return subprocess.run([*command, *args], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})


def test_newcomer_starts_fails_reads_the_diagnosis_fixes_and_passes(tmp_path):
    folder = tmp_path / "my-course"
    start = _gdn2("course", "start", str(folder), cwd=tmp_path)
    assert start.returncode == 0, start.stderr
    assert sorted(p.name for p in folder.iterdir()) == sorted([e.filename for e in EXERCISES] + ["test_course.py"])
    assert (folder / "ex01_step.py").read_text(encoding="utf-8") == (STARTERS / "ex01_step.py").read_text("utf-8")

    untouched = _gdn2("course", "grade", str(folder), "--json", cwd=tmp_path)
    assert untouched.returncode == 1, untouched.stderr
    report = json.loads(untouched.stdout)
    assert [e["status"] for e in report["exercises"]] == ["not attempted"] * len(EXERCISES)
    assert report["score"] == {"passed": 0, "total": sum(len(e.properties) for e in EXERCISES),
                               "exercises_passed": 0, "exercises": len(EXERCISES)}

    (folder / "ex01_step.py").write_text(WRONG_STEP, encoding="utf-8")
    wrong = _gdn2("course", "grade", str(folder), "1", cwd=tmp_path)
    assert wrong.returncode == 1, wrong.stderr
    for needed in ("property 'one step matches the reference' FAILED", "(seed 0)", "first mismatch S_new[n=",
                   "diagnosis (decay-after-write)", "Decay first", f"reproduce: gdn2 course grade {folder} 1 --seed 0",
                   "score: 1/3 properties"):
        assert needed in wrong.stdout, wrong.stdout

    page = (ROOT / "docs" / "course" / "index.md").read_text(encoding="utf-8")
    shown = re.search(r'```text title="gdn2 course grade DIR 1"\n(.*?)```', page, flags=re.S).group(1)
    for line in shown.replace("DIR", str(folder)).splitlines():
        assert line in wrong.stdout.splitlines(), f"docs/course/index.md shows a line the grader does not print: {line}"

    (folder / "ex01_step.py").write_text(RIGHT_STEP, encoding="utf-8")
    right = _gdn2("course", "grade", str(folder), "1", cwd=tmp_path)
    assert right.returncode == 0, right.stdout + right.stderr
    assert "passed" in right.stdout and "score: 3/3 properties, 1/1 exercises passed" in right.stdout

    again = _gdn2("course", "start", str(folder), cwd=tmp_path)
    assert "kept" in again.stdout and (folder / "ex01_step.py").read_text(encoding="utf-8") == RIGHT_STEP

    pytest_run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert f"1 passed, {len(EXERCISES) - 1} skipped" in pytest_run.stdout, pytest_run.stdout[-3000:]


# ---- the pages --------------------------------------------------------------------------------------
def test_every_exercise_has_a_page_in_the_coursework_section():
    yaml = pytest.importorskip("yaml")
    nav = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))["nav"]
    (section,) = [block["Coursework"] for block in nav if isinstance(block, dict) and "Coursework" in block]
    listed = {next(iter(item.values())) if isinstance(item, dict) else item for item in section}
    index = (ROOT / "docs" / "course" / "index.md").read_text(encoding="utf-8")
    assert {"course/index.md", "course/instructor.md", "course/projects.md"} <= listed
    for e in EXERCISES:
        page = f"course/{e.slug.replace('_', '-')}.md"
        assert page in listed, page
        text = (ROOT / "docs" / page).read_text(encoding="utf-8")
        assert f'--8<-- "reference/course/starters/{e.filename}"' in text, page
        assert '??? tip "Hint 1"' in text and "$$" in text and "](../" in text, page
        assert f"gdn2 course grade DIR {e.number}" in text, page
        stars = "★" * e.difficulty + "☆" * (3 - e.difficulty)
        assert f"**Difficulty** {stars} · **time** about {e.minutes} minutes" in text, page
        assert f"| {e.number} | [{e.title}]({page.removeprefix('course/')}) | {stars} | {e.minutes} min |" in index
        for prop in e.properties:
            assert f"`{prop.name}`" in text, (page, prop.name)
