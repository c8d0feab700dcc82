"""Registers, spilled stack and shared memory of every Triton kernel at the launch settings its driver
picks, compiled for a GPU architecture on a machine without a GPU.

    python benchmarks/resources.py [--arch 90] [--batch 8] [--seq-len 64] [--out DIR]

The calls: the GDN2 layer's train step and one decoding step (``GDN2(backend="triton")``, hidden size
2048, 16 heads of 128, bfloat16: short convolution, gated norm, the operator with its in-op gate and
logit gates, forward and backward), and the operator alone with float32 log-decays and gates as
probabilities (as ``bench.py`` calls it), forward, forward keeping its intermediates, and backward.
They run on the CPU with Triton told that the current device is an sm_<arch> GPU: every kernel
launch compiles exactly as it would there (same specialisation of arguments, same constexprs and
launch options) and is then skipped, so the outputs are garbage and only the compiled kernels
matter. ``cuobjdump`` (shipped with Triton) reads each kernel's registers per thread, stack (spilled
registers) and static shared memory, and its SASS.

The drivers pick some launch settings from the number of sequences times heads (kept by the default
batch 8) and from the token count (the short convolution's backward); the CSV names the shape.
Registers at the 255 ceiling with a non-zero stack mean spills. Writes
``results/resources-sm<arch>-triton<version>.csv``: card (the architecture), triton, call, kernel,
num_warps, num_stages, registers, stack_bytes, shared_bytes, sass_instructions, barriers (``cuobjdump
-sass``: the instructions as written, a loop's body once; barriers, the BAR instructions among them); and
``results/resources-sass-sm<arch>-triton<version>.csv``: card, triton, call, kernel, loads_after_stores (a
global store then a global load, in the SASS's order) and calls (subroutines).
"""

import argparse
import os
import re
import subprocess
import tempfile
from pathlib import Path

import launch_defaults
import torch
import triton
from bench import write_csv
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver
from triton.runtime.jit import JITFunction

FIELDS = ["card", "triton", "call", "kernel", "num_warps", "num_stages", "registers", "stack_bytes", "shared_bytes",
          "sass_instructions", "barriers"]
#: the second CSV: the signs of a kernel waiting where it need not (a separate file keeps each table narrow)
SIGN_FIELDS = ["card", "triton", "call", "kernel", "loads_after_stores", "calls"]

#: one SASS instruction in ``cuobjdump -sass``: its address comment, an optional predicate, the opcode
_SASS_OP = re.compile(r"/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)")


class CompileOnlyDriver:
    """What ``JITFunction.run`` asks of the active driver, for a GPU that is not there."""

    def __init__(self, arch: int) -> None:
        self.target = GPUTarget("cuda", arch, 32)

    def get_current_target(self) -> GPUTarget:
        return self.target

    def get_current_device(self) -> int:
        return 0

    def get_current_stream(self, device: int | None = None) -> int:
        return 0

    def is_active(self) -> bool:
        return True


class Recorder:
    """Replaces ``JITFunction.run``: compile the launch (``warmup=True``), remember the kernel, launch nothing."""

    def __init__(self) -> None:
        self.launches: list[tuple[str, object]] = []
        self._run = JITFunction.run

    def __enter__(self) -> "Recorder":
        rec = self

        def run(fn, *args, grid, warmup, **kwargs):
            rec.launches.append((fn.__name__, rec._run(fn, *args, grid=grid, warmup=True, **kwargs)))

        JITFunction.run = run
        return self

    def __exit__(self, *exc) -> None:
        JITFunction.run = self._run


def usage(kernel, cuobjdump: str) -> dict:
    """registers and stack_bytes of a compiled kernel, from its cubin; shared_bytes from its metadata; the
    instructions of its SASS and how many of them are barriers (each written once: a loop's body counts
    once, however often it runs); ``loads_after_stores``, how often a global load follows a global store
    in that order (no load moves above a store that might alias it, so each is a wait on memory that
    earlier loads could have hidden); ``calls``, subroutine calls (a 64-bit division, for one)."""
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(kernel.asm["cubin"])
    try:
        out = subprocess.run([cuobjdump, "--dump-resource-usage", f.name], capture_output=True, text=True,
                             check=True).stdout
        sass = subprocess.run([cuobjdump, "-sass", f.name], capture_output=True, text=True, check=True).stdout
    finally:
        os.unlink(f.name)
    found = dict(re.findall(r"(REG|STACK):(\d+)", out))
    ops = _SASS_OP.findall(sass)
    memory = [op[:3] for op in ops if op.startswith(("LDG", "STG"))]
    # the cubin's SHARED is the static part only; Triton's tiles live in dynamic shared memory
    return dict(registers=int(found["REG"]), stack_bytes=int(found["STACK"]), shared_bytes=kernel.metadata.shared,
                sass_instructions=len(ops), barriers=sum(op.startswith("BAR.") for op in ops),
                loads_after_stores=sum(a == "STG" and b == "LDG" for a, b in zip(memory, memory[1:])),
                calls=sum(op.startswith("CALL") for op in ops))


