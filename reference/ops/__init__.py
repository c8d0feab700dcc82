"""The reference operators of SPEC §5: ``recurrent_gdn2`` (ground truth), ``chunk_gdn2`` (WY form,
manual backward) and ``fused_recurrent_gdn2`` (decoding)."""

from .chunk import chunk_gdn2
from .chunk_backward import ChunkGDN2Function
from .recurrent import fused_recurrent_gdn2, recurrent_gdn2

__all__ = ["recurrent_gdn2", "chunk_gdn2", "fused_recurrent_gdn2", "ChunkGDN2Function"]
