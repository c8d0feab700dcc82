"""Minimal reproducers of the Triton faults that gdn2.fast works around.

    python benchmarks/triton_faults.py               # every case on the GPU (about a minute on an H200)
    python benchmarks/triton_faults.py --sanitizer   # also each run under compute-sanitizer memcheck (~3 min)
    python benchmarks/triton_faults.py --cpu         # the same cases in Triton's CPU interpreter (all ok)
    python benchmarks/triton_faults.py --list        # the cases; --case NAME[,NAME] runs some of them

Each workaround is a launch setting that the drivers never pick (the "avoided" setting). For each
case the script runs the avoided setting and the default on one small input, each in a process of
its own (a fault can leave the CUDA context unusable, which would fail every later run in that
process), compares the outputs (forward cases) or every gradient (backward cases) with the float64
reference ``gdn2.ops.recurrent_gdn2`` (gradients: autograd through it), and prints one line per run:

- ``fault (exit status / error)``: the process died or raised (illegal address, out of resources, ...);
- ``wrong (rel-RMS x q)``: it ran, but quantity q is farther from the reference than the test suite's
  tolerance for that dtype (``gdn2.tolerances.TOLERANCES``), or not finite;
- ``ok (rel-RMS x q)``: every quantity within tolerance (q the closest to its bound).

The table goes to stdout and to ``benchmarks/results/triton-faults-<card>.txt`` (``--out`` moves it).

The cases (where the workaround lives, then what was seen with Triton 3.6 on an H200):

- ``fwd-state-one-tile-K256``: ``chunk_fwd.forward_config`` holds the state as two 128-row tiles for
  K > 128. One 256-row tile (``StateLaunch(BKH=256)``) gave NaN outputs or an illegal address; the
  sanitizer reported an invalid shared-memory read in the K_tailᵀR product.
- ``fwd-state-1-stage-K256``, ``fwd-state-1-stage-K128``: ``StateLaunch.num_stages`` is 2 or 3
  (``chunk_fwd._state_stages``). With 1 the state kernel read shared memory out of bounds at
  K = 256 (the second tile's Y·S product) and hit an illegal address at K = 128 (seen at 8×2K with
  BV 32, so this case fixes BV 32 in both settings).
- ``bwd-state-BKH64-K64``, ``bwd-state-BKH256-K256``: ``chunk_bwd.chunk_bwd_state`` takes 128-row
  tiles on a GPU whatever K is (one masked tile for K ≤ 128, two above). 64-row tiles at K = 64 and
  one 256-row tile at K = 256 faulted.
- ``bwd-state-BV16``: the same function never takes 16-wide value blocks (BV 32 or 64); BV 16 faulted.
- ``bwd-ieee-K128``, ``bwd-tf32x3-K16``: ``chunk_bwd._dot_precision`` gives float32 inputs "ieee"
  products at K ≤ 32 and "tf32x3" above. "ieee" at K = 128 gave dq 110% off (dk, dg off too);
  "tf32x3" at K = 16 hit an illegal address in ``chunk_bwd_local_wy_kernel`` (the float32 layer test
  with GVA, K = V = 16, B = 2, T = 20: this case's shape).
- ``diag-3-stages-fp16``, ``diag-3-stages-bf16``: ``DiagLaunch.num_stages`` is 1. With 3 the diagonal
  intra kernel computed A 10-13% off where the strong-decay fallback runs (o off by 5-13%), in
  float16 and bfloat16; the interpreter, tf32 rounding emulated, is right at every setting.
- ``wy-bf16-BV-below-BK``: ``chunk_fwd.forward_config`` never gives the WY kernel a value tile narrower
  than its key tile. With bfloat16 operands, BK 32 and BV 16 (K = 20 or 32, V <= 16) hit an illegal
  address; the sanitizer reported an invalid 512-byte shared-memory read at the U = A·(w⊙v) product
  (found by the contract fuzzer on an H100 and an H200; K = 16 with BV 16, and BV 32, were ok).

With ``--sanitizer`` each run is repeated under ``compute-sanitizer --tool memcheck`` (with PyTorch's
caching allocator off, so that every tensor is its own allocation and an access past its end is
seen), and the report is read for invalid accesses and the kernel they happened in. What to conclude:

- the avoided setting fails, the default is ok, and the sanitizer finds no invalid access to global
  memory in one of our kernels (only shared or local memory, which Triton alone addresses, or nothing
  at all for a wrong result): a fault in Triton's compiler, not an out-of-bounds access of ours. Keep
  the workaround; drop it once a Triton release runs the avoided setting ok.
- the sanitizer finds an invalid ``__global__`` access in one of our kernels: suspect our own masks
  and offsets first (the kernel and the setting are named), whatever Triton's part.
- the avoided setting is ok: the fault did not show at this small shape with this Triton. That does
  not prove the workaround unneeded: several faults were seen at larger shapes; rerun with ``--T 2048``.
- the default fails: a bug of ours or a new fault; run the test suite.

In ``--cpu`` mode the cases run in Triton's interpreter, which has none of these faults (every run is
expected ok): it checks this script, not the compiler. The interpreter's ``tl.dot`` is wrong on
bfloat16 operands, so bfloat16 cases run in float16 there.
"""

