"""GPU probe: which option breaks a backward configuration, and do K = V = 256 heads run.

    python benchmarks/experiments/probe_backward.py options   # the all-options case, one option off at a time
    python benchmarks/experiments/probe_backward.py k256      # forward and backward at K = V = 256
    python benchmarks/experiments/probe_backward.py k256-sanitize   # the same under compute-sanitizer
    python benchmarks/experiments/probe_backward.py stages    # each backward stage alone, K = 32..128, fp32

Prints the rel-RMS of o and of every gradient against autograd through the float64 chunkwise
reference, for each variant; nothing is asserted (the test suite asserts), this localises.
"""

import sys
from pathlib import Path

import torch

import gdn2.fast
import gdn2.fast.chunk_bwd as chunk_bwd
from gdn2.ops import chunk_gdn2 as ref_chunk_gdn2

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))
from test_fast_backward import grads  # noqa: E402

from gdn2_testing import rel_rms as rel  # noqa: E402  (the tests' helpers, not copies)

DEV = "cuda"


def make(T: int, H: int, HV: int, K: int, V: int, N: int, seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)
    x = {"q": 3 * r(1, T, H, K), "k": 2 * r(1, T, H, K), "v": r(1, T, HV, V), "g": r(1, T, H, K),
         "b": 2 * torch.rand(1, T, H, K, generator=gen, dtype=torch.float64),
         "w": torch.rand(1, T, HV, V, generator=gen, dtype=torch.float64), "initial_state": r(N, HV, K, V),
         "A_log": torch.log(1 + 15 * torch.rand(H, generator=gen, dtype=torch.float64)),
         "dt_bias": r(H * K)}
    return {n: t.to(DEV) for n, t in x.items()}


def run(label: str, inputs: dict, dtype, cu=None, gate=True, l2=True, **kw) -> None:
    x = dict(inputs)
    if not gate:
        x.pop("A_log"), x.pop("dt_bias")
        x["g"] = -torch.nn.functional.softplus(x["g"])
    B, T, HV, V = x["v"].shape
    gen = torch.Generator().manual_seed(1)
    do = torch.randn(B, T, HV, V, generator=gen, dtype=torch.float64).to(DEV)
    dht = torch.randn(x["initial_state"].shape, generator=gen, dtype=torch.float64).to(DEV)
    low = {n: t.to(dtype) if n in "qkv" else t.float() for n, t in x.items()}
    exact = {n: t.double() for n, t in low.items()}
    try:
        o_ref, _, g_ref = grads(ref_chunk_gdn2, exact, do, dht, cu_seqlens=cu, use_qk_l2norm_in_kernel=l2)
        o, _, g = grads(gdn2.fast.chunk_gdn2, low, do, dht, cu_seqlens=cu, use_qk_l2norm_in_kernel=l2, **kw)
        torch.cuda.synchronize()
    except Exception as e:  # noqa: BLE001 (a probe reports every failure and goes on)
        import traceback

        at = [f"{Path(f.filename).name}:{f.lineno}" for f in traceback.extract_tb(e.__traceback__)
              if "gdn2" in f.filename or "/fast/" in f.filename][-1:]
        print(f"{label:44} ERROR {type(e).__name__} at {at}: {str(e)[:200]}")
        return
    errs = [f"o {rel(o, o_ref):.1e}"] + [f"d{n} {rel(g[n], g_ref[n]):.1e}" for n in g]
    print(f"{label:44} " + "  ".join(errs), flush=True)


def options() -> None:
    H, HV, K = 2, 4, 128
    x = make(1193, H, HV, K, 128, 5)
    cu = torch.tensor([0, 1, 64, 128, 193, 1193], device=DEV)
    f32 = torch.float32
    run("fp32 all options (the failing test)", x, f32, cu, recompute=True)
    prec = chunk_bwd._dot_precision
    chunk_bwd._dot_precision = lambda dtype, K: "ieee" if dtype == torch.float32 else prec(dtype, K)
    run("fp32 all options, backward dots ieee", x, f32, cu)
    chunk_bwd._dot_precision = lambda dtype, K: "tf32x3" if dtype == torch.float32 else prec(dtype, K)
    run("fp32 all options, backward dots tf32x3", x, f32, cu)
    chunk_bwd._dot_precision = lambda dtype, K: "tf32"
    run("fp32 all options, backward dots tf32", x, f32, cu)
    chunk_bwd._dot_precision = prec
    run("fp32 all options, chunk 32", x, f32, cu, chunk_size=32)
    run("fp32 all options, chunk 16", x, f32, cu, chunk_size=16)
    run("fp32 no GVA (HV = H)", make(1193, 2, 2, K, 128, 5), f32, cu)
    run("fp32 K = 64", make(1193, H, HV, 64, 64, 5), f32, cu)
    run("bf16 all options (passing)", x, torch.bfloat16, cu)


