"""``gdn2 course``: the command line of the course.

    gdn2 course list                      the exercises in order, with their time and difficulty
    gdn2 course start DIR                 copy the starter files (and a pytest entry) into DIR
    gdn2 course grade DIR [N ...]         grade DIR's exercises (all, or N ...); --json for an LMS
    gdn2 course check-solutions [N ...]   grade the packaged solutions (instructors, CI)
"""

import argparse
import json
import sys
from pathlib import Path

__all__ = ["add_parser"]


def _list(args: argparse.Namespace) -> int:
    from .exercises import EXERCISES

    for e in EXERCISES:
        print(f"{e.number:>3}  {e.title:<44} {'★' * e.difficulty + '☆' * (3 - e.difficulty)}  "
              f"~{e.minutes:>3} min  {e.filename}")
    return 0


def _start(args: argparse.Namespace) -> int:
    from . import STARTERS
    from .exercises import EXERCISES
    from .pytest_entry import ENTRY

    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    files = {e.filename: (STARTERS / e.filename).read_text(encoding="utf-8") for e in EXERCISES}
    files["test_course.py"] = ENTRY
    written, kept = [], []
    for name, text in files.items():
        target = folder / name
        if target.exists() and not args.force:
            kept.append(name)
            continue
        target.write_text(text, encoding="utf-8")
        written.append(name)
    print(f"{folder}: {len(written)} files written" + (f", {len(kept)} kept (--force overwrites)" if kept else ""))
    print(f"next: edit {folder / EXERCISES[0].filename}, then run  gdn2 course grade {folder} 1")
    print(f"      (or  python -m pytest {folder}); the pages are the documentation's Coursework section")
    return 0


def _report(results, args: argparse.Namespace, folder_hint: str) -> int:
    from .grader import as_json, format_report

    if args.json:
        print(json.dumps(as_json(results), indent=2, ensure_ascii=False))
    else:
        print(format_report(results, folder_hint))
    return 0 if all(r.status == "passed" for r in results) else 1


def _grade(args: argparse.Namespace) -> int:
    from .grader import grade_folder

    folder = Path(args.dir)
    if not folder.is_dir():
        print(f"no folder {folder}; make it with  gdn2 course start {folder}", file=sys.stderr)
        return 2
    try:
        results = grade_folder(folder, args.numbers, args.seed)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return _report(results, args, args.dir)


def _check_solutions(args: argparse.Namespace) -> int:
    from . import SOLUTIONS
    from .grader import grade_folder

    try:
        results = grade_folder(SOLUTIONS, args.numbers, args.seed)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    return _report(results, args, "SOLUTIONS")


def add_parser(subparsers) -> None:
    """Register ``gdn2 course`` on the ``gdn2`` command's subparsers."""
    course = subparsers.add_parser("course", help="the graded course: start it, grade it")
    sub = course.add_subparsers(dest="course_command", required=True)

    sub.add_parser("list", help="the exercises in order").set_defaults(func=_list)

    s = sub.add_parser("start", help="copy the starter files into DIR (never the installed package)")
    s.add_argument("dir")
    s.add_argument("--force", action="store_true", help="overwrite files that already exist in DIR")
    s.set_defaults(func=_start)

    for name, func, helptext in (
        ("grade", _grade, "grade the exercises in DIR against the float64 reference"),
        ("check-solutions", _check_solutions, "grade the packaged solutions (every one must pass)"),
    ):
        g = sub.add_parser(name, help=helptext)
        if name == "grade":
            g.add_argument("dir")
        g.add_argument("numbers", nargs="*", type=int, metavar="N", help="exercise numbers (default: all)")
        g.add_argument("--seed", type=int, default=0, help="seed of the drawn cases (printed with every failure)")
        g.add_argument("--json", action="store_true", help="print the results as JSON (for an LMS)")
        g.set_defaults(func=func)