def calls(batch: int, seq_len: int):
    """(name, thunk) of every call whose launches are recorded."""
    import gdn2
    import gdn2.fast

    H, K, D = 16, 128, 2048
    bf = torch.bfloat16

    def layer_train():
        layer = gdn2.GDN2(D, H, head_dim=K, backend="triton").to(bf)
        x = torch.randn(batch, seq_len, D, dtype=bf, requires_grad=True)
        layer(x).float().sum().backward()

    def layer_decode():
        layer = gdn2.GDN2(D, H, head_dim=K, backend="triton").to(bf).eval()
        cache = gdn2.Cache()
        with torch.no_grad():
            layer(torch.randn(batch, 4, D, dtype=bf), cache=cache, use_cache=True)
            layer(torch.randn(batch, 1, D, dtype=bf), cache=cache, use_cache=True)

    def op_inputs():
        r = lambda dt=bf: torch.randn(batch, seq_len, H, K, dtype=dt)  # noqa: E731
        return dict(q=r(), k=r(), v=r(), g=torch.nn.functional.logsigmoid(r(torch.float32)),
                    b=torch.sigmoid(r()), w=torch.sigmoid(r()))

    def op_train():
        x = {n: t.requires_grad_() for n, t in op_inputs().items()}
        o, _ = gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)
        o.float().sum().backward()

    def op_forward_saved():
        from gdn2.fast.chunk_fwd import chunk_gdn2_fwd

        chunk_gdn2_fwd(**op_inputs(), scale=K ** -0.5, use_qk_l2norm_in_kernel=True, save=True)

    return [("layer train step", layer_train), ("layer decoding", layer_decode), ("op train step", op_train),
            ("op forward, saved", op_forward_saved)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", type=int, default=90, help="compute capability times ten (90: H100, H200)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=64)
    ap.add_argument("--set", action="append", default=[], metavar="SIDE.STAGE.FIELD=VALUE",
                    help="another default launch setting, e.g. bwd.pairwise.num_warps=8 (repeatable); the CSV "
                         "is then named ...-variant.csv and its call column says which")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if os.environ.get("TRITON_INTERPRET") == "1":
        raise SystemExit("unset TRITON_INTERPRET: the kernels are compiled, not interpreted")
    cuobjdump = str(Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump")
    driver.set_active(CompileOnlyDriver(args.arch))
    import importlib

    import gdn2.fast
    import gdn2.fast.contract as contract

    # every kernel is defined (compiled JIT functions, not interpreted ones) before the device checks of
    # the backend are told that CPU tensors are fine: they are on the CPU on purpose, and never read
    for module in ("chunk", "chunk_fwd", "chunk_bwd", "fused_recurrent", "conv", "norm", "layer", "projections"):
        importlib.import_module(f"gdn2.fast.{module}")
    os.environ["TRITON_INTERPRET"] = "1"
    contract._INTERPRET = True
    contract.check_triton_inputs = lambda q, v: None
    gdn2.fast.unavailable_reason = gdn2.fast.utils.unavailable_reason = lambda: None
    variant = launch_defaults.apply(args.set)
    rows, seen = [], set()
    for name, thunk in calls(args.batch, args.seq_len):
        with Recorder() as rec:
            thunk()
        for kernel_name, kernel in rec.launches:
            key = (name, kernel_name, kernel.hash)
            if key in seen:
                continue
            seen.add(key)
            row = dict(card=f"sm_{args.arch}, compiled without a GPU", triton=triton.__version__,
                       call=f"{name} ({args.batch}x{args.seq_len}{'; ' + variant if variant else ''})",
                       kernel=kernel_name,
                       num_warps=kernel.metadata.num_warps, num_stages=kernel.metadata.num_stages,
                       **usage(kernel, cuobjdump))
            rows.append(row)
            spill = "  SPILLS" if row["stack_bytes"] and row["registers"] >= 255 else ""
            print(f"{name:20s} {kernel_name:36s} warps {row['num_warps']} stages {row['num_stages']}  reg "
                  f"{row['registers']:3d}  stack {row['stack_bytes']:5d} B  shared {row['shared_bytes']:6d} B  "
                  f"SASS {row['sass_instructions']:5d} (BAR {row['barriers']:2d}, load after store "
                  f"{row['loads_after_stores']}, CALL {row['calls']}){spill}", flush=True)
    suffix = f"sm{args.arch}-triton{triton.__version__}{'-variant' if variant else ''}.csv"
    for prefix, fields in (("resources", FIELDS), ("resources-sass", SIGN_FIELDS)):
        path = Path(args.out) / f"{prefix}-{suffix}"
        write_csv(path, [{f: r[f] for f in fields} for r in rows], fields)
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
