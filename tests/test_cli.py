"""The ``gdn2`` command line: ``check`` prints the tolerance table and exits 0 (non-zero on a failure),
``train`` shows progress and a dropping loss, ``generate`` samples from a saved model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gdn2 import cli
from gdn2.check import Row


def run_gdn2(*args: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gdn2", *args], capture_output=True, text=True, timeout=timeout,
                          env=env)


def test_check_exits_0_and_prints_the_table():
    """The command as a user runs it (no interpreter flag): every registered backend is either checked or
    listed with the reason it cannot run here."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = run_gdn2("check", env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = proc.stdout
    header = out.splitlines()[0].split()
    assert header == ["backend", "op", "shape", "dtype", "quantity", "rel-RMS", "err", "tol", "ok"]
    for needle in ("chunk_gdn2", "fused_recurrent_gdn2", "float64", "float32", "-gva", "-varlen", "dh0",
                   "ddt_bias", "B2-T65"):
        assert needle in out, needle
    assert "FAIL" not in out and "checks passed" in out
    triton_listed = any(line.startswith("triton ") for line in out.splitlines()) or "'triton' unavailable:" in out
    assert triton_listed


def test_check_fails_loudly(monkeypatch, capsys):
    bad = Row("reference", "chunk_gdn2", "B1-T1", "float32", "o", 1.0, 1e-5)
    nan = Row("reference", "chunk_gdn2", "B1-T1", "float32", "ht", float("nan"), 1e-5)
    monkeypatch.setattr("gdn2.check.run_check", lambda *a, **k: ([bad, nan], {"triton": "no GPU"}))
    assert cli.main(["check"]) == 1
    out = capsys.readouterr().out
    assert sum(line.endswith("FAIL") for line in out.splitlines()) == 2 and "2 FAILED" in out
    assert "'triton' unavailable: no GPU" in out


def test_check_rejects_an_unknown_backend(capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main(["check", "--backend", "cuda"])
    assert stop.value.code == 2
    assert "registered backends: reference, triton" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    pytest.param(["train", "--backend", "nope"], "unknown backend 'nope'", id="unknown-backend"),
    pytest.param(["train", "--steps", "0"], "--steps: expected a positive int", id="steps-0"),
    pytest.param(["train", "--lr", "-1"], "--lr: expected a positive float", id="negative-lr"),
    pytest.param(["train", "--swa-layers", "7"], "swa_layers", id="swa-layer-out-of-range"),
    pytest.param(["generate", "no-such-file.pt"], "no file no-such-file.pt", id="missing-checkpoint"),
    pytest.param(["train", "--device", "tpu"], "--device", id="unknown-device"),
    # these ran the whole training before failing with a traceback (or at its start, for --threads)
    pytest.param(["train", "--threads", "-1"], "--threads: expected a non-negative int", id="threads-negative"),
    pytest.param(["train", "--sample-tokens", "-1"], "--sample-tokens: expected a non-negative int",
                 id="sample-tokens-negative"),
    pytest.param(["train", "--prompt", ""], "prompt must be a non-empty str", id="empty-prompt"),
])
def test_command_line_mistakes_are_one_line_errors(args, message):
    """A mistake is one line on stderr and exit status 2, never a traceback."""
    proc = run_gdn2(*args, "--no-progress" if args[0] == "train" else "--tokens=1", timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-2000:]


def test_train_refuses_cuda_without_a_gpu_and_a_missing_save_folder_before_training(tmp_path):
    proc = run_gdn2("train", "--save", str(tmp_path / "missing" / "lm.pt"), "--steps", "100000", timeout=60)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    import torch

    if not torch.cuda.is_available():
        proc = run_gdn2("train", "--device", "cuda", timeout=60)
        assert proc.returncode == 2 and "no CUDA GPU is visible" in proc.stderr


def test_train_help_shows_the_defaults_of_train_config():
    from gdn2.train import TrainConfig

    out = run_gdn2("train", "--help").stdout.split("options:", 1)[1]
    defaults = TrainConfig()
    for flag, value in (("--steps", defaults.steps), ("--batch-size", defaults.batch_size),
                        ("--seq-len", defaults.seq_len), ("--lr", defaults.lr)):
        line = " ".join(out.split(flag, 1)[1].split("--", 1)[0].split())
        assert f"(default: {value})" in line, (flag, line)


def test_train_then_generate(tmp_path, capsys):
    ckpt = tmp_path / "lm.pt"
    code = cli.main(["train", "--steps", "10", "--batch-size", "4", "--seq-len", "64", "--hidden-size", "32",
                     "--head-dim", "8", "--swa-layers", "1", "--sample-tokens", "8", "--backend", "reference",
                     "--save", str(ckpt)])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert "train:" in captured.err and "10/10" in captured.err          # the tqdm progress bar
    assert "val loss" in captured.out and "sample:" in captured.out and ckpt.exists()
    assert cli.main(["generate", str(ckpt), "--tokens", "12", "--prompt", "It was", "--backend", "reference"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("It was") and len(text.rstrip("\n").encode()) >= 6


def test_console_script_and_module_entry_point():
    script = Path(sys.executable).parent / "gdn2"
    assert script.exists(), "the [project.scripts] entry point gdn2 is not installed"
    for cmd in ([str(script), "--help"], [sys.executable, "-m", "gdn2", "--help"]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and all(c in proc.stdout for c in ("check", "train", "generate"))


def test_check_covers_bfloat16_and_says_what_it_skips():
    """gdn2 check runs the reference in bfloat16 too, and names the dtypes it cannot check here and why."""
    from gdn2.check import _dtypes, format_table

    assert torch_bf16() in _dtypes("reference", "cpu")[0]
    dtypes, skipped = _dtypes("triton", "cpu")
    assert torch_bf16() not in dtypes and "interpreter" in skipped["bfloat16"]
    assert torch_bf16() in _dtypes("triton", "cuda")[0]
    table = format_table([], {"triton bfloat16": skipped["bfloat16"]})
    assert "skipped triton bfloat16: Triton's CPU interpreter" in table


def torch_bf16():
    import torch

    return torch.bfloat16
