"""gdn2: Gated DeltaNet-2, a typed PyTorch reference and a Triton backend.

- ``gdn2.ops``: the operators (``recurrent_gdn2``, ``chunk_gdn2``, ``fused_recurrent_gdn2``);
- ``gdn2.GDN2``: the layer; ``gdn2.GDN2LM``: a small byte-level language model; ``gdn2.Cache``;
- ``gdn2.get_backend`` / ``gdn2.available_backends``: the backend registry ("reference", "triton").
"""

from . import ops
from .backends import BACKENDS, available_backends, get_backend, resolve_backend
from .cache import Cache
from .layer import GDN2
from .model import GDN2LM, GDN2LMConfig

__version__ = "0.1.0"
__all__ = ["ops", "GDN2", "GDN2LM", "GDN2LMConfig", "Cache", "BACKENDS", "available_backends", "get_backend",
           "resolve_backend"]
