"""Several linear projections of one input, with one gradient buffer for that input.

Autograd differentiates ``F.linear(x, W_i)`` for each i on its own and then adds the n input gradients
with n − 1 elementwise passes, each reading two [tokens, D] tensors and writing one. Here the
backward writes the first product ``dY_0 W_0`` and accumulates every other into it with
``addmm_`` (β = 1): the GEMMs add as they write, and no elementwise pass remains. Each output stays
its own contiguous tensor, so the kernels that read them need no copy.

The products run in the dtype autocast chooses (or the input's): the cast input and weights are what
the backward uses, as ``F.linear`` under autocast would; gradients return in each argument's dtype.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["shared_input_linear"]


class SharedInputLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
        device = x.device.type
        dt = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        xc = x.to(dt)
        wc = [w.to(dt) for w in weights]
        ctx.save_for_backward(xc, *wc)
        ctx.set_materialize_grads(False)      # an unused output's gradient arrives as None, not zeros
        ctx.dtypes = (x.dtype, *(w.dtype for w in weights))
        with torch.autocast(device, enabled=False):
            return tuple(F.linear(xc, w) for w in wc)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        xc, *wc = ctx.saved_tensors
        x2 = xc.reshape(-1, xc.shape[-1])
        dx = None
        dws: list[Tensor | None] = []
        for i, (w, dy) in enumerate(zip(wc, grads)):
            if dy is None:
                dws.append(None)
                continue
            dy2 = dy.to(w.dtype).reshape(-1, w.shape[0])
            if ctx.needs_input_grad[0]:
                if dx is None:
                    dx = dy2 @ w                                   # [tokens, D]
                else:
                    dx.addmm_(dy2, w)                              # accumulated by the GEMM, no add pass
            dws.append((dy2.t() @ x2).to(ctx.dtypes[1 + i]) if ctx.needs_input_grad[1 + i] else None)
        if dx is not None:
            dx = dx.reshape(xc.shape).to(ctx.dtypes[0])
        return (dx, *dws)


def shared_input_linear(x: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
    """``tuple(F.linear(x, w) for w in weights)`` (no biases), with one gradient buffer for ``x``."""
    return SharedInputLinear.apply(x, *weights)
