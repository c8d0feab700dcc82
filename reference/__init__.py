"""gdn2: Gated DeltaNet-2, a typed PyTorch reference and a Triton backend."""

from . import ops

__version__ = "0.1.0"
__all__ = ["ops"]
