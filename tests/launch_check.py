"""Compile every kernel launch of the chunk forward and backward for sm_90a, without a GPU, and check
each one's shared memory against the H200's 232448 B per block.

    python tests/launch_check.py [K V dtype ...]

The launches are recorded by running the host code of ``chunk_gdn2_fwd`` / ``chunk_gdn2_bwd`` on
CPU tensors with ``JITFunction.run`` replaced by a recorder (no kernel runs; later launches do not
depend on values, and the host code never synchronises), then each is compiled with this machine's
Triton for ``GPUTarget("cuda", 90, 32)`` through ``JITFunction.run`` itself, so with the specialisation
a GPU launch of the same arguments gets (the alignment of pointers and the divisibility of integers,
which set the kernels' layouts and so their shared memory). A launch over the limit is what a GPU
reports as ``OutOfResources`` at run time. Compiling the float32 kernels at K = 256 takes minutes.
"""

import sys
from pathlib import Path

import torch
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

from gdn2.fast import chunk_bwd, chunk_fwd
from gdn2.fast.config import ForwardConfig, StateLaunch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from resources import CompileOnlyDriver  # noqa: E402  (benchmarks/resources.py: a driver for no GPU)

SMEM_LIMIT = 232448
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def inputs(K: int, V: int, dtype: torch.dtype, T: int = 130, H: int = 1, HV: int = 2) -> tuple:
    """(q, k, v, g, b, w) on the CPU: one batch row of T tokens."""
    q, k = (torch.randn(1, T, H, K, dtype=dtype) for _ in range(2))
    g = -torch.rand(1, T, H, K)
    b = torch.rand(1, T, H, K, dtype=dtype)
    v, w = torch.randn(1, T, HV, V, dtype=dtype), torch.rand(1, T, HV, V, dtype=dtype)
    return q, k, v, g, b, w


def record(fn) -> list:
    """Run fn with every Triton launch recorded as (kernel, bound arguments, launch options)."""
    launches = []

    def run(self, *args, grid, warmup, **kwargs):
        launches.append((self, args, kwargs))

    orig = JITFunction.run
    JITFunction.run = run
    try:
        fn()
    finally:
        JITFunction.run = orig
    return launches


def compile_launch(kernel: JITFunction, args: tuple, kwargs: dict):
    """The compiled kernel of one recorded launch, for sm_90a, specialised as a GPU launch would be. The
    process's Triton driver is the compile-only one from then on (callers run in a process of their own)."""
    driver.set_active(CompileOnlyDriver(90))
    return JITFunction.run(kernel, *args, grid=(1,), warmup=True, **kwargs)


def check(K: int, V: int, dtype: torch.dtype, T: int = 130, H: int = 1, HV: int = 2) -> bool:
    torch.manual_seed(0)
    q, k, v, g, b, w = inputs(K, V, dtype, T, H, HV)
    h0 = torch.randn(2, HV, K, V)
    cu = torch.tensor([0, 70, T], dtype=torch.int32)
    A_log, dt_bias = torch.rand(H), torch.randn(H * K)
    kw = dict(use_qk_l2norm_in_kernel=True, A_log=A_log, dt_bias=dt_bias)

    def run():
        for save in (False, True):
            out = chunk_fwd.chunk_gdn2_fwd(q, k, v, g, b, w, K ** -0.5, h0, True, cu, save=save, **kw)
        chunk_bwd.chunk_gdn2_bwd(q, k, v, g, b, w, K ** -0.5, h0, cu, out, torch.randn_like(v),
                                 torch.randn_like(h0), **kw)

    ok = True
    seen = set()
    for kernel, args, kwargs in record(run):
        key = (kernel.fn.__name__, tuple(sorted((n, str(x)) for n, x in kwargs.items())))
        if key in seen:
            continue
        seen.add(key)
        ck = compile_launch(kernel, args, dict(kwargs))
        md = ck.metadata
        bad = md.shared > SMEM_LIMIT
        ok &= not bad
        print(f"{'OVER ' if bad else '     '}K{K} V{V} {str(dtype).removeprefix('torch.'):8} {kernel.fn.__name__:36} "
              f"{md.shared:7d} B shared, {md.num_warps} warps, {md.num_stages} stages", flush=True)
    return ok


def forward_shared(K: int, V: int, dtype: str, save: bool, state_config: dict | None = None,
                   kernels: tuple[str, ...] = ("chunk_state_output_fwd_kernel",)) -> dict[str, int]:
    """Shared memory (B) of the named kernels' launches of one forward (T = 130, H = 1, HV = 2), by name.
    Needs Triton's compiler, not its interpreter: run it with TRITON_INTERPRET unset."""
    q, k, v, g, b, w = inputs(K, V, DTYPES[dtype])
    config = ForwardConfig(state=StateLaunch(**(state_config or {})))
    launches = record(lambda: chunk_fwd.chunk_gdn2_fwd(q, k, v, g, b, w, K ** -0.5, None, True, None, save=save,
                                                       config=config))
    return {kern.fn.__name__: compile_launch(kern, args, dict(kw)).metadata.shared
            for kern, args, kw in launches if kern.fn.__name__ in kernels}


if __name__ == "__main__":
    rest = sys.argv[1:]
    cases = [(int(rest[i]), int(rest[i + 1]), DTYPES[rest[i + 2]]) for i in range(0, len(rest), 3)] or [
        (K, V, dt) for K, V in ((256, 256), (160, 64), (64, 192), (128, 128)) for dt in DTYPES.values()]
    results = [check(K, V, dt) for K, V, dt in cases]
    sys.exit(0 if all(results) else 1)
