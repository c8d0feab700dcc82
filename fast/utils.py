"""Small helpers of the Triton backend: availability, output allocation, packed-sequence chunk indices.

Nothing here imports Triton, so ``import gdn2.fast`` works on any machine.
"""

import importlib.metadata
import importlib.util
import os
import weakref

import torch
from torch import Tensor

__all__ = ["unavailable_reason", "empty", "needs_int64", "prepare_chunk_indices", "MAX_HEAD_DIM"]

#: largest K and V the kernels accept (one state tile of K x BV stays in registers)
MAX_HEAD_DIM = 256

#: Tests set this to True: every buffer a kernel must fill starts as NaN, so an unwritten
#: element fails loudly. Never set on the hot path of real use.
POISON_OUTPUTS = False


def unavailable_reason() -> str | None:
    """None when the Triton kernels can run here, else one sentence saying why not."""
    if importlib.util.find_spec("triton") is None:
        return "Triton is not installed (pip install triton, Linux x86-64 only)"
    if os.environ.get("TRITON_INTERPRET") == "1":
        return _interpreter_problem()
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (set TRITON_INTERPRET=1 to run the kernels on Triton's CPU interpreter)"
    return None


def _version(name: str) -> tuple[int, ...]:
    parts = importlib.metadata.version(name).split(".")[:2]
    return tuple(int("".join(c for c in x if c.isdigit()) or 0) for x in parts)


def _interpreter_problem() -> str | None:
    """Triton's interpreter before 3.9 turns a loop bound computed from a program id into an int with
    ``int()`` of a one-element array, which numpy 2.4 and later refuse: every kernel with such a loop
    fails. Tested: Triton 3.6 fails with numpy 2.4, Triton 3.9 runs."""
    if _version("triton") < (3, 9) and _version("numpy") >= (2, 4):
        return (f"Triton {importlib.metadata.version('triton')}'s CPU interpreter cannot run these kernels with "
                f"numpy {importlib.metadata.version('numpy')} (use Triton >= 3.9, or numpy < 2.4)")
    return None


def empty(shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    """``torch.empty``, NaN-filled when :data:`POISON_OUTPUTS` is set (tests)."""
    x = torch.empty(shape, dtype=dtype, device=device)
    return x.fill_(float("nan")) if POISON_OUTPUTS else x


def needs_int64(*tensors: Tensor | None) -> bool:
    """Whether a kernel given ``tensors`` computes its element offsets in int64 (``OFF64``) rather than
    int32: when an offset into one of them, through its strides, reaches 2³⁰. The margin below 2³¹
    covers what an offset computation may pass on its way or in masked lanes past a tensor's end."""
    return any(t is not None and t.numel() and
               sum((n - 1) * s for n, s in zip(t.shape, t.stride())) >= 2 ** 30 for t in tensors)


def _chunk_table(cu_seqlens: Tensor, chunk_size: int, T: int) -> Tensor:
    """Every chunk of a packed batch as (sequence n, chunk i_t inside it), computed on the device.

    An int32 tensor [T // C + N, 2]. The number of chunks, Σ_n ceil(len_n / C), is at most T // C + N,
    so the grid is sized by that bound and the unused trailing rows hold n = -1 (their programs return
    at once)."""
    C = chunk_size
    N = cu_seqlens.numel() - 1
    cu = cu_seqlens.to(torch.int64)
    n_chunks = (cu[1:] - cu[:-1] + C - 1) // C                      # [N]
    ends = n_chunks.cumsum(0)                                       # chunk offset of sequence n + 1
    j = torch.arange(T // C + N, device=cu.device)                  # global chunk slot
    n = torch.searchsorted(ends, j, right=True)                     # first n with ends[n] > j
    valid = n < N
    n_c = n.clamp(max=N - 1)
    i_t = j - (ends[n_c] - n_chunks[n_c])
    return torch.stack([torch.where(valid, n, -1), torch.where(valid, i_t, 0)], dim=1).to(torch.int32)


#: the chunk table of recently seen packed offsets: id -> (weak reference, version, C, T, table, its version)
_TABLES: dict[int, tuple] = {}


def prepare_chunk_indices(cu_seqlens: Tensor, chunk_size: int, T: int) -> Tensor:
    """Map every chunk of a packed batch to (sequence n, chunk i_t inside it), without a host sync.

    Returns an int32 tensor [T // C + N, 2] on cu_seqlens' device: row j is the j-th chunk of the batch,
    rows past the last chunk hold (-1, 0). Computed once per offsets tensor: the layers of a model called
    with one ``cu_seqlens``, a backward after its forward and a caller that passes it as
    ``chunk_indices=`` to :func:`gdn2.fast.chunk_gdn2` share one table (so passing it is free; a table
    built otherwise is compared with it on the device). An entry is used only while the offsets tensor
    is alive and neither it nor the table has been modified (same object, same version counters).
    """
    entry = _TABLES.get(id(cu_seqlens))
    if (entry is not None and entry[0]() is cu_seqlens and entry[1] == cu_seqlens._version
            and entry[2:4] == (chunk_size, T) and entry[4]._version == entry[5]):
        return entry[4]
    table = _chunk_table(cu_seqlens, chunk_size, T)
    if len(_TABLES) >= 64:
        for key in [k for k, e in _TABLES.items() if e[0]() is None] or list(_TABLES)[:32]:
            del _TABLES[key]
    _TABLES[id(cu_seqlens)] = (weakref.ref(cu_seqlens), cu_seqlens._version, chunk_size, T, table, table._version)
    return table
