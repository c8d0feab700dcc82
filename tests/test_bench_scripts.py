"""The GPU scripts under benchmarks/ run their host code on the CPU, so a GPU call does not find an API
change first: each benchmark's dry run (Triton's interpreter, tiny shapes), one fault reproducer in
the interpreter, the reading of compute-sanitizer's report, and every command gpu_session.sh would
run (with python3 and nvidia-smi replaced by stand-ins that print their arguments)."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"


def run(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=timeout,
                          env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def bench_module(name: str):
    """``benchmarks/<name>.py`` as a module (its imports of sibling scripts resolved)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    return module


@pytest.mark.parametrize("script,args", [
    ("bench.py", ["--shapes", "2x64", "--profile"]),
    ("bench_train.py", ["--mode", "fwdbwd", "--shapes", "2x64"]),
    ("bench_train.py", ["--mode", "lm", "--lm-steps", "1"]),
], ids=["fwd", "train-fwdbwd", "train-lm"])
def test_benchmark_dry_run(script, args, tmp_path):
    out = run(sys.executable, str(BENCH / script), "--dry-run", "--no-peer", "--out", str(tmp_path), *args).stdout
    assert "wrote" in out
    csvs = list(tmp_path.glob("*-CPU_interpreter.csv"))
    assert len(csvs) == 1 and len(csvs[0].read_text().splitlines()) >= 2, out


def test_decode_benchmark_parses_its_arguments():
    assert "--dry-run" in run(sys.executable, str(BENCH / "bench_decode.py"), "--help").stdout


def test_fault_reproducer_in_the_interpreter(tmp_path):
    out = run(sys.executable, str(BENCH / "triton_faults.py"), "--cpu", "--case", "bwd-tf32x3-K16",
              "--out", str(tmp_path)).stdout
    table = (tmp_path / "triton-faults-CPU_interpreter.txt").read_text()
    assert table in out
    assert re.search(r"avoided +ok \(rel-RMS", table) and re.search(r"default +ok \(rel-RMS", table)
    assert "=> both right in the interpreter, as expected" in table


def test_fault_reproducer_cases_are_valid_configs():
    faults = bench_module("triton_faults")
    names = [c.name for c in faults.CASES]
    assert len(names) == len(set(names))
    for case in faults.CASES:
        assert case.avoided != case.default, case.name
        assert type(case.avoided) is type(case.default)
        assert faults.describe(case.avoided) != faults.describe(case.default)


