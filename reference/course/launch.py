"""The launchers of the two Triton exercises: the grader runs the student's kernel through them, and so
can the student (with ``TRITON_INTERPRET=1`` on a machine without a GPU).

Every buffer is a view at the start of a larger allocation whose tail, the guard, is NaN: a load past
the end of an input reads NaN instead of a neighbour's data, and a store past the end of an output
changes the guard, which the launcher reports (:class:`gdn2.course.framework.Rejected`). Outputs
start as NaN, so an element the kernel never writes stays NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .framework import Diagnosis, Rejected

__all__ = ["block", "decode_step", "intra_blocks", "off_diagonal_blocks", "BC"]

#: elements of NaN after every buffer: more than any block of a kernel here can reach past the end
GUARD = 8192
#: the rows (and columns) of one intra block
BC = 16

STORE_PAST_END = Diagnosis(
    "store-without-mask", "Your kernel wrote past the end of an output: the block is wider than the data "
    "(BK ≥ K, BV ≥ V), so every tl.store needs the mask of its valid lanes (o_k < K, o_v < V).")
STORE_OUTSIDE = Diagnosis(
    "store-outside-block", "Your kernel wrote outside its 16×16 block: each launch owns rows "
    "16·i_blk … 16·i_blk + 15 and columns 16·j_blk … 16·j_blk + 15 of T, nothing else.")


def block(n: int) -> int:
    """The block size for an axis of n elements: a power of two, at least 16 (tl.dot's smallest)."""
    return max(16, 1 << (n - 1).bit_length())


class _Guarded:
    """A contiguous float32 tensor at the start of a NaN-filled allocation, with GUARD spare elements."""

    def __init__(self, shape: tuple[int, ...], fill: Tensor | None = None):
        numel = 1
        for s in shape:
            numel *= s
        self.full = torch.full((numel + GUARD,), float("nan"), dtype=torch.float32)
        self.tensor = self.full[:numel].view(shape)
        if fill is not None:
            self.tensor.copy_(fill)

    def check(self, name: str) -> None:
        spill = ~torch.isnan(self.full[self.tensor.numel():])
        if spill.any():
            first = int(spill.nonzero()[0])
            raise Rejected(f"the kernel wrote past the end of {name}: element {first} after its last one "
                           f"is {self.full[self.tensor.numel() + first].item():.6g}", STORE_PAST_END)


def decode_step(kernel, S: Tensor, q: Tensor, k: Tensor, v: Tensor, g: Tensor, b: Tensor, w: Tensor,
                scale: float) -> tuple[Tensor, Tensor]:
    """Run ``kernel`` (exercise 11) on one token: grid (N·HV,), one program per sequence and value head.

    Shapes: S [N, HV, K, V]; q, k, g, b [N, H, K]; v, w [N, HV, V]; every tensor float32. Returns
    (o [N, HV, V], S_out [N, HV, K, V]).
    """
    N, HV, K, V = S.shape
    H = q.shape[1]
    inputs = [_Guarded(tuple(x.shape), x.float()) for x in (S, q, k, v, g, b, w)]
    o, S_out = _Guarded((N, HV, V)), _Guarded((N, HV, K, V))
    kernel[(N * HV,)](*(x.tensor for x in inputs), o.tensor, S_out.tensor, float(scale),
                      H, HV, K, V, block(K), block(V))
    o.check("o")
    S_out.check("S_out")
    return o.tensor, S_out.tensor


def off_diagonal_blocks(C: int) -> Tensor:
    """[C, C] bool: the entries of the blocks (i, j) with i > j, the ones exercise 12 computes."""
    idx = torch.arange(C) // BC
    return idx[:, None] > idx[None, :]


def intra_blocks(kernel, k: Tensor, b: Tensor, G: Tensor) -> Tensor:
    """Run ``kernel`` (exercise 12) once per block pair i > j of every chunk: grid (M,) per launch.

    Shapes: k, b, G [M, C, K] float32 with C a multiple of 16. Returns T [M, C, C] with the blocks
    below the diagonal filled; the blocks on and above it stay NaN (the diagonal blocks are another
    kernel's work, and T is 0 above them).
    """
    M, C, K = k.shape
    inputs = [_Guarded(tuple(x.shape), x.float()) for x in (k, b, G)]
    T = _Guarded((M, C, C))
    for i in range(C // BC):
        for j in range(i):
            kernel[(M,)](*(x.tensor for x in inputs), T.tensor, i, j, C, K, block(K))
    T.check("T")
    written = ~torch.isnan(T.tensor) & ~off_diagonal_blocks(C)
    if written.any():
        m, r, s = (int(i) for i in written.nonzero()[0])
        raise Rejected(f"the kernel wrote T[m={m}, r={r}, s={s}], which is in no block below the diagonal",
                       STORE_OUTSIDE)
    return T.tensor
