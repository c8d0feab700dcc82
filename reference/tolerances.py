"""The tolerance table of SPEC §7: relative RMS error bounds against the float64 token-by-token reference.

One table for the package (``gdn2 check``) and the tests. A path is ``"<backend>-<dtype>"``; each
row bounds three kinds of quantity: outputs and final state, the gradients dq/dk/dv, and the
gradients of the gates and the initial state (dg, db, dw, dh0, and dA_log, ddt_bias with the in-op gate).
"""

import torch

__all__ = ["TOLERANCES", "KIND", "path_name", "tolerance"]

#: path -> (outputs and final state, dq/dk/dv, dg/db/dw/dh0)
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "reference-float64": (1e-10, 1e-10, 1e-10),
    "reference-float32": (1e-5, 1e-5, 1e-4),
    "triton-float32": (2e-3, 3e-3, 5e-3),
    "triton-bfloat16": (1e-2, 2e-2, 3e-2),
    "triton-float16": (1e-2, 2e-2, 3e-2),
}

#: which column of TOLERANCES bounds each named quantity
KIND: dict[str, int] = {"o": 0, "ht": 0, "q": 1, "k": 1, "v": 1, "g": 2, "b": 2, "w": 2, "h0": 2,
                        "A_log": 2, "dt_bias": 2}


def path_name(backend: str, dtype: torch.dtype) -> str:
    """``("triton", torch.bfloat16) -> "triton-bfloat16"``."""
    return f"{backend}-{str(dtype).removeprefix('torch.')}"


def tolerance(path: str, quantity: str) -> float:
    """The SPEC §7 bound for one quantity ("o", "ht", "q", ..., "h0") on one path."""
    if path not in TOLERANCES:
        raise KeyError(f"no tolerances for path {path!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[path][KIND[quantity]]
