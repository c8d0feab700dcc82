"""Shape-checked public operators: named argument errors first, then jaxtyping + beartype.

``shape_checked(fn)`` wraps an operator so that a call first runs ``check_inputs`` (which names
the offending argument in a ``ValueError``/``TypeError``) and then the jaxtyping/beartype check of
``fn``'s annotations, so the annotations are checked documentation, never decoration. The call
runs with autocast off: the reference computes in float32 (float64 for float64 input) by design,
whatever autocast region it is called from. Under ``torch.compile`` the values (finiteness, the sign of
g, packed offsets) are not read, since reading them would break the compiled graph; shapes, dtypes and
devices are checked as always.
"""

import functools
import inspect
from collections.abc import Callable
from typing import TypeVar

import torch
from beartype import beartype
from jaxtyping import jaxtyped

from ._contract import check_inputs

F = TypeVar("F", bound=Callable)

__all__ = ["shape_checked"]


def shape_checked(fn: F) -> F:
    checked = jaxtyped(typechecker=beartype)(fn)
    sig = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        a = bound.arguments
        compiling = torch.compiler.is_compiling()
        check_inputs(
            a["q"], a["k"], a["v"], a["g"], a["b"], a["w"], a["scale"], a["initial_state"], a["cu_seqlens"],
            A_log=a.get("A_log"), dt_bias=a.get("dt_bias"), check_values=not compiling,
        )
        with torch.autocast(device_type=a["q"].device.type, enabled=False):
            return (fn if compiling else checked)(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
