"""The course in order: one exercise per module of ``gdn2.course.checks``."""

from .checks import (
    ex01_step,
    ex02_special_cases,
    ex03_fast_weight,
    ex04_stability,
    ex05_decay,
    ex06_intra,
    ex07_wy,
    ex08_chunk,
    ex09_varlen,
    ex10_backward,
    ex11_triton_step,
    ex12_triton_intra,
)

__all__ = ["EXERCISES"]

EXERCISES = tuple(m.EXERCISE for m in (
    ex01_step, ex02_special_cases, ex03_fast_weight, ex04_stability, ex05_decay, ex06_intra, ex07_wy, ex08_chunk,
    ex09_varlen, ex10_backward, ex11_triton_step, ex12_triton_intra,
))
