"""The tolerance table (docs page "Tolerances and numerics"): relative RMS error bounds against the float64
token-by-token reference.

One table for the package (``gdn2 check``) and the tests. A path is ``"<backend>-<dtype>"``; each
row bounds three kinds of quantity: outputs and final state, the gradients dq/dk/dv, and the
gradients of the gates and the initial state (dg, db, dw, dh0, and dA_log, ddt_bias with the in-op gate).

dA_log and ddt_bias are sums of signed terms over tokens (and channels), which can cancel to near zero:
their error is measured against the size of their terms (:func:`gate_term_sizes`), not of the sum.
"""

import torch
from torch import Tensor

__all__ = ["TOLERANCES", "KIND", "path_name", "tolerance", "gate_term_sizes"]

#: path -> (outputs and final state, dq/dk/dv, dg/db/dw/dh0)
TOLERANCES: dict[str, tuple[float, float, float]] = {
    "reference-float64": (1e-10, 1e-10, 1e-10),
    "reference-float32": (1e-5, 1e-5, 1e-4),
    "reference-bfloat16": (1e-2, 2e-2, 3e-2),
    "triton-float32": (2e-5, 5e-5, 2e-4),
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
    """The bound for one quantity ("o", "ht", "q", ..., "h0") on one path."""
    if path not in TOLERANCES:
        raise KeyError(f"no tolerances for path {path!r}; known: {', '.join(TOLERANCES)}")
    return TOLERANCES[path][KIND[quantity]]


def gate_term_sizes(g: Tensor, A_log: Tensor, dt_bias: Tensor, dg: Tensor) -> dict[str, Tensor]:
    """Σ|term| of the in-op gate's parameter gradients, the scale their rounding errors follow.

    With x = g + dt_bias and the log-decay −exp(A_log)·softplus(x) (the in-op gate), the raw gate's gradient
    ``dg`` [B, T, H, K] is dL/dx, so ddt_bias[h·K + k] = Σ_tokens dL/dx and
    dA_log[h] = Σ_tokens,k dL/dx · softplus(x) / σ(x). A sum that cancels keeps no relative accuracy
    in any floating-point format; a wrong term (a missing factor, a dropped token) is still of the size
    of the terms, so the error measured against it still shows. Returns ``{"A_log": [H], "dt_bias": [H·K]}``
    in float64; the signed terms sum to the float64 oracle's own dA_log and ddt_bias."""
    H = A_log.shape[0]
    x = (g.double() + dt_bias.double().view(H, -1))
    dx = dg.double()
    return {"A_log": (dx * torch.nn.functional.softplus(x) / torch.sigmoid(x)).abs().flatten(0, 1).sum((0, 2)),
            "dt_bias": dx.abs().flatten(0, 1).sum(0).flatten()}
