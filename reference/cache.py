"""Decoding state: what a model keeps between calls, constant in the number of generated tokens.

A GDN2 layer keeps its float32 recurrent state S [N, HV, K, V] and the last (conv_size − 1) inputs of
each short convolution; a sliding-window attention layer keeps at most its window of keys and
values. Nothing here grows with the length of the sequence.
"""

from collections.abc import Hashable
from dataclasses import dataclass, fields

from torch import Tensor

__all__ = ["Cache", "GDN2State", "WindowState"]


@dataclass
class GDN2State:
    """One GDN2 layer: the recurrent state and the short-convolution states (None without convs)."""

    recurrent_state: Tensor                         # [N, HV, K, V], float32 (float64 for a float64 layer)
    conv_state: tuple[Tensor, Tensor, Tensor] | None  # q, k, v: each [N, channels, conv_size - 1]


@dataclass
class WindowState:
    """One sliding-window attention layer: the last ``window - 1`` token slots of each sequence."""

    k: Tensor         # [B, heads, L, head_dim], L <= window - 1
    v: Tensor         # [B, heads, L, head_dim]
    valid: Tensor     # [B, L] bool: False for padding slots
    pos: Tensor       # [B, L] int64: position of each slot among its sequence's valid tokens
    seen: Tensor      # [B] int64: valid tokens seen so far (the next token's position)


def _tensors(state) -> list[Tensor]:
    out = []
    for f in fields(state):
        value = getattr(state, f.name)
        items = value if isinstance(value, tuple) else (value,)
        out.extend(t for t in items if isinstance(t, Tensor))
    return out


class Cache:
    """Per-layer decoding states keyed by each layer's ``layer_idx`` (the layer itself when it has none);
    layers read and update it in place."""

    def __init__(self) -> None:
        self.layers: dict[Hashable, GDN2State | WindowState] = {}

    def get(self, key: Hashable) -> GDN2State | WindowState | None:
        return self.layers.get(key)

    def update(self, key: Hashable, state: GDN2State | WindowState) -> None:
        self.layers[key] = state

    def __len__(self) -> int:
        return len(self.layers)

    def num_bytes(self) -> int:
        """Bytes held by every tensor of every layer's state."""
        return sum(t.numel() * t.element_size() for s in self.layers.values() for t in _tensors(s))

    def __repr__(self) -> str:
        keys = sorted((k if isinstance(k, int) else type(k).__name__ for k in self.layers), key=str)
        return f"Cache(layers={keys}, bytes={self.num_bytes()})"
