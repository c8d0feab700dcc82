"""Compile every autotune candidate of a run in parallel processes before the run autotunes.

Triton's autotuner compiles its candidates one after another in the process that launches the kernel,
and compiling, not timing, is most of what it costs: the peer's layer has some two hundred candidates
over its kernels. ``world`` processes that each run the same work once under
``candidates_compiled(rank, world)`` compile candidates rank, rank + world, ... of every autotuned
kernel they meet, into Triton's on-disk cache; the real run then finds every candidate compiled and
only times them. What it chooses is unchanged: the candidates, their timing and the choice are the
autotuner's own.

Inside the context, an autotuned launch compiles its share of candidates without launching them (a
candidate that fails to compile is the autotuner's to skip later, and is skipped here), then runs with
the first candidate that launches, so that the program goes on with real outputs. Nothing is timed.

    python benchmarks/bench_layer.py --warm --compile-workers 14   # the layer benchmark's warm-up
"""

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

from triton.runtime.autotuner import Autotuner

__all__ = ["candidates_compiled", "spawn"]


@contextlib.contextmanager
def candidates_compiled(rank: int, world: int) -> Iterator[dict]:
    """Within: every autotuned launch compiles candidates i ≡ rank (mod world) and runs the first that
    launches. Yields counts: ``compiled``, ``failed`` (candidates that did not compile)."""
    if not 0 <= rank < world:
        raise ValueError(f"rank must be in [0, world), got rank={rank}, world={world}")
    counts = {"compiled": 0, "failed": 0}
    original = Autotuner.run

    def run(self, *args, **kwargs):
        self.nargs = dict(zip(self.arg_names, args))
        configs = self.prune_configs(kwargs) if len(self.configs) > 1 else self.configs
        for i, config in enumerate(configs):
            if i % world != rank:
                continue
            try:
                self.fn.run(*args, **{**kwargs, **config.all_kwargs(), "warmup": True})
                counts["compiled"] += 1
            except Exception:  # noqa: BLE001  (ptxas failures, resource limits: the autotuner skips these too)
                counts["failed"] += 1
        error = None
        for config in configs:
            full = {**self.nargs, **kwargs, **config.all_kwargs()}
            try:
                self.pre_hook(full, reset_only=True)      # as the autotuner does after timing: zero the outputs
                if config.pre_hook is not None:
                    config.pre_hook(full)
                ret = self.fn.run(*args, **kwargs, **config.all_kwargs())
                self.nargs = None
                return ret
            except Exception as e:  # noqa: BLE001  (this candidate cannot launch: the next one)
                error = e
        raise RuntimeError(f"no candidate of {self.base_fn.__name__} launches") from error

    Autotuner.run = run
    try:
        yield counts
    finally:
        Autotuner.run = original


def spawn(argv: list[str], world: int, log_dir: str | None = None) -> None:
    """Run ``world`` copies of ``python argv... --precompile-rank r/world`` at once and wait for them;
    each one's output goes to ``log_dir/precompile-r.log`` (default: a temporary folder), and its last
    line is printed. A copy that fails is reported, not fatal: its candidates are then compiled by the
    autotuner itself."""
    log_dir = log_dir or tempfile.mkdtemp(prefix="precompile-")
    os.makedirs(log_dir, exist_ok=True)
    t0 = time.perf_counter()
    procs = []
    for r in range(world):
        log = open(os.path.join(log_dir, f"precompile-{r}.log"), "w")
        procs.append((r, log, subprocess.Popen([sys.executable, *argv, "--precompile-rank", f"{r}/{world}"],
                                               stdout=log, stderr=subprocess.STDOUT)))
    failed = []
    for r, log, p in procs:
        if p.wait() != 0:
            failed.append(r)
        log.close()
        with open(log.name) as f:
            lines = f.read().strip().splitlines()
        print(f"  {lines[-1] if lines else f'rank {r}: no output'}")
    print(f"precompiled in {world} processes in {time.perf_counter() - t0:.0f} s"
          + (f"; ranks {failed} failed (logs in {log_dir})" if failed else ""), flush=True)
