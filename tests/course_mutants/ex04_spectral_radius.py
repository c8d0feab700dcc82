"""Exercise 4, a typical wrong answer: the largest |eigenvalue| taken for the norm of a non-symmetric matrix."""

import torch

from gdn2.course.solutions.ex04_stability import erase_eigenvalue, transition  # noqa: F401

DIAGNOSIS = "spectral-radius"


def transition_norm(k, g, b):
    return torch.linalg.eigvals(transition(k, g, b)).abs().amax(-1)