def k256_part(part: str, K: int, V: int) -> None:
    """One piece (fwd: forward only; bwd: forward + backward) at K, V, bfloat16, in this process."""
    x = make(300, 1, 2, K, V, 2)
    cu = torch.tensor([0, 100, 300], device=DEV)
    if part == "fwd":
        low = {n: t.to(torch.bfloat16) if n in "qkv" else t.float() for n, t in x.items()}
        o, ht = gdn2.fast.chunk_gdn2(**low, output_final_state=True, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
        torch.cuda.synchronize()
        o_ref, ht_ref = ref_chunk_gdn2(**{n: t.double() for n, t in low.items()}, output_final_state=True,
                                       cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
        print(f"K={K} V={V} fwd: o {rel(o, o_ref):.1e}  ht {rel(ht, ht_ref):.1e}")
    else:
        run(f"K={K} V={V} fwd+bwd", x, torch.bfloat16, cu)


def k256() -> None:
    """Each (K, V) and piece in its own process with blocking launches: a fault names its kernel."""
    import os
    import subprocess

    env = {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"}
    for K, V in ((256, 256), (256, 128), (128, 256), (192, 64), (256, 64)):
        for part in ("fwd", "bwd"):
            r = subprocess.run([sys.executable, __file__, "k256-part", part, str(K), str(V)], env=env,
                               capture_output=True, text=True, timeout=120)
            lines = (r.stdout + r.stderr).strip().splitlines()
            where = [ln for ln in lines if "File" in ln and "gdn2" in ln][-2:]
            print(f"K={K} V={V} {part}: rc {r.returncode}: {lines[-1][:160] if lines else ''}", flush=True)
            if r.returncode:
                print("   " + "\n   ".join(ln.strip()[:160] for ln in where))


#: (K, chunk size, dtype, backward dot precision or None for the default) of the stage probe
STAGE_CASES = ((32, 64, torch.float32, None), (64, 64, torch.float32, None), (128, 64, torch.float32, None),
               (128, 32, torch.float32, None), (128, 64, torch.float32, "tf32x3"), (128, 64, torch.float16, None))


def stages() -> None:
    """Each backward stage fed the reference's inputs, against the reference's stage (the tests' code)."""
    from test_fast_backward import reference_stages, slots

    from gdn2.fast.chunk_bwd import chunk_bwd_local, chunk_bwd_state
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.ops.chunk import from_chunks

    prec = chunk_bwd._dot_precision
    for K, C, dt, p in STAGE_CASES:
        chunk_bwd._dot_precision = (lambda d, K, p=p: p) if p else prec
        B, T, H, HV, V = 1, 200, 1, 2, 64
        gen = torch.Generator().manual_seed(0)
        x = {n: t[:, :, :H] if n in "qkgb" else t for n, t in make(T, H, HV, K, V, B).items()
             if n not in ("A_log", "dt_bias")}
        x["k"] = torch.nn.functional.normalize(x["k"], dim=-1)
        x["g"] = -torch.nn.functional.softplus(x["g"])
        x["b"] = x["b"] / 2
        low = {n: t.to(dt) if n in "qkv" else t.float() for n, t in x.items()}
        exact = {n: t.double() for n, t in low.items()}
        do = torch.randn(B, T, HV, V, generator=gen).to(DEV)
        dht = torch.randn(B, HV, K, V, generator=gen).to(DEV)
        ref = reference_stages(exact, C, do.double(), dht.double())
        saved = chunk_gdn2_fwd(**low, scale=K ** -0.5, chunk_size=C, save=True)
        dS_end, dR, dh0 = chunk_bwd_state(saved, do.to(dt), dht, low["initial_state"], None, C)
        errs = [f"dR {rel(dR, from_chunks(ref['dR'], None, T)):.1e}", f"dS_end {rel(dS_end, slots(ref['dS_end'])):.1e}",
                f"dh0 {rel(dh0, ref['dh0'].reshape(B, HV, K, V)):.1e}"]
        dS_ref = slots(ref["dS_end"]).float().contiguous()
        dR_ref = from_chunks(ref["dR"], None, T).to(dt).contiguous()
        out = chunk_bwd_local(low["q"], low["k"], low["v"], low["g"], low["b"], low["w"], K ** -0.5, None, saved,
                              do.to(dt), dR_ref, dS_ref, chunk_size=C)
        expected = dict(zip(("q", "k", "g", "b", "v", "w"), ref["local"]))
        for name, got in zip(("q", "k", "v", "g", "b", "w"), out):
            e = expected[name]
            e = from_chunks(e if e.dim() == 6 else e[:, :, None], None, T)
            errs.append(f"local d{name} {rel(got, e):.1e}")
        print(f"K={K} C={C} {str(dt)[6:]} {p or 'default'}: " + "  ".join(errs), flush=True)
    chunk_bwd._dot_precision = prec


def k256_sanitize() -> None:
    """Forward and forward + backward at K, V above 128 under compute-sanitizer (memcheck), each in its
    own process: the error count, the first faulting kernel and line, and the accuracy line. Found the
    forward state kernel's out-of-bounds shared-memory read with num_stages = 1 (benchmarks/NOTES.md)."""
    import re
    import subprocess

    for K, V in ((256, 256), (256, 128), (128, 256)):
        for part in ("fwd", "bwd"):
            cmd = ["compute-sanitizer", "--tool", "memcheck", "--print-limit", "1", sys.executable, __file__,
                   "k256-part", part, str(K), str(V)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=200)
            except subprocess.TimeoutExpired:
                print(f"K={K} V={V} {part}: timeout", flush=True)
                continue
            out = r.stdout + r.stderr
            errs = re.findall(r"ERROR SUMMARY: (\d+) error", out)
            where = re.findall(r"at (\w+)\+0x\w+ in (\S+)", out)[:1]
            res = [ln for ln in out.splitlines() if ln.startswith("K=")]
            print(f"K={K} V={V} {part}: rc {r.returncode} sanitizer errors {errs[:1]} {where} | "
                  f"{res[-1] if res else out.strip().splitlines()[-1][:200]}", flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "k256-part":
        k256_part(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
    else:
        {"options": options, "k256": k256, "k256-sanitize": k256_sanitize, "stages": stages}[sys.argv[1]]()
