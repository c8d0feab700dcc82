"""Exercise 2, a typical wrong answer: Gated DeltaNet's decay α passed as g, where g is its logarithm."""

from gdn2.course.solutions.ex02_special_cases import erase_free_output, kda_gates  # noqa: F401

DIAGNOSIS = "alpha-not-log"


def gated_deltanet_gates(alpha, beta, K, V):
    b, w = kda_gates(beta, K, V)
    return alpha[..., None].expand(*alpha.shape, K), b, w