import argparse
import datetime
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path

import torch

from gdn2.fast.config import BackwardConfig, DiagLaunch, ForwardConfig, StateBwdLaunch, StateLaunch, WYLaunch

#: the kernels of gdn2.fast, as compute-sanitizer names them
OUR_KERNELS = ("chunk_intra_diag_kernel", "chunk_intra_offdiag_kernel", "chunk_wy_fwd_kernel",
               "chunk_state_output_fwd_kernel", "chunk_bwd_state_kernel", "chunk_bwd_local_wy_kernel",
               "chunk_bwd_local_pairwise_kernel", "fused_recurrent_fwd_kernel")
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
PATHS = {"fp32": "triton-float32", "fp16": "triton-float16", "bf16": "triton-bfloat16"}


@dataclass(frozen=True)
class Case:
    """One workaround: the setting the drivers avoid, the default they take, the input that showed it."""

    name: str
    stage: str                                  # "fwd": compare o and ht; "bwd": also every gradient
    dtype: str                                  # key of DTYPES
    shape: tuple[int, int, int, int, int, int]  # B, T, H, HV, K, V
    avoided: ForwardConfig | BackwardConfig
    default: ForwardConfig | BackwardConfig = field(default=None)
    gate: bool = False                          # in-op gate (A_log, dt_bias) and L2 norm of q, k
    g_min: float = -2.0                         # g uniform in [g_min, 0)
    fallback_mix: bool = False                  # the forward test's strong-decay pattern (K = 48)


CASES = [
    Case("fwd-state-one-tile-K256", "fwd", "bf16", (1, 200, 1, 1, 256, 128),
         ForwardConfig(state=StateLaunch(BKH=256)), ForwardConfig()),
    Case("fwd-state-1-stage-K256", "fwd", "bf16", (1, 200, 1, 1, 256, 128),
         ForwardConfig(state=StateLaunch(num_stages=1)), ForwardConfig()),
    Case("fwd-state-1-stage-K128", "fwd", "bf16", (1, 200, 2, 2, 128, 128),
         ForwardConfig(state=StateLaunch(BV=32, num_stages=1)), ForwardConfig(state=StateLaunch(BV=32))),
    Case("bwd-state-BKH64-K64", "bwd", "bf16", (1, 200, 2, 2, 64, 128),
         BackwardConfig(state=StateBwdLaunch(BKH=64)), BackwardConfig()),
    Case("bwd-state-BKH256-K256", "bwd", "bf16", (1, 200, 1, 1, 256, 128),
         BackwardConfig(state=StateBwdLaunch(BKH=256)), BackwardConfig()),
    Case("bwd-state-BV16", "bwd", "bf16", (1, 200, 2, 2, 128, 128),
         BackwardConfig(state=StateBwdLaunch(BV=16)), BackwardConfig()),
    Case("bwd-ieee-K128", "bwd", "fp32", (1, 200, 1, 2, 128, 128),
         BackwardConfig(precision="ieee"), BackwardConfig(), gate=True),
    Case("bwd-tf32x3-K16", "bwd", "fp32", (2, 20, 2, 4, 16, 16),
         BackwardConfig(precision="tf32x3"), BackwardConfig(), gate=True),
    Case("diag-3-stages-fp16", "fwd", "fp16", (1, 100, 1, 1, 48, 16),
         ForwardConfig(diag=DiagLaunch(num_stages=3)), ForwardConfig(), fallback_mix=True),
    Case("diag-3-stages-bf16", "fwd", "bf16", (1, 200, 2, 2, 128, 128),
         ForwardConfig(diag=DiagLaunch(num_stages=3)), ForwardConfig(), g_min=-20.0),
    Case("wy-bf16-BV-below-BK", "fwd", "bf16", (1, 70, 1, 1, 20, 12),
         ForwardConfig(wy=WYLaunch(BK=32, BV=16)), ForwardConfig()),
]


