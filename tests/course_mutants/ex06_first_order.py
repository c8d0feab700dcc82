"""Exercise 6, a typical wrong answer: (I + T)⁻¹ taken as I − T, the first term of its series."""

import torch

from gdn2.course.solutions.ex06_intra import intra_t  # noqa: F401

DIAGNOSIS = "first-order-inverse"


def solve_unit_lower(T):
    return torch.eye(T.shape[-1], dtype=T.dtype) - T
