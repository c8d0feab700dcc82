"""The interpreter's bounds check (tests/bounds.py), which every CPU test runs under: it passes accesses
inside a kernel's tensor arguments, masked lanes included, and fails a load, a store or an atomic one
element past an argument's end, also where its storage goes on."""

import os

import pytest
import torch
import triton
import triton.language as tl
from bounds import checked_memory

pytestmark = pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1", reason="checks Triton's interpreter")


@triton.jit
def _copy_kernel(x, y, n_load, n_store, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(y + o, tl.load(x + o, mask=o < n_load, other=0.0), mask=o < n_store)


@triton.jit
def _flag_kernel(flags, bit, OFFSET: tl.constexpr):
    tl.atomic_or(flags + OFFSET, bit)


def test_accesses_inside_the_arguments_pass():
    x, y = torch.randn(8), torch.zeros(8)
    with checked_memory():
        _copy_kernel[(1,)](x, y, 8, 8, BLOCK=16)            # lanes 8-15 masked off
        _flag_kernel[(1,)](torch.zeros(1, dtype=torch.int32), 1, OFFSET=0)
    assert torch.equal(y, x)


@pytest.mark.parametrize("n_load,n_store,what", [(9, 8, "load"), (8, 9, "store")])
def test_one_element_past_the_end_fails(n_load, n_store, what):
    x, y = torch.randn(8), torch.zeros(8)
    with checked_memory(), pytest.raises(Exception, match=f"_copy_kernel: {what} of 1 lanes outside"):
        _copy_kernel[(1,)](x, y, n_load, n_store, BLOCK=16)


def test_reading_past_a_view_into_its_storage_fails():
    """A view's span is its own: the storage around it (another view's columns) is out of bounds."""
    storage, y = torch.randn(32), torch.zeros(8)
    with checked_memory(), pytest.raises(Exception, match="_copy_kernel: load of 1 lanes outside"):
        _copy_kernel[(1,)](storage[8:16], y, 9, 8, BLOCK=16)


def test_atomic_past_the_end_fails():
    with checked_memory(), pytest.raises(Exception, match="_flag_kernel: atomic of 1 lanes outside"):
        _flag_kernel[(1,)](torch.zeros(1, dtype=torch.int32), 1, OFFSET=1)


def test_the_interpreter_is_restored_after_the_block():
    from triton.runtime import interpreter

    def patched_points():
        builder = interpreter.InterpreterBuilder
        return (builder.create_masked_load, builder.create_masked_store, builder.create_atomic_rmw,
                builder.create_atomic_cas, interpreter.GridExecutor._init_args_hst)

    before = patched_points()
    with pytest.raises(RuntimeError), checked_memory():
        raise RuntimeError("leaving the block by an exception")
    assert patched_points() == before