# ---- one run (in its own process) -------------------------------------------------------------------
def make_inputs(case: Case, T: int) -> dict[str, torch.Tensor]:
    """float64 CPU inputs as the test suite draws them: unit-norm keys, g in [g_min, 0), b in [0, 2),
    w in [0, 1), an initial state; with ``gate`` a raw gate N(0, 1), A_log and dt_bias, and q, k off unit norm."""
    B, _, H, HV, K, V = case.shape
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)       # noqa: E731
    u = lambda *s: torch.rand(*s, generator=gen, dtype=torch.float64)        # noqa: E731
    x = {"q": r(B, T, H, K), "k": torch.nn.functional.normalize(r(B, T, H, K), dim=-1), "v": r(B, T, HV, V),
         "g": case.g_min * u(B, T, H, K).clamp_min(1e-3), "b": 2 * u(B, T, H, K), "w": u(B, T, HV, V),
         "initial_state": r(B, HV, K, V)}
    if case.fallback_mix and T > 90:   # tests/test_fast_forward.py::test_chunk_diagonal_product_and_fallback_mix
        x["g"][0, 20:24, 0, 3] = -25.0
        x["g"][0, 33, 0, 40] = -70.0
        x["g"][0, 80, 0, 5] = -1e3
        x["g"][0, 90, 0, 6] = -1e3
    if case.gate:
        x["g"] = r(B, T, H, K)
        x["A_log"] = torch.log(1 + 15 * u(H))
        x["dt_bias"] = r(H * K)
        x["q"], x["k"] = 3 * x["q"], 2 * x["k"]
    return x


def rel_rms(actual: torch.Tensor, expected: torch.Tensor, scale: torch.Tensor | None = None) -> float:
    """RMS(actual − expected) / RMS(scale), scale = expected unless given; NaN if actual is not finite."""
    a, e = actual.detach().double().cpu(), expected.detach().double().cpu()
    if not torch.isfinite(a).all():
        return float("nan")
    s = e if scale is None else scale.double()
    return ((a - e).pow(2).mean().sqrt() / s.pow(2).mean().sqrt().clamp_min(1e-30)).item()


