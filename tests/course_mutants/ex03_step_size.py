"""Exercise 3, a typical wrong answer: one gradient step of size 1, which overshoots to 2S_t − S̄."""

import torch

from gdn2.course.solutions.ex03_fast_weight import fast_weight_loss

DIAGNOSIS = "step-size"


def minimise(S_prev, k, v, g, b, w):
    S = (torch.exp(g)[..., None] * S_prev).requires_grad_()
    (grad,) = torch.autograd.grad(fast_weight_loss(S, S_prev, k, v, g, b, w).sum(), S)
    return (S - grad).detach()
