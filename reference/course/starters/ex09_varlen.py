"""Exercise 9: packed sequences. N sequences are concatenated along T (B = 1) at the offsets
cu_seqlens = [0, T_1, T_1 + T_2, …, T]; each starts from its own initial state, none sees another.

    for each n:  o[cu_n : cu_{n+1}], ht[n] = chunk form of sequence n from initial_state[n]

You may use the reference's five stages on the chunked layout,
``gdn2.ops.chunk.chunk_forward(q, k, v, g, b, w, scale, h0)`` (key side [N, H, NC, C, K], value
side [N, H, Gr, NC, C, V], h0 [N, H, Gr, K, V]; it returns (o, ht, intermediates)), or your own
stages of exercises 5 to 8. The work here is the layout.

Grade it with ``gdn2 course grade DIR 9``.
"""

import torch
from jaxtyping import Float, Integer
from torch import Tensor


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
    """Return (o, ht): the output of every token and the final state of every sequence.

    A sequence may be shorter than a chunk, or empty (its final state is then its initial state).
    """
    raise NotImplementedError
