"""Exercise 4, a typical wrong answer: the transition with the decay as the left factor, Diag(α)(I − k eᵀ)."""

import torch

from gdn2.course.solutions.ex04_stability import erase_eigenvalue  # noqa: F401

DIAGNOSIS = "decay-after-erase"


def transition(k, g, b):
    eye = torch.eye(k.shape[-1], dtype=k.dtype)
    return torch.exp(g)[..., :, None] * (eye - k[..., :, None] * (b * k)[..., None, :])


def transition_norm(k, g, b):
    return torch.linalg.matrix_norm(transition(k, g, b), ord=2)