def run_once(case: Case, setting: str, device: str, T: int) -> dict:
    """Errors of one setting of one case against the float64 recurrence: {"errors": {q: x}, "tols": {q: tol}}."""
    import gdn2.fast.utils
    from gdn2.fast.chunk_bwd import chunk_gdn2_bwd
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.ops import recurrent_gdn2
    from gdn2.tolerances import KIND, TOLERANCES, gate_term_sizes

    gdn2.fast.utils.POISON_OUTPUTS = True         # an element a kernel leaves unwritten is NaN, so it fails
    dtype = DTYPES[case.dtype]
    if device == "cpu" and dtype == torch.bfloat16:
        dtype = torch.float16                     # the interpreter's tl.dot is wrong on bfloat16 operands
    config = case.avoided if setting == "avoided" else case.default
    exact = make_inputs(case, T)
    low = {n: (x.to(dtype) if n in ("q", "k", "v") else x.float()).to(device) for n, x in exact.items()}
    exact = {n: x.double().cpu() for n, x in low.items()}           # the very values the kernels get
    names = ["q", "k", "v", "g", "b", "w", "initial_state"] + (["A_log", "dt_bias"] if case.gate else [])
    opts = {"use_qk_l2norm_in_kernel": case.gate}
    B, _, H, HV, K, V = case.shape
    scale = K ** -0.5
    tols = TOLERANCES[PATHS[next(n for n, d in DTYPES.items() if d == dtype)]]
    kind = lambda n: KIND["h0" if n == "initial_state" else n]      # noqa: E731

    leaves = {n: exact[n].clone().requires_grad_(case.stage == "bwd") for n in names}
    o_ref, ht_ref = recurrent_gdn2(**leaves, scale=scale, output_final_state=True, **opts)
    args = [low[n] for n in ("q", "k", "v", "g", "b", "w")]
    gate = {"A_log": low.get("A_log"), "dt_bias": low.get("dt_bias")}
    fwd_config = config if case.stage == "fwd" else None
    out = chunk_gdn2_fwd(*args, scale, low["initial_state"], True, None, **opts, **gate,
                         save=case.stage == "bwd", config=fwd_config)
    if device == "cuda":
        torch.cuda.synchronize()
    errors = {"o": rel_rms(out.o, o_ref), "ht": rel_rms(out.final_state, ht_ref)}
    bounds = {"o": tols[kind("o")], "ht": tols[kind("ht")]}
    if case.stage == "bwd":
        gen = torch.Generator().manual_seed(1)
        do = torch.randn(o_ref.shape, generator=gen, dtype=torch.float64)
        dht = torch.randn(ht_ref.shape, generator=gen, dtype=torch.float64)
        expected = torch.autograd.grad((o_ref * do).sum() + (ht_ref * dht).sum(), list(leaves.values()))
        expected = dict(zip(names, expected))
        got = chunk_gdn2_bwd(*args, scale, low["initial_state"], None, out, do.to(device, dtype),
                             dht.to(device, torch.float32), **opts, **gate, config=config)
        if device == "cuda":
            torch.cuda.synchronize()
        got = dict(zip(["q", "k", "v", "g", "b", "w", "initial_state", "A_log", "dt_bias"], got))
        sizes = gate_term_sizes(exact["g"], exact["A_log"], exact["dt_bias"], expected["g"]) if case.gate else {}
        for n in names:
            errors[f"d{n}"] = rel_rms(got[n], expected[n], sizes.get(n))
            bounds[f"d{n}"] = tols[kind(n)]
    return {"errors": errors, "tols": bounds}


def worker(name: str, setting: str, device: str, T: int | None) -> None:
    case = next(c for c in CASES if c.name == name)
    result = run_once(case, setting, device, T or case.shape[1])
    print("RESULT " + json.dumps(result), flush=True)


# ---- the driver: one process per run, the table ----------------------------------------------------------
@dataclass
class Run:
    case: str
    setting: str
    verdict: str = "not run (interrupted)"
    sanitizer: str = "not run"
    san_errors: int = -1          # errors in the sanitizer's summary (-1: no run or no summary)
    in_ours: bool = False         # the sanitizer saw an invalid access inside one of our kernels
    ours_global: bool = False     # ... and one of them to global memory
    failed: bool = False


