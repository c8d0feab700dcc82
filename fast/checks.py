"""Bad input values found by the kernels, raised on the host as the contract's ``ValueError``.

The reference checks values on the host before it computes (``gdn2.ops._contract.check_values``). A
GPU backend cannot do that without a host synchronisation per call, so the kernels that read each
input anyway flag what the reference rejects, one bit per argument (``jit.FLAG_BITS``), into a
device word: a non-finite q, k, v, b, w or initial state, a log-decay g above 0 or NaN, packed
offsets that do not run from 0 to T without decreasing, a chunk table that is not the one of the packed
offsets (compared on the device; the kernels use the right one). The kernels clamp every packed offset, so a
bad value never makes them address memory outside the tensors.

When the bits reach the host:

- tensors on the CPU (Triton's interpreter): at the end of the call that read them;
- tensors on a GPU: at the start of a later call of the backend on that device once the flagged
  call's work has finished (a copy of the word to pinned memory is queued behind it; nothing waits),
  or at :func:`raise_pending`, which waits. Under CUDA graph capture nothing is queued or raised;
  the word keeps the bits, and the first call after the graph's replays reports them.

The error names every argument flagged since the previous report, which covers every call since then.
"""

import torch
from torch import Tensor

from .jit import FLAG_BITS

__all__ = ["flag_word", "flag_if_different", "settle", "raise_pending", "describe"]

_WORDS: dict[torch.device, Tensor] = {}                   # the flag word of each device
_IN_FLIGHT: dict[torch.device, tuple[Tensor, torch.cuda.Event]] = {}   # pinned copy and its event
_PINNED: dict[torch.device, Tensor] = {}

#: the contract's message for each argument's bit
_MESSAGES = {
    "q": "q holds non-finite values (NaN or ±inf)",
    "k": "k holds non-finite values (NaN or ±inf)",
    "v": "v holds non-finite values (NaN or ±inf)",
    "g": "g is a log-decay and must be <= 0 and not NaN everywhere (after the in-op gate, if any)",
    "b": "b holds non-finite values (NaN or ±inf)",
    "w": "w holds non-finite values (NaN or ±inf)",
    "initial_state": "initial_state holds non-finite values (NaN or ±inf)",
    "cu_seqlens": "cu_seqlens must be non-decreasing from 0 to T",
    "chunk_indices": "chunk_indices must equal gdn2.fast.utils.prepare_chunk_indices(cu_seqlens, 64, T)",
}


def describe(bits: int) -> str:
    """The messages of the flagged arguments, joined."""
    return "; ".join(_MESSAGES[name] for i, name in enumerate(FLAG_BITS) if bits >> i & 1)


def _capturing(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_current_stream_capturing()


def _report(device: torch.device, bits: int) -> None:
    if bits:
        _WORDS[device].zero_()
        when = "" if device.type == "cpu" else " in a call since the last check"
        raise ValueError(f"gdn2.fast: bad input values{when}: {describe(bits)}")


def _poll(device: torch.device, wait: bool = False) -> None:
    entry = _IN_FLIGHT.get(device)
    if entry is None:
        return
    pinned, event = entry
    if wait:
        event.synchronize()
    elif not event.query():
        return
    del _IN_FLIGHT[device]
    _report(device, int(pinned.item()))


def flag_word(device: torch.device) -> Tensor:
    """The [1] int32 word the kernels of a call flag into; first raises what earlier calls flagged."""
    word = _WORDS.get(device)
    if word is None:
        word = _WORDS[device] = torch.zeros(1, dtype=torch.int32, device=device)
    elif device.type == "cuda" and not _capturing(device):
        _poll(device)
    return word


def flag_if_different(word: Tensor, name: str, got: Tensor, want: Tensor) -> None:
    """Set ``name``'s bit in ``word`` where ``got`` differs from ``want`` (same shape), on the device."""
    word.bitwise_or_(torch.ne(got, want).any().to(word.dtype) * (1 << FLAG_BITS.index(name)))


def settle(word: Tensor) -> None:
    """After a call's launches: raise now on the CPU, else queue the word's copy to the host."""
    device = word.device
    if device.type != "cuda":
        _report(device, int(word.item()))
    elif device not in _IN_FLIGHT and not _capturing(device):
        pinned = _PINNED.get(device)
        if pinned is None:
            pinned = _PINNED[device] = torch.empty(1, dtype=torch.int32, pin_memory=True)
        pinned.copy_(word, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        _IN_FLIGHT[device] = (pinned, event)


def raise_pending() -> None:
    """Wait for every queued check and raise what the calls so far flagged (ValueError), if anything."""
    for device in list(_WORDS):
        if device.type == "cuda":
            _poll(device, wait=True)
            settle(_WORDS[device])
            _poll(device, wait=True)
