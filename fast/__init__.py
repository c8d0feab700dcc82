"""gdn2.fast: the Triton backend (registered as "triton" in :mod:`gdn2.backends`).

``import gdn2.fast`` never imports Triton: the operators ``chunk_gdn2`` (:func:`gdn2.fast.chunk.chunk_gdn2`)
and ``fused_recurrent_gdn2`` (:func:`gdn2.fast.fused_recurrent.fused_recurrent_gdn2`), the layer's short
convolution ``short_conv`` / ``short_conv_step`` (:mod:`gdn2.fast.conv`) and its gated norm
``gated_rms_norm`` (:mod:`gdn2.fast.norm`), and the fused layer ``layer_forward``
(:func:`gdn2.fast.layer.layer_forward`), load with their kernels on first access, so this module imports
on machines without Triton or a GPU, and :func:`unavailable_reason` says why the backend cannot run
there. The operators take the arguments
of the reference (docs page "The operator contract").
"""

import importlib

from .utils import unavailable_reason

__all__ = ["chunk_gdn2", "fused_recurrent_gdn2", "short_conv", "short_conv_step", "gated_rms_norm", "layer_forward",
           "unavailable_reason"]

_OPERATORS = {"chunk_gdn2": ".chunk", "fused_recurrent_gdn2": ".fused_recurrent", "short_conv": ".conv",
              "short_conv_step": ".conv", "gated_rms_norm": ".norm", "layer_forward": ".layer"}


def __getattr__(name: str):
    """Import an operator (and Triton) on its first access, then bind it here: later accesses are a
    plain module-attribute lookup, so a decoding step pays nothing for the laziness (PEP 562)."""
    if name not in _OPERATORS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    op = getattr(importlib.import_module(_OPERATORS[name], __name__), name)
    globals()[name] = op
    return op
