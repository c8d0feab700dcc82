"""Exercise 5, solution: the local cumulative decay and the pairwise decay factors.

    G_r = Σ_{i≤r} g_i inside each chunk;   D_rsd = exp(G_rd − G_sd) for r ≥ s (r > s when strict), else 0
"""

import torch
from jaxtyping import Float
from torch import Tensor


def local_cumsum(g: Float[Tensor, "*lead NC C K"]) -> Float[Tensor, "*lead NC C K"]:
    """The cumulative sum over the tokens of each chunk (the C axis); it restarts in every chunk."""
    return g.cumsum(-2)


def pairwise_decay(G: Float[Tensor, "*lead C K"], strict: bool) -> Float[Tensor, "*lead C C K"]:
    """exp(G_r − G_s) on and below the diagonal (below only when strict), 0 above.

    The exponent is masked to −inf before exp: above the diagonal G_r − G_s ≥ 0 can be huge, and
    exp of it would be inf (with a nan gradient through any later mask).
    """
    C = G.shape[-2]
    causal = torch.ones(C, C, dtype=torch.bool, device=G.device).tril(-1 if strict else 0)
    diff = G[..., :, None, :] - G[..., None, :, :]                              # [..., C, C, K]
    return torch.exp(diff.masked_fill(~causal[:, :, None], float("-inf")))