def test_sanitizer_report_and_verdicts():
    faults = bench_module("triton_faults")
    report = "\n".join([
        "========= COMPUTE-SANITIZER",
        "========= Invalid __shared__ read of size 16 bytes",
        "=========     at chunk_state_output_fwd_kernel+0x1b40",
        "=========     by thread (64,0,0) in block (0,1,0)",
        "========= Invalid __global__ write of size 4 bytes",
        "=========     at 0x3a0 in chunk_bwd_local_wy_kernel",
        "========= Program hit cudaErrorLaunchFailure (error 719) on CUDA API call to cuStreamSynchronize.",
        "========= ERROR SUMMARY: 3 errors",
    ])
    summary, n, in_ours, ours_global = faults.read_sanitizer(report)
    assert n == 3 and in_ours and ours_global
    assert "Invalid __shared__ read of size 16 bytes in chunk_state_output_fwd_kernel" in summary
    assert faults.read_sanitizer("========= ERROR SUMMARY: 0 errors") == ("clean", 0, False, False)
    assert faults.read_sanitizer("compute-sanitizer: bad option")[1] == -1
    shared_only = report.replace("__global__", "__shared__")
    assert faults.read_sanitizer(shared_only)[2:] == (True, False)

    done = lambda rc, out="", err="": subprocess.CompletedProcess([], rc, out, err)  # noqa: E731
    ok = 'RESULT {"errors": {"o": 0.001, "dq": 1e-6}, "tols": {"o": 0.01, "dq": 5e-5}}'
    assert faults.verdict(done(0, ok), 1) == ("ok (rel-RMS 1.00e-03 o)", False)
    wrong = 'RESULT {"errors": {"o": 0.001, "dq": 1.1}, "tols": {"o": 0.01, "dq": 5e-5}}'
    assert faults.verdict(done(0, wrong), 1)[0].startswith("wrong (rel-RMS 1.10e+00 dq")
    nan = 'RESULT {"errors": {"o": NaN}, "tols": {"o": 0.01}}'
    assert faults.verdict(done(0, nan), 1)[0].startswith("wrong (rel-RMS nan o")
    crash = done(1, err="Traceback\nRuntimeError: Triton Error [CUDA]: an illegal memory access was encountered\n")
    assert faults.verdict(crash, 1) == (
        "fault (exit status 1 / RuntimeError: Triton Error [CUDA]: an illegal memory access was encountered)", True)
    assert faults.verdict(done(-6, err="Aborted"), 1)[0] == "fault (signal 6 / Aborted)"
    assert faults.verdict(None, 7)[0] == "fault (timeout after 7 s)"

    Run = faults.Run
    right = Run("c", "default", verdict="ok", san_errors=0)
    compiler = Run("c", "avoided", verdict="fault", failed=True, san_errors=1, in_ours=True)
    assert faults.conclusion(compiler, right, True, False) == \
        "a fault in Triton's compiler, not an out-of-bounds access of ours"
    ours = Run("c", "avoided", verdict="fault", failed=True, san_errors=1, in_ours=True, ours_global=True)
    assert faults.conclusion(ours, right, True, False).startswith("invalid global access inside our kernel")
    assert faults.conclusion(Run("c", "avoided", verdict="ok", san_errors=0), right, True, False).startswith(
        "not reproduced")
    assert faults.conclusion(compiler, Run("c", "default", verdict="wrong", failed=True), True, False).startswith(
        "THE DEFAULT FAILS")


def test_gpu_session_commands_name_existing_files(tmp_path):
    """Every command of every step, run with stand-ins for python3 and nvidia-smi: the scripts and test
    files they name exist (the optional ones are skipped where absent), and an unknown step stops the
    script before anything runs."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, body in (("python3", 'echo "ARGS $*"'), ("nvidia-smi", "echo NVIDIA H200")):
        (bin_dir / name).write_text(f"#!/usr/bin/env bash\n{body}\n")
        (bin_dir / name).chmod(0o755)
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "OUT": str(tmp_path / "out")}
    steps = ["tests", "faults", "bench-fwd@1x16384", "bench-decode", "bench-train", "stages", "lm",
             "warm", "bench-layer", "variants", "conv", "bench-lm"]
    out = run("bash", str(BENCH / "gpu_session.sh"), *steps, env=env).stdout
    logs = sorted((tmp_path / "out").glob("*.log"))
    words = [w for log in logs for line in log.read_text().splitlines() if line.startswith("ARGS ")
             for w in line.split()[1:]]
    named = [w for w in words if w.endswith(".py")]
    assert {"tests/test_fast_forward.py", "tests/test_fast_intra.py", "tests/test_contract_fuzz.py",
            "benchmarks/triton_faults.py", "benchmarks/bench.py", "benchmarks/bench_decode.py",
            "benchmarks/bench_train.py", "benchmarks/bench_layer.py", "benchmarks/bench_conv.py"} <= set(named)
    assert any("--warm" in log.read_text() for log in logs)
    assert any("--variants" in log.read_text() for log in logs)
    for path in named:
        assert (ROOT / path).is_file(), f"gpu_session.sh names {path}, which does not exist"
    assert "--shapes 1x16384" in " ".join(words)
    for script in ("bench_layer.py", "bench_lm.py"):
        assert (BENCH / script).exists() or f"benchmarks/{script} does not exist" in out
    bad = subprocess.run(["bash", str(BENCH / "gpu_session.sh"), "faults", "no-such-step"], capture_output=True,
                         text=True, env={**os.environ, **env, "OUT": str(tmp_path / "bad")})
    assert bad.returncode == 2 and "unknown step 'no-such-step'" in bad.stdout
    assert not list((tmp_path / "bad").glob("*.log"))


def test_resource_usage_compiles_every_kernel_for_sm90(tmp_path):
    """resources.py compiles every kernel of the layer and the operator for an sm_90 GPU without one
    (the host code and Triton's NVIDIA compiler, not the interpreter) and reads registers, stack and
    SASS from the cubins: every kernel of both backward and forward appears, within the register file."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(BENCH / "resources.py"), "--batch", "1", "--seq-len", "16",
                           "--out", str(tmp_path)], capture_output=True, text=True, cwd=ROOT, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import csv

    (path,) = tmp_path.glob("resources-sm90-triton*.csv")
    rows = list(csv.DictReader(path.open()))
    (signs_path,) = tmp_path.glob("resources-sass-sm90-triton*.csv")
    signs = list(csv.DictReader(signs_path.open()))
    assert [(r["call"], r["kernel"]) for r in signs] == [(r["call"], r["kernel"]) for r in rows]
    kernels = {r["kernel"] for r in rows}
    assert {"chunk_intra_diag_kernel", "chunk_intra_offdiag_kernel", "chunk_wy_fwd_kernel",
            "chunk_state_output_fwd_kernel", "chunk_bwd_state_kernel", "chunk_bwd_local_wy_kernel",
            "chunk_bwd_local_pairwise_kernel", "fused_recurrent_fwd_kernel", "short_conv_fwd_kernel",
            "short_conv_bwd_kernel", "short_conv_step_kernel", "gated_rms_norm_fwd_kernel",
            "gated_rms_norm_bwd_kernel"} <= kernels
    for r in rows:
        assert 0 < int(r["registers"]) <= 255 and int(r["stack_bytes"]) >= 0 and int(r["shared_bytes"]) >= 0
        assert 0 <= int(r["barriers"]) < int(r["sass_instructions"])
    assert all(int(r["loads_after_stores"]) >= 0 and int(r["calls"]) >= 0 for r in signs)
    # the layer's short convolution finds each program's sequence without a 64-bit division per row
    assert all(r["calls"] == "0" for r in signs if r["kernel"] == "short_conv_fwd_kernel")


