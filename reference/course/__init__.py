"""gdn2.course: a graded course from the token-by-token recurrence to a Triton kernel.

``gdn2 course start DIR`` copies the starter files into DIR; ``gdn2 course grade DIR [N ...]`` runs
each exercise's properties against the float64 reference and explains every failure. The pages are
in the documentation's "Coursework" section.
"""

from importlib.resources import files
from pathlib import Path

from .exercises import EXERCISES

__all__ = ["EXERCISES", "STARTERS", "SOLUTIONS"]

#: the folders of the starter files (copied by ``gdn2 course start``) and of the solutions (never copied)
STARTERS = Path(str(files(__name__) / "starters"))
SOLUTIONS = Path(str(files(__name__) / "solutions"))
