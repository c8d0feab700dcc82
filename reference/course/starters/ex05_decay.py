"""Exercise 5: the local cumulative decay, and the pairwise decay factors without overflow.

    G_r = Σ_{i≤r} g_i inside each chunk
    D_rsd = exp(G_rd − G_sd) for r ≥ s (r > s when strict), else 0

Grade it with ``gdn2 course grade DIR 5``.
"""

import torch
from jaxtyping import Float
from torch import Tensor


def local_cumsum(g: Float[Tensor, "*lead NC C K"]) -> Float[Tensor, "*lead NC C K"]:
    """Return G: the cumulative sum of g over the tokens of each chunk (it restarts per chunk)."""
    raise NotImplementedError


def pairwise_decay(G: Float[Tensor, "*lead C K"], strict: bool) -> Float[Tensor, "*lead C C K"]:
    """Return D[..., r, s, d] = exp(G[..., r, d] − G[..., s, d]) for s ≤ r (s < r when strict),
    and 0 above.

    It must stay finite, with a finite gradient, for g down to −20 over 64 tokens.
    """
    raise NotImplementedError