def test_launch_variants_change_only_the_named_default(monkeypatch):
    """``resources.py --set bwd.pairwise.num_warps=8`` and ``bench_layer.py --variants`` change what
    ``BackwardConfig()`` holds for that stage and field only, and ``recompute=`` the mode the layer's
    operator runs, over the one the layer passes; the drivers' defaults return after the block; a misspelt
    stage or field is an error that applies nothing."""
    launch_defaults = bench_module("launch_defaults")
    from gdn2.fast import layer
    from gdn2.fast.config import BackwardConfig, ForwardConfig

    calls = []
    monkeypatch.setattr(layer, "chunk_gdn2", lambda *args, **kwargs: calls.append(kwargs))
    before_b, before_f, before_op = BackwardConfig(), ForwardConfig(), layer.chunk_gdn2
    with launch_defaults.overridden(["bwd.pairwise.num_warps=8", "fwd.wy.BK=32", "recompute=True"]) as label:
        assert label == "bwd.pairwise.num_warps=8, fwd.wy.BK=32, recompute=True"
        after = BackwardConfig()
        assert after.pairwise.num_warps == 8 and after.local_wy == before_b.local_wy and after.state == before_b.state
        assert ForwardConfig().wy.BK == 32 and ForwardConfig().state == before_f.state
        layer.chunk_gdn2("q", recompute="partial", cu_seqlens=None)          # as the layer calls it
        assert calls == [{"recompute": True, "cu_seqlens": None}]
    assert BackwardConfig() == before_b and ForwardConfig() == before_f and layer.chunk_gdn2 is before_op
    for bad, err in ((["fwd.wy.BK=32", "bwd.pairwise.num_warp=8"], TypeError),
                     (["bwd.pairwse.num_warps=8"], ValueError), (["bwd.state.BV=48"], ValueError),
                     (["recompute=sometimes"], ValueError), (["fwd.wy.BK"], ValueError),
                     (["conv.fwd.BT=64", "conv.fwd.BX=64"], TypeError), (["conv.mid.BT=64"], ValueError),
                     (["conv.bwd.BD=48"], ValueError)):
        with pytest.raises(err), launch_defaults.overridden(bad):
            pass
        assert ForwardConfig() == before_f and BackwardConfig() == before_b


