"""The reference operators: ``recurrent_gdn2`` (the float64 ground truth), ``chunk_gdn2`` (WY form,
manual backward) and ``fused_recurrent_gdn2`` (decoding), with the contract of the docs page
"The operator contract"."""

from .chunk import ChunkGDN2Function, chunk_gdn2
from .recurrent import fused_recurrent_gdn2, recurrent_gdn2

__all__ = ["recurrent_gdn2", "chunk_gdn2", "fused_recurrent_gdn2", "ChunkGDN2Function"]
