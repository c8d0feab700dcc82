"""The launch settings the forward picks fit an H200's shared memory (232448 B per block), checked without
a GPU: in a subprocess without the interpreter, the host code runs on CPU tensors with Triton's launcher
replaced by a recorder, and each recorded launch is compiled for sm_90a with the specialisation a GPU
launch of its arguments gets (tests/launch_check.py). A GPU reports the same numbers only at run time, as
``OutOfResources``."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from launch_check import SMEM_LIMIT

ROOT = Path(__file__).resolve().parents[1]
FWD = ("chunk_intra_diag_kernel", "chunk_intra_offdiag_kernel", "chunk_wy_fwd_kernel", "chunk_state_output_fwd_kernel")


@pytest.mark.parametrize(
    "K,V,dtype,save,state_config,kernels",
    [
        pytest.param(160, 16, "fp32", False, None, FWD[3:], id="K160-fp32-state"),
        pytest.param(160, 16, "fp32", True, None, FWD[3:], id="K160-fp32-save-state"),
        pytest.param(256, 256, "bf16", True, None, FWD[3:], id="K256-bf16-save-state"),
        pytest.param(128, 128, "bf16", True, dict(BV=128, num_warps=8), FWD[3:], id="K128-bf16-save-state-BV128"),
        pytest.param(128, 128, "bf16", False, None, FWD, id="K128-bf16-intra-and-state"),
        # three stages at the narrow widths that few sequences take (chunk_fwd._state_stages),
        # saving: their largest launches
        pytest.param(128, 128, "bf16", True, dict(BV=16, num_stages=3), FWD[3:], id="K128-save-BV16-3-stages"),
        pytest.param(128, 128, "bf16", True, dict(BV=32, num_stages=3), FWD[3:], id="K128-save-BV32-3-stages"),
    ],
)
def test_forward_launches_fit_h200_shared_memory(K, V, dtype, save, state_config, kernels):
    shared = shared_in_subprocess(K, V, dtype, save, state_config, kernels)
    assert set(shared) == set(kernels), shared          # every kernel named was launched (and compiled)
    for name, nbytes in shared.items():
        assert nbytes <= SMEM_LIMIT, (name, nbytes)


@pytest.mark.parametrize("dtype,save", [("bf16", True), ("fp32", False)], ids=["bf16-save", "fp32"])
def test_the_state_width_rule_stops_where_shared_memory_does(dtype, save):
    """At K = 256 the forward's width rule takes BV 16 when saving or in float32 (``chunk_fwd._state_block_v``)
    because BV 32 there needs more shared memory than an H200 has: the check sees that launch over."""
    shared = shared_in_subprocess(256, 256, dtype, save, dict(BV=32), FWD[3:])
    assert shared[FWD[3]] > SMEM_LIMIT, shared


def shared_in_subprocess(K, V, dtype, save, state_config, kernels) -> dict[str, int]:
    """``launch_check.forward_shared`` in a process of its own, without the interpreter."""
    code = ("import json, sys; sys.path.insert(0, 'tests'); from launch_check import forward_shared; "
            f"print(json.dumps(forward_shared({K}, {V}, {dtype!r}, {save}, {state_config!r}, {kernels!r})))")
    env = {n: x for n, x in os.environ.items() if n != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if out.returncode and "ptxas" in out.stderr.lower() and "not found" in out.stderr.lower():
        pytest.skip("this Triton build cannot compile for sm_90a (no ptxas)")
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])