def test_conv_launch_variants_replace_fields_of_the_rule():
    """``conv.fwd.BT=64+conv.bwd.num_warps=2`` changes those fields of what the short convolution's launch
    rules pick for each call and keeps the rest; the layer's convolution runs under it (its output
    unchanged), and the rules return after the block."""
    import dataclasses

    import torch

    launch_defaults = bench_module("launch_defaults")
    from gdn2.fast import conv

    class Recorded:
        """The forward kernel, recording each launch's grid."""

        def __init__(self, kernel):
            self.kernel, self.grids = kernel, []

        def __getitem__(self, grid):
            self.grids.append(grid)
            return self.kernel[grid]

    rule_f, rule_b = conv.fwd_launch, conv.bwd_launch
    dev = torch.device("cpu")
    x, weight = torch.randn(2, 40, 24), torch.randn(24, 4)
    y0 = conv.short_conv(x, weight)[0]
    with launch_defaults.overridden(["conv.fwd.BT=64", "conv.bwd.num_warps=2"]) as label:
        assert label == "conv.fwd.BT=64, conv.bwd.num_warps=2"
        assert conv.fwd_launch(2048) == dataclasses.replace(rule_f(2048), BT=64)
        assert conv.fwd_launch(24) == dataclasses.replace(rule_f(24), BT=64)      # the rule's BD for 24 channels
        assert conv.bwd_launch(80, 24, 4, dev) == dataclasses.replace(rule_b(80, 24, 4, dev), num_warps=2)
        recorded = Recorded(conv.short_conv_fwd_kernel)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(conv, "short_conv_fwd_kernel", recorded)
            y1 = conv.short_conv(x, weight)[0]
        assert recorded.grids == [(2, 1)]       # two sequences of 40 tokens, a tile of 64 each (the rule's 32: two)
        assert torch.equal(y0, y1)
    assert conv.fwd_launch is rule_f and conv.bwd_launch is rule_b


def test_layer_variants_are_valid_settings():
    """Every variant ``bench_layer.py --variants`` times by default parses and applies (a typo would cost
    a device call)."""
    bench_layer = bench_module("bench_layer")
    launch_defaults = bench_module("launch_defaults")
    assert bench_layer.VARIANTS[0] == "" and len(set(bench_layer.VARIANTS)) == len(bench_layer.VARIANTS)
    launch_defaults.validate(list(bench_layer.VARIANTS))
    with pytest.raises(ValueError):
        launch_defaults.validate(["", "recompute=sometimes"])


def test_layer_profile_rows():
    """The layer profile's categories and shares: kernels sorted by name (the peer's l2norm is mixing, a
    norm named rmsnorm is not; unknown kernels are "other"), and the forward's ``idle`` = the timed call
    less its device time, its shares of that call (idle not below 0 when the profiler's sum exceeds it)."""
    from types import SimpleNamespace as E

    bench_layer = bench_module("bench_layer")
    times = {"chunk_wy_fwd_kernel": 3000.0, "l2norm_fwd_kernel": 1000.0, "sm90_xmma_gemm_bf16": 4000.0,
             "gated_rms_norm_fwd_kernel": 500.0, "short_conv_fwd_kernel": 1000.0, "elementwise_kernel": 500.0,
             "cudaLaunchKernel": 0.0}
    events = [E(key=k, device_time_total=us) for k, us in times.items()]
    totals = bench_layer.categorise(events, steps=5)
    assert totals == {"mixing kernels": 0.8, "GEMMs": 0.8, "gated norm": 0.1, "short convolution": 0.2,
                      "other": 0.1}
    train = bench_layer.profile_share_rows("ours", totals, "card", "8x2048")
    assert [r["mode"] for r in train] == ["profile"] * 5 and "ours:idle" not in {r["impl"] for r in train}
    assert sum(r["share"] for r in train) == pytest.approx(1.0, abs=1e-3)
    fwd = {r["impl"]: r for r in bench_layer.profile_share_rows("ours", totals, "card", "8x2048", wall_ms=2.5)}
    assert fwd["ours:idle"]["ms"] == pytest.approx(0.5) and fwd["ours:idle"]["share"] == pytest.approx(0.2)
    assert fwd["ours:GEMMs"]["share"] == pytest.approx(0.32) and fwd["ours:GEMMs"]["mode"] == "profile-fwd"
    short = {r["impl"]: r for r in bench_layer.profile_share_rows("ours", totals, "card", "8x2048", wall_ms=1.5)}
    assert short["ours:idle"]["ms"] == 0.0 and sum(r["share"] for r in short.values()) == pytest.approx(1.0, abs=1e-3)


