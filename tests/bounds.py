"""Out-of-bounds detection for kernels run by Triton's interpreter (``TRITON_INTERPRET=1``).

Under the interpreter a load or store outside every tensor argument reads or writes the process's own heap:
nothing crashes, so such a bug passes the CPU tests and corrupts memory on the GPU. Inside
``checked_memory()`` every launch records, for each tensor argument, the bytes from its first element to
its last through its strides (a view's own span, not its whole storage; the gaps between a strided
view's rows lie inside the span and pass), and every load, store and atomic of an unmasked lane must
fall inside one of them; otherwise an ``AssertionError`` names the kernel, the access and the first bad
address.
"""

import contextlib
from collections.abc import Iterator

import numpy as np


@contextlib.contextmanager
def checked_memory() -> Iterator[None]:
    from triton.runtime import interpreter as ti

    launch: dict = {"name": "?", "starts": np.zeros(0, np.uint64), "ends": np.zeros(0, np.uint64)}
    builder = ti.InterpreterBuilder
    originals = {name: getattr(builder, name) for name in
                 ("create_masked_load", "create_masked_store", "create_atomic_rmw", "create_atomic_cas")}
    init_args = ti.GridExecutor._init_args_hst

    def extent(t) -> int:
        """Bytes from a tensor's first element to the end of its last, through its strides."""
        return (sum((n - 1) * st for n, st in zip(t.shape, t.stride())) + 1) * t.element_size()

    def record(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        spans = sorted({(t.data_ptr(), extent(t)) for t in [*args_hst, *kwargs_hst.values()]
                        if hasattr(t, "untyped_storage") and t.numel()})
        launch["name"] = getattr(self.fn, "__name__", "?")
        launch["starts"] = np.array([s for s, _ in spans], dtype=np.uint64)
        launch["ends"] = np.array([s + n for s, n in spans], dtype=np.uint64)
        return args_hst, kwargs_hst

    def check(what: str, ptrs, mask, itemsize: int) -> None:
        addr = np.broadcast_to(ptrs.data, np.broadcast_shapes(ptrs.data.shape, np.shape(mask))).astype(np.uint64)
        addr = addr[np.broadcast_to(mask, addr.shape)] if mask is not None else addr.reshape(-1)
        if addr.size == 0:
            return
        slot = np.searchsorted(launch["starts"], addr, side="right").astype(np.int64) - 1
        ok = slot >= 0
        ok[ok] &= addr[ok] + np.uint64(itemsize) <= launch["ends"][slot[ok]]
        if not ok.all():
            bad = int(addr[~ok][0])
            spans = ", ".join(f"[{int(s):#x}, {int(e):#x})" for s, e in zip(launch["starts"], launch["ends"]))
            raise AssertionError(f"{launch['name']}: {what} of {int((~ok).sum())} lanes outside every tensor "
                                 f"argument, first at {bad:#x} (arguments: {spans})")

    def itemsize_of(ptrs) -> int:
        return np.dtype(ti._get_np_dtype(ptrs.get_element_ty())).itemsize

    def load(self, ptrs, mask, other, *rest):
        check("load", ptrs, mask.data, itemsize_of(ptrs))
        return originals["create_masked_load"](self, ptrs, mask, other, *rest)

    def store(self, ptrs, value, mask, *rest):
        check("store", ptrs, mask.data, itemsize_of(ptrs))
        return originals["create_masked_store"](self, ptrs, value, mask, *rest)

    def rmw(self, op, ptr, val, mask, *rest):
        check("atomic", ptr, mask.data, itemsize_of(ptr))
        return originals["create_atomic_rmw"](self, op, ptr, val, mask, *rest)

    def cas(self, ptr, cmp, val, *rest):
        check("atomic", ptr, None, itemsize_of(ptr))
        return originals["create_atomic_cas"](self, ptr, cmp, val, *rest)

    patched = {"create_masked_load": load, "create_masked_store": store, "create_atomic_rmw": rmw,
               "create_atomic_cas": cas}
    try:
        ti.GridExecutor._init_args_hst = record
        for name, fn in patched.items():
            setattr(builder, name, fn)
        yield
    finally:
        ti.GridExecutor._init_args_hst = init_args
        for name, fn in originals.items():
            setattr(builder, name, fn)
