"""The examples run as a user runs them, and what they print as checks holds."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_quickstart_checks_hold():
    """Every "…: True/False" line the quickstart prints is True (padding, packed documents, decoding)."""
    out = run("examples/quickstart.py")
    checks = [line for line in out.splitlines() if line.endswith((": True", ": False"))]
    assert len(checks) == 3 and all(line.endswith(": True") for line in checks), out


def test_hybrid_lm_trains_and_generates():
    """Two training steps lower the validation loss, then it samples and reports its decoding state."""
    out = run("examples/hybrid_lm.py", "--steps", "2")
    line = next(line for line in out.splitlines() if line.startswith("val loss"))
    before, after = (float(w) for w in line.split()[2:5:2])
    assert after < before and "decoding state after" in out, out
