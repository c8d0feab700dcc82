"""Exercise 5, a typical wrong answer: the cumulative decay summed across chunks instead of restarting."""

from gdn2.course.solutions.ex05_decay import pairwise_decay  # noqa: F401

DIAGNOSIS = "global-cumsum"


def local_cumsum(g):
    return g.flatten(-3, -2).cumsum(-2).view(g.shape)
