"""Several linear projections of one input, with one gradient buffer for that input.

Autograd differentiates ``F.linear(x, W_i)`` for each i on its own and then adds the n input gradients
with n − 1 elementwise passes, each reading two [tokens, D] tensors and writing one. Here the
backward writes the first product ``dY_0 W_0`` and accumulates every other into it with
``addmm_`` (β = 1): the GEMMs add as they write, and no elementwise pass remains. Each output stays
its own contiguous tensor, so the kernels that read them need no copy.

A group of weights (a tuple among the arguments) is one product with the group's weights stacked: x is
read once for all of them, and the group's outputs are column slices of that product (rows of
``stride(-2)`` = the group's width, columns contiguous). This is for narrow outputs, such as the
layer's two low-rank bottlenecks: a product of a few columns reads all of x for few FLOPs, so it is
bound by that read, and two of them read x twice. In the backward the group's gradients are joined
(one copy of the group's few columns) for one product into x's gradient and one for the stacked
weights' gradient, whose rows are each weight's.

The products run in the dtype autocast chooses (or the input's): the cast input and weights are what
the backward uses, as ``F.linear`` under autocast would; gradients return in each argument's dtype.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["shared_input_linear"]


class SharedInputLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, sizes: tuple[int, ...], x: Tensor, *weights: Tensor) -> tuple[Tensor, ...]:
        device = x.device.type
        dt = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype
        xc = x.to(dt)
        stacked = []
        at = 0
        for n in sizes:          # each group's weights stacked (a group of one is the weight itself)
            group = [w.to(dt) for w in weights[at:at + n]]
            stacked.append(group[0] if n == 1 else torch.cat(group))
            at += n
        ctx.save_for_backward(xc, *stacked)
        ctx.set_materialize_grads(False)      # an unused output's gradient arrives as None, not zeros
        ctx.dtypes = (x.dtype, *(w.dtype for w in weights))
        ctx.sizes = sizes
        ctx.rows = [w.shape[0] for w in weights]
        outs = []
        at = 0
        with torch.autocast(device, enabled=False):
            for n, w in zip(sizes, stacked):
                y = F.linear(xc, w)
                outs += [y] if n == 1 else y.split(ctx.rows[at:at + n], dim=-1)
                at += n
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor | None) -> tuple[Tensor | None, ...]:
        xc, *stacked = ctx.saved_tensors
        x2 = xc.reshape(-1, xc.shape[-1])
        dx = None
        dws: list[Tensor | None] = []
        at = 0
        for n, w in zip(ctx.sizes, stacked):
            group, rows = grads[at:at + n], ctx.rows[at:at + n]
            needs_w = ctx.needs_input_grad[2 + at:2 + at + n]
            at += n
            if all(g is None for g in group):
                dws += [None] * n
                continue
            parts = [(g if g is not None else xc.new_zeros(xc.shape[:-1] + (r,))).to(w.dtype).reshape(-1, r)
                     for g, r in zip(group, rows)]
            dy2 = parts[0] if n == 1 else torch.cat(parts, dim=1)        # [tokens, the group's rows]
            if ctx.needs_input_grad[1]:
                if dx is None:
                    dx = dy2 @ w                                   # [tokens, D]
                else:
                    dx.addmm_(dy2, w)                              # accumulated by the GEMM, no add pass
            # the group's weights' gradients: rows of one product, split
            pieces = (dy2.t() @ x2).split(rows) if any(needs_w) else [None] * n
            first = len(dws)
            dws += [p.to(ctx.dtypes[1 + first + j]) if need and g is not None else None
                    for j, (need, g, p) in enumerate(zip(needs_w, group, pieces))]
        if dx is not None:
            dx = dx.reshape(xc.shape).to(ctx.dtypes[0])
        return (None, dx, *dws)


def shared_input_linear(x: Tensor, *weights: Tensor | tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``tuple(F.linear(x, w) for w in weights)`` (no biases), with one gradient buffer for ``x``. An
    argument that is a tuple of weights is one product of x with them stacked, whose outputs (one per
    weight of the tuple, in order, among the others) are column slices of that product."""
    flat, sizes = [], []
    for w in weights:
        group = w if isinstance(w, tuple) else (w,)
        if not group:
            raise ValueError("shared_input_linear: a group of weights must hold at least one weight")
        flat += group
        sizes.append(len(group))
    return SharedInputLinear.apply(tuple(sizes), x, *flat)