def verdict(proc: subprocess.CompletedProcess | None, timeout: float) -> tuple[str, bool]:
    """(the run's line, whether it failed) from a worker's exit status and output."""
    if proc is None:
        return f"fault (timeout after {timeout:.0f} s)", True
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if proc.returncode != 0 or line is None:
        status = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit status {proc.returncode}"
        return f"fault ({status} / {error_line(proc.stdout + proc.stderr)})", True
    res = json.loads(line.removeprefix("RESULT "))
    ratio = {n: (e / res["tols"][n] if e == e else float("inf")) for n, e in res["errors"].items()}
    worst = max(ratio, key=ratio.get)
    err = res["errors"][worst]
    if ratio[worst] > 1:
        return f"wrong (rel-RMS {err:.2e} {worst}, bound {res['tols'][worst]:.0e})", True
    return f"ok (rel-RMS {err:.2e} {worst})", False


def error_line(text: str) -> str:
    """The last line naming an error or exception in a failed run's output (shortened), else its last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    named = [ln for ln in lines if re.search(r"(Error|Exception|error:|Aborted|Segmentation)", ln)]
    pick = (named or lines or ["no output"])[-1]
    return pick if len(pick) <= 120 else pick[:117] + "..."


def read_sanitizer(text: str) -> tuple[str, int, bool, bool]:
    """(summary, number of errors or -1 without a summary, whether an invalid access was seen inside one of
    our kernels, whether one of those was to global memory) of memcheck's report."""
    m = re.search(r"ERROR SUMMARY: (\d+) error", text)
    if m is None:
        return "no report (" + error_line(text) + ")", -1, False, False
    n = int(m.group(1))
    if n == 0:
        return "clean", 0, False, False
    found, in_ours, ours_global = [], False, False
    lines = text.splitlines()
    for i, ln in enumerate(lines):
        msg = re.match(r"=+ (Invalid __\w+__ \w+ of size \d+ bytes|Invalid [\w ]+|Out-of-range [\w ]+"
                       r"|Misaligned [\w ]+|Illegal [\w ]+|Warp [\w -]+|Hardware [\w ]+)", ln)
        if msg is None:
            continue
        kernel = next((k.group(1) for k in (re.search(r"^=+\s+at (?:0x[0-9a-f]+ in )?([\w$.]+)", lines[j])
                                             for j in range(i + 1, min(i + 4, len(lines)))) if k), "?")
        kernel = kernel.split("+")[0]
        ours = kernel in OUR_KERNELS
        in_ours |= ours
        ours_global |= ours and "__global__" in msg.group(1)
        item = f"{msg.group(1)} in {kernel}"
        if item not in found:
            found.append(item)
    detail = "; ".join(found[:2]) + (f" (+{len(found) - 2} kinds)" if len(found) > 2 else "")
    return f"{n} error{'s' * (n != 1)}: {detail or 'API errors only'}", n, in_ours, ours_global


def sanitizer_path() -> str | None:
    """compute-sanitizer on PATH, else in the CUDA toolkit that CUDA_HOME or PyTorch points to."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    homes = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    try:
        from torch.utils.cpp_extension import CUDA_HOME
        homes.append(CUDA_HOME)
    except Exception:  # noqa: BLE001 (an optional lookup)
        pass
    for home in filter(None, homes):
        path = Path(home) / "bin" / "compute-sanitizer"
        if path.exists():
            return str(path)
    return None


def launch(case: str, setting: str, args, sanitizer: str | None) -> tuple[subprocess.CompletedProcess | None, float]:
    """Run one worker; (its completed process, or None on timeout; the seconds it took)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", case, setting]
    cmd += ["--cpu"] if args.cpu else []
    cmd += ["--T", str(args.T)] if args.T else []
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if args.cpu:
        env["TRITON_INTERPRET"] = "1"
    limit = args.timeout
    if sanitizer:
        cmd = [sanitizer, "--tool", "memcheck"] + cmd
        env["PYTORCH_NO_CUDA_MEMORY_CACHING"] = "1"
        limit = 2 * args.timeout
    t0 = time.perf_counter()
    if STOP.is_set():
        return None, 0.0
    # a session of its own, so that a timeout or an interrupt ends the worker and the sanitizer's child too
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    LIVE.add(proc)
    try:
        out, err = proc.communicate(timeout=limit)
        done = subprocess.CompletedProcess(cmd, proc.returncode, out, err)
    except subprocess.TimeoutExpired:
        _kill(proc)
        proc.communicate()
        done = None
    finally:
        LIVE.discard(proc)
    return done, time.perf_counter() - t0


