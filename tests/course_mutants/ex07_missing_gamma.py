"""Exercise 7, a typical wrong answer: Y without the decay γ = exp(G) on the erase side."""

DIAGNOSIS = "missing-gamma"


def wy(A, k, b, G, v, w):
    return A @ (b * k), A[:, :, None] @ (w * v)
