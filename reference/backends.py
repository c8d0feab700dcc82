"""Backend registry: operators chosen by name, loaded lazily.

A backend is a module that exposes ``chunk_gdn2`` and ``fused_recurrent_gdn2`` with the signature
of the reference operators, and may expose ``unavailable_reason() -> str | None`` (None when it can run here)
and ``layer_forward(layer, hidden_states, attention_mask, cache, use_cache, state, cu_seqlens)``, a fused
implementation of :class:`gdn2.layer.GDN2`'s forward that the layer then calls.
The reference never imports the Triton plugin at import time: the arrow goes from ``gdn2.fast``
to ``gdn2``, never back.
"""

import importlib
from types import ModuleType

__all__ = ["BACKENDS", "available_backends", "get_backend", "loaded_backend", "resolve_backend"]

#: name -> module path. "auto" is not a backend: it resolves to the first available of AUTO_ORDER.
BACKENDS: dict[str, str] = {"reference": "gdn2.ops", "triton": "gdn2.fast"}
AUTO_ORDER = ("triton", "reference")


def _unavailable_reason(name: str) -> str | None:
    try:
        module = importlib.import_module(BACKENDS[name])
    except ImportError as e:  # pragma: no cover - depends on the machine
        return f"cannot import {BACKENDS[name]}: {e}"
    check = getattr(module, "unavailable_reason", None)
    return check() if check is not None else None


def available_backends() -> dict[str, str | None]:
    """Every registered backend mapped to None if it runs here, else the reason it does not."""
    return {name: _unavailable_reason(name) for name in BACKENDS}


def resolve_backend(name: str) -> str:
    """Map "auto" to a concrete backend name; validate any other name."""
    if not isinstance(name, str):
        raise TypeError(f"backend must be a str, got {type(name).__name__}")
    if name == "auto":
        for candidate in AUTO_ORDER:
            if _unavailable_reason(candidate) is None:
                return candidate
        raise RuntimeError("no backend is available")  # pragma: no cover - reference always is
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; registered backends: {', '.join(BACKENDS)} (or 'auto')")
    reason = _unavailable_reason(name)
    if reason is not None:
        avail = [n for n, r in available_backends().items() if r is None]
        raise ValueError(f"backend {name!r} is unavailable here: {reason}. Available: {', '.join(avail)}")
    return name


#: backends that get_backend has returned, by name
_LOADED: dict[str, ModuleType] = {}


def get_backend(name: str = "auto") -> ModuleType:
    """The module implementing backend ``name`` ("reference", "triton" or "auto")."""
    resolved = resolve_backend(name)
    module = _LOADED[resolved] = importlib.import_module(BACKENDS[resolved])
    return module


def loaded_backend(name: str) -> ModuleType:
    """A backend that :func:`get_backend` has returned before: a dictionary lookup, which torch.compile
    traces (``get_backend`` itself imports modules)."""
    return _LOADED[name]
