"""The pytest form of the grader: ``python -m pytest DIR`` runs one test per exercise on the folder that
``gdn2 course start DIR`` made, whose ``test_course.py`` (:data:`ENTRY`) imports :func:`test_exercise`.

A failing or erroneous exercise fails its test with the grader's explanation; an exercise not
attempted is skipped. ``GDN2_COURSE_SEED`` picks the seed (0 by default), as ``--seed`` does.
"""

import os
from pathlib import Path

import pytest

from .exercises import EXERCISES
from .grader import format_exercise, grade_exercise

__all__ = ["ENTRY", "test_exercise"]

#: the text of DIR/test_course.py
ENTRY = '''"""Grade this folder with pytest: python -m pytest DIR (the same checks as gdn2 course grade DIR).

One test per exercise; a test is skipped while its exercise is not attempted. GDN2_COURSE_SEED=N
draws other cases.
"""

from gdn2.course.pytest_entry import test_exercise  # noqa: F401
'''


@pytest.mark.parametrize("exercise", [pytest.param(e, id=e.slug) for e in EXERCISES])
def test_exercise(exercise, request):
    folder = Path(request.node.path).parent
    result = grade_exercise(exercise, folder / exercise.filename, int(os.environ.get("GDN2_COURSE_SEED", "0")))
    if result.status == "not attempted":
        pytest.skip("not attempted")
    if result.status != "passed":
        pytest.fail(format_exercise(result, str(folder)), pytrace=False)