#: workers running now, and the flag that stops new ones (the driver was interrupted)
LIVE: set[subprocess.Popen] = set()
STOP = threading.Event()


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_all(jobs: int, fn, keys) -> None:
    """fn(key) for every key, ``jobs`` at a time; on an interrupt (a step's time limit sends SIGINT) the
    running workers are killed and no new one starts, so the table of what finished is still written."""
    pool = ThreadPoolExecutor(jobs)
    try:
        list(pool.map(fn, keys))
    except KeyboardInterrupt:
        STOP.set()
        for proc in list(LIVE):
            _kill(proc)
        print("-- interrupted: the runs not finished are marked so", flush=True)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def describe(config) -> str:
    """A config as the fields that differ from its class's defaults: ForwardConfig(state=StateLaunch(BKH=256))."""
    parts = []
    for f in fields(config):
        value, default = getattr(config, f.name), getattr(type(config)(), f.name)
        if value != default:
            parts.append(f"{f.name}={describe(value) if is_dataclass(value) else repr(value)}")
    return f"{type(config).__name__}({', '.join(parts)})"


def conclusion(avoided: Run, default: Run, sanitized: bool, interpreter: bool) -> str:
    """What a case's two runs (and their sanitizer reports) say about its workaround."""
    if avoided.verdict.startswith("not run") or default.verdict.startswith("not run"):
        return "not finished (interrupted)"
    if default.failed:
        return "THE DEFAULT FAILS: a bug of ours or a new fault (run the test suite)"
    if interpreter:
        return ("both right in the interpreter, as expected" if not avoided.failed else
                "THE AVOIDED SETTING FAILS IN THE INTERPRETER: a bug of ours, not of the compiler")
    if default.san_errors > 0:
        return "the default is right but the sanitizer reports errors in it: a bug of ours or a new fault"
    if not (avoided.failed or avoided.san_errors > 0):
        return "not reproduced at this shape with this Triton (the workaround stays until shown unneeded at scale)"
    if not sanitized:
        return "the avoided setting fails and the default is right (--sanitizer attributes the fault)"
    if avoided.ours_global:
        return "invalid global access inside our kernel: check its masks and offsets"
    if avoided.san_errors < 0:
        return "the avoided setting fails and the default is right; the sanitizer gave no report"
    if avoided.san_errors > 0 and not avoided.in_ours:
        return "the sanitizer's errors are outside our kernels (its report is in this script's output)"
    return ("a fault in Triton's compiler, not an out-of-bounds access of ours"
            + ("" if avoided.failed else " (right results, but invalid accesses)"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run in Triton's CPU interpreter (checks this script)")
    ap.add_argument("--sanitizer", action="store_true", help="also run each case under compute-sanitizer memcheck")
    ap.add_argument("--case", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--list", action="store_true", help="print the cases and exit")
    ap.add_argument("--T", type=int, default=0, help="sequence length of every case (default: each case's own)")
    ap.add_argument("--jobs", type=int, default=0, help="runs at once (default: 1 with --cpu, else up to 8)")
    ap.add_argument("--timeout", type=float, default=120, help="seconds per run (twice that under the sanitizer)")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"), help="folder of the table")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "SETTING"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(*args.worker, "cpu" if args.cpu else "cuda", args.T or None)
        return
    if args.list:
        for c in CASES:
            print(f"{c.name:24} {c.stage} {c.dtype} B,T,H,HV,K,V={c.shape}  avoided: {describe(c.avoided)}")
        return
    wanted = [n for n in args.case.split(",") if n]
    unknown = set(wanted) - {c.name for c in CASES}
    if unknown:
        sys.exit(f"unknown case(s) {sorted(unknown)}; --list shows them")
    cases = [c for c in CASES if not wanted or c.name in wanted]

    import triton

    if args.cpu:
        card = "CPU interpreter"
    elif torch.cuda.is_available():
        card = torch.cuda.get_device_name()
    else:
        sys.exit("no CUDA GPU visible: run with --cpu to check the script in Triton's interpreter")
    sanitizer = None
    if args.sanitizer:                  # with --cpu too: it then finds no CUDA code to check
        sanitizer = sanitizer_path()
        if sanitizer is None:
            print("compute-sanitizer not found (PATH, CUDA_HOME): running without it", flush=True)
    jobs = args.jobs or (1 if args.cpu else max(1, min(8, (os.cpu_count() or 2) // 2)))
    t_start = time.perf_counter()
    # a step's time limit interrupts this driver (SIGINT, or TERM): handled even where the shell that
    # started it ignores SIGINT (a background job), so the workers are ended and the table is written
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    runs = {(c.name, s): Run(c.name, s) for c in cases for s in ("avoided", "default")}

    def plain(key):
        proc, secs = launch(*key, args, None)
        if STOP.is_set():
            return
        run = runs[key]
        run.verdict, run.failed = verdict(proc, args.timeout)
        text = f"  {key[0]:24} {key[1]:8} {run.verdict}  [{secs:.0f} s]"
        if run.failed and proc is not None:           # the evidence, for the log (the table keeps one line)
            text += "".join(f"\n      | {ln}" for ln in (proc.stdout + proc.stderr).splitlines()[-15:])
        print(text, flush=True)

    def checked(key):
        proc, secs = launch(*key, args, sanitizer)
        if STOP.is_set():
            return
        run = runs[key]
        if proc is None:
            run.sanitizer = f"timeout after {2 * args.timeout:.0f} s"
        else:
            run.sanitizer, run.san_errors, run.in_ours, run.ours_global = read_sanitizer(proc.stdout + proc.stderr)
        text = f"  {key[0]:24} {key[1]:8} sanitizer: {run.sanitizer}  [{secs:.0f} s]"
        if run.san_errors > 0:                         # the report's first lines, for the log
            report = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("=====")]
            text += "".join(f"\n      | {ln}" for ln in report[:30])
        print(text, flush=True)

    header = [f"# Triton faults the backend works around: {card}",
              f"# Triton {triton.__version__}, torch {torch.__version__}, "
              f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
              f"python benchmarks/triton_faults.py {' '.join(sys.argv[1:])}".rstrip()]
    if args.cpu:
        header.append("# interpreter: bfloat16 cases run in float16 (its tl.dot is wrong on bfloat16)")
    print("\n".join(header), flush=True)
    print(f"-- {len(runs)} runs, {jobs} at a time", flush=True)
    run_all(jobs, plain, runs)
    if sanitizer and not STOP.is_set():
        print("-- the same runs under compute-sanitizer memcheck", flush=True)
        run_all(jobs, checked, runs)

    width = max(len(r.verdict) for r in runs.values())
    table = list(header) + [""]
    for c in cases:
        a, d = runs[(c.name, "avoided")], runs[(c.name, "default")]
        B, T, H, HV, K, V = c.shape
        T = args.T or T
        table.append(f"{c.name}  ({c.stage}, {c.dtype}, B={B} T={T} H={H} HV={HV} K={K} V={V})")
        for run, cfg in ((a, c.avoided), (d, c.default)):
            san = f"   sanitizer: {run.sanitizer}" if sanitizer else ""
            table.append(f"  {run.setting:8} {run.verdict:{width}}{san}".rstrip())
            table.append(f"           {describe(cfg)}")
        table.append(f"  => {conclusion(a, d, sanitizer is not None, args.cpu)}")
        table.append("")
    table.append(f"# {time.perf_counter() - t_start:.0f} s" + (", interrupted" if STOP.is_set() else ""))
    text = "\n".join(table) + "\n"
    print("\n" + text, end="")
    path = Path(args.out) / f"triton-faults-{card.replace(' ', '_')}.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
