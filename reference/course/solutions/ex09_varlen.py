"""Exercise 9, solution: packed sequences through the chunk form, without a leak across boundaries.

    for each n:  o[cu_n : cu_{n+1}], ht[n] = chunk form of sequence n from initial_state[n]

Each sequence is zero-padded to a multiple of the chunk size on its own, so no chunk holds tokens of
two sequences; a padded token has k = 0 and g = 0 and leaves the state as it is.
"""

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from gdn2.ops.chunk import chunk_forward


def packed_chunk_gdn2(
    q: Float[Tensor, "1 T H K"],
    k: Float[Tensor, "1 T H K"],
    v: Float[Tensor, "1 T HV V"],
    g: Float[Tensor, "1 T H K"],
    b: Float[Tensor, "1 T H K"],
    w: Float[Tensor, "1 T HV V"],
    scale: float,
    cu_seqlens: Integer[Tensor, " Np1"],
    initial_state: Float[Tensor, "N HV K V"],
    chunk_size: int,
) -> tuple[Float[Tensor, "1 T HV V"], Float[Tensor, "N HV K V"]]:
    """The chunk form of every packed sequence, each from its own initial state."""
    H, K, HV, V = q.shape[2], q.shape[3], v.shape[2], v.shape[3]
    C = chunk_size
    bounds = cu_seqlens.tolist()
    spans = list(zip(bounds[:-1], bounds[1:]))
    N, NC = len(spans), max(1, max(-(-(e - s) // C) for s, e in spans))

    def chunked(x: Tensor) -> Tensor:
        """[1, T, HX, D] -> [N, H, HX/H, NC, C, D], each sequence padded from its own start."""
        padded = x.new_zeros(N, NC * C, *x.shape[2:])
        for n, (s, e) in enumerate(spans):
            padded[n, : e - s] = x[0, s:e]
        return padded.view(N, NC, C, H, x.shape[2] // H, x.shape[3]).permute(0, 3, 4, 1, 2, 5)

    qc, kc, gc, bc = (chunked(x)[:, :, 0] for x in (q, k, g, b))              # [N, H, NC, C, K]
    vc, wc = chunked(v), chunked(w)                                            # [N, H, Gr, NC, C, V]
    o, ht, _ = chunk_forward(qc, kc, vc, gc, bc, wc, scale, initial_state.view(N, H, HV // H, K, V))
    flat = o.permute(0, 3, 4, 1, 2, 5).reshape(N, NC * C, HV, V)
    return torch.cat([flat[n, : e - s] for n, (s, e) in enumerate(spans)])[None], ht.reshape(N, HV, K, V)
