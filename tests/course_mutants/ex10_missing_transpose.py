"""Exercise 10, a typical wrong answer: A where Aᵀ belongs in every gradient through the inverse."""

import torch

DIAGNOSIS = "missing-transpose"


def wy_backward(T, k, b, G, v, w, dY, dU):
    eye = torch.eye(T.shape[-1], dtype=T.dtype).expand(T.shape)
    A = torch.linalg.solve_triangular(eye + T, eye, upper=False, unitriangular=True)
    gamma = torch.exp(G)
    E, Z = gamma * b * k, w * v
    dA = dU @ Z.transpose(-1, -2) + dY @ E.transpose(-1, -2)
    dT = -(A @ dA @ A).tril(-1)
    dZ, dE = A @ dU, A @ dY
    return dT, dE * gamma * b, dE * gamma * k, dE * E, dZ * w, dZ * v
