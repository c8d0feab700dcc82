"""gdn2.fast: the Triton backend (registered as "triton" in :mod:`gdn2.backends`).

``import gdn2.fast`` never imports Triton: the kernels load on the first call of an operator, so
this module imports on machines without Triton or a GPU, and :func:`unavailable_reason` says why
the backend cannot run there. The operators take the arguments of SPEC §5.
"""

from .utils import unavailable_reason

__all__ = ["chunk_gdn2", "fused_recurrent_gdn2", "unavailable_reason"]


def chunk_gdn2(*args, **kwargs):
    """Chunkwise Gated DeltaNet-2 in Triton; see :func:`gdn2.fast.chunk.chunk_gdn2`."""
    from .chunk import chunk_gdn2 as op

    return op(*args, **kwargs)


def fused_recurrent_gdn2(*args, **kwargs):
    """Token-by-token decoding in one Triton launch; see :func:`gdn2.fast.fused_recurrent.fused_recurrent_gdn2`."""
    from .fused_recurrent import fused_recurrent_gdn2 as op

    return op(*args, **kwargs)
