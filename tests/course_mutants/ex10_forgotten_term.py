"""Exercise 10, a typical wrong answer: dA collects only the write side, dU Zᵀ, and forgets dY Ēᵀ."""

import torch

DIAGNOSIS = "forgotten-erase-term"


def wy_backward(T, k, b, G, v, w, dY, dU):
    eye = torch.eye(T.shape[-1], dtype=T.dtype).expand(T.shape)
    A = torch.linalg.solve_triangular(eye + T, eye, upper=False, unitriangular=True)
    At = A.transpose(-1, -2)
    gamma = torch.exp(G)
    E, Z = gamma * b * k, w * v
    dT = -(At @ (dU @ Z.transpose(-1, -2)) @ At).tril(-1)
    dZ, dE = At @ dU, At @ dY
    return dT, dE * gamma * b, dE * gamma * k, dE * E, dZ * w, dZ * v
