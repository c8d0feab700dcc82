"""The contract fuzzer (tests/contract_fuzz.py) in a subprocess, so that a crash (an out-of-bounds access
that kills the interpreter) fails the test instead of the run."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gdn2.fast

from gdn2_testing import gpu

HERE = Path(__file__).resolve().parent

pytestmark = pytest.mark.skipif(gdn2.fast.unavailable_reason() is not None,
                                reason=str(gdn2.fast.unavailable_reason()))


def fuzz(examples: int, seed: int, device: str) -> None:
    env = dict(os.environ)
    if device == "cpu":
        env["TRITON_INTERPRET"] = "1"
        if torch.cuda.is_available():   # the interpreter was not checked by this process's skip mark
            probe = "import gdn2.fast; print(gdn2.fast.unavailable_reason())"
            reason = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                                    check=True).stdout.strip()
            if reason != "None":
                pytest.skip(reason)
    done = subprocess.run([sys.executable, "-W", "ignore", str(HERE / "contract_fuzz.py"), "--examples", str(examples),
                           "--seed", str(seed), "--device", device], capture_output=True, text=True, env=env,
                          timeout=1200)
    assert done.returncode == 0, f"exit status {done.returncode}\n{done.stdout[-3000:]}\n{done.stderr[-6000:]}"
    assert "all agreed" in done.stdout


def test_contract_fuzzer_cpu(seeded):
    """Reference and Triton (interpreter) on random calls, valid and not: same error class or agreement."""
    fuzz(40, seeded % 2**31, "cpu")


@pytest.mark.gpu
@gpu
def test_gpu_contract_fuzzer(seeded):
    fuzz(60, seeded % 2**31, "cuda")


def test_fuzzer_draws_each_edge():
    """The fuzzer's strategy reaches every kind of bad input it claims to (a fixed draw of 300 calls:
    a random one would miss a rare kind now and then)."""
    sys.path.insert(0, str(HERE))
    import contract_fuzz
    from hypothesis import HealthCheck, given, settings

    seen = set()

    @settings(max_examples=300, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(contract_fuzz.calls("cpu"))
    def collect(call):
        what = call[3]
        seen.update(part for part in what.split() if "=" in part)
        seen.add(str(call[2]))

    collect()
    for edge in contract_fuzz.G_EDGES:
        assert f"g={edge}" in seen, edge
    for bad in contract_fuzz.NONFINITE:
        assert f"bad={bad}" in seen, bad
    for brk in contract_fuzz.BREAKS[1:]:
        assert any(s.startswith("packed=True/" + brk) for s in seen), brk
    assert {str(torch.float32), str(torch.float16), str(torch.bfloat16)} <= seen