def test_lm_benchmark_peer_mixer_takes_what_a_block_passes():
    """bench_lm.py puts the peer's layer behind the mixer interface of gdn2's blocks: it must accept the
    arguments ``Block.forward`` passes a mixer (a GPU run found out too late otherwise)."""
    import inspect

    import torch

    import gdn2

    bench_lm = bench_module("bench_lm")
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, *args, **kwargs):
            calls.append((args, kwargs))
            return args[0]

    lm = gdn2.GDN2LM(gdn2.GDN2LMConfig(num_layers=1, hidden_size=16, num_heads=2, head_dim=8, swa_layers=()))
    lm.blocks[0].mixer = Recorder()
    lm(torch.randint(0, 256, (1, 5)), cu_seqlens=torch.tensor([0, 2, 5]))
    args, kwargs = calls[0]
    inspect.signature(bench_lm.PeerMixer.forward).bind(None, *args, **kwargs)


PRECOMPILE_PROBE = """
import sys
sys.path.insert(0, sys.argv[1])
import torch, triton, triton.language as tl
from triton.runtime.autotuner import Autotuner
from triton.runtime.driver import driver
import precompile, resources

driver.set_active(resources.CompileOnlyDriver(90))


@triton.autotune(configs=[triton.Config({}, num_warps=w) for w in (1, 2, 4, 8)], key=["n"])
@triton.jit
def add_one(x, n, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    tl.store(x + o, tl.load(x + o, mask=o < n) + 1, mask=o < n)


original = Autotuner.run
x = torch.zeros(64)
for rank in (0, 1):
    with resources.Recorder() as rec, precompile.candidates_compiled(rank, 2) as counts:
        add_one[(1,)](x, 64, BLOCK=64)
    warps = [k.metadata.num_warps for _, k in rec.launches]
    print(rank, counts["compiled"], counts["failed"], *warps)
assert Autotuner.run is original
"""


def test_precompile_shares_the_candidates_among_processes(tmp_path):
    """Under ``candidates_compiled(rank, 2)`` an autotuned launch compiles (for sm_90, without a GPU)
    candidates rank, rank + 2 of four, then runs the first candidate; the autotuner is restored after."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["TRITON_CACHE_DIR"] = str(tmp_path / "cache")
    probe = tmp_path / "probe.py"
    probe.write_text(PRECOMPILE_PROBE)
    proc = subprocess.run([sys.executable, str(probe), str(BENCH)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    lines = proc.stdout.split("\n")
    assert "0 2 0 1 4 1" in lines and "1 2 0 2 8 1" in lines, proc.stdout


def test_precompile_spawn_runs_every_rank(tmp_path):
    """``spawn`` runs the command once per rank with ``--precompile-rank r/N`` and prints each one's last line."""
    precompile = bench_module("precompile")
    script = tmp_path / "probe.py"
    script.write_text("import sys\nprint('started')\nprint('ran', *sys.argv[1:])\n")
    with pytest.raises(ValueError, match="rank"):
        with precompile.candidates_compiled(2, 2):
            pass
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        precompile.spawn([str(script), "--warm"], 3, str(tmp_path / "logs"))
    out = buf.getvalue()
    for r in range(3):
        assert f"ran --warm --precompile-rank {r}/3" in out
        assert (tmp_path / "logs" / f"precompile-{r}.log").read_text().startswith("started")
    assert "precompiled in 3 processes" in out and "failed" not in out
