"""Registers and spills of a Triton kernel for sm_90a, compiled on a machine without a GPU.

    from ptxas_regs import regs
    regs(kernel, {"q": "*bf16", ...}, {"K": 128, ...}, num_warps=4, label="...")

Compiles through ``triton.compile`` for ``GPUTarget("cuda", 90, 32)`` and runs the ptxas that ships
with Triton (``-v``) on the PTX. The numbers are those of this machine's Triton; the GPU machine's
Triton may differ, so read them as a comparison between variants, not as the GPU's figures.
"""

import inspect
import os
import re
import subprocess
import tempfile

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

_BIN = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")


def _ptxas() -> str:
    for name in ("ptxas-blackwell", "ptxas"):
        path = os.path.join(_BIN, name)
        if os.path.exists(path):
            return path
    raise FileNotFoundError(f"no ptxas in {_BIN}")


def regs(kernel, types: dict, consts: dict, num_warps: int = 4, num_stages: int = 1, label: str = "") -> None:
    """Print registers, spill stores and PTX lines of ``kernel`` with pointer/scalar ``types`` and ``consts``."""
    names = list(inspect.signature(kernel.fn).parameters)
    sig = {n: "constexpr" if n in consts else types[n] for n in names}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    options = {"num_warps": num_warps, "num_stages": num_stages}
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)
    with tempfile.TemporaryDirectory() as d:
        ptx = os.path.join(d, "k.ptx")
        with open(ptx, "w") as f:
            f.write(ck.asm["ptx"])
        out = subprocess.run([_ptxas(), "-arch=sm_90a", "-v", ptx, "-o", os.path.join(d, "k.o")],
                             capture_output=True, text=True)
    info = " ".join(ln.strip() for ln in out.stderr.splitlines() if "registers" in ln or "spill" in ln)
    if out.returncode:
        raise RuntimeError(f"ptxas failed: {out.stderr[-500:]}")
    r = re.search(r"Used (\d+) registers", info)
    sp = re.search(r"(\d+) bytes spill stores", info)
    print(f"{label:40s} warps {num_warps}: {r.group(1) if r else '?'} regs, {sp.group(1) if sp else '?'} B spill "
          f"stores, {ck.metadata.shared} B shared, {ck.asm['ptx'].count(chr(10))} PTX lines", flush=True)


def sass_mix(kernel, types: dict, consts: dict, num_warps: int = 4, num_stages: int = 1, label: str = "",
             top: int = 14) -> dict:
    """Print the static SASS instruction mix (sm_90a, by opcode) of ``kernel``: a proxy, without a GPU, for
    how many instructions a variant issues (loops that are not unrolled count once)."""
    names = list(inspect.signature(kernel.fn).parameters)
    sig = {n: "constexpr" if n in consts else types[n] for n in names}
    src = ASTSource(fn=kernel, signature=sig, constexprs={(names.index(n),): v for n, v in consts.items()})
    ck = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": num_warps,
                                                                         "num_stages": num_stages})
    with tempfile.TemporaryDirectory() as d:
        ptx, obj = os.path.join(d, "k.ptx"), os.path.join(d, "k.o")
        with open(ptx, "w") as f:
            f.write(ck.asm["ptx"])
        subprocess.run([_ptxas(), "-arch=sm_90a", ptx, "-o", obj], check=True, capture_output=True)
        sass = subprocess.run([os.path.join(_BIN, "cuobjdump"), "-sass", obj], capture_output=True, text=True).stdout
    ops: dict[str, int] = {}
    for m in re.finditer(r"^\s+/\*[0-9a-f]{4,}\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)", sass, re.M):
        op = m.group(1)
        ops[op] = ops.get(op, 0) + 1
    total = sum(ops.values())
    mix = ", ".join(f"{o} {n}" for o, n in sorted(ops.items(), key=lambda x: -x[1])[:top])
    print(f"{label:40s} warps {num_warps}: {total} SASS instructions: {mix}", flush=True)
    return ops
