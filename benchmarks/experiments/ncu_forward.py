"""One forward of ours and of the peer at 8×2K (H=16, K=V=128, bf16), for Nsight Compute.

    ncu --clock-control none -k regex:"intra|inter|state_output|recompute|chunk_gdn2|chunk_gated" \
        --section SpeedOfLight --section Occupancy --section WarpStateStats --section LaunchStats \
        python benchmarks/experiments/ncu_forward.py

Warm-up calls run first (compiles, autotuning) so the profiled launches are steady state; ncu's
--launch-skip / --launch-count pick them. ``--ours-only`` skips the peer (its autotuning takes minutes);
``GDN2_INTRA_V2=1`` profiles the 16×16-tile intra stage.
"""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import inputs, peer_ops  # noqa: E402

import gdn2.fast  # noqa: E402

x = inputs(8, 2048)
peer_chunk, _ = peer_ops()
fns = {"ours": lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)}
if peer_chunk is not None and "--ours-only" not in sys.argv:
    fns["peer"] = lambda: peer_chunk(**x, use_qk_l2norm_in_kernel=True)
for name, fn in fns.items():
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_push(f"profiled-{name}")
    fn()
    torch.cuda.synchronize()
    torch.cuda.nvtx.range_pop()
    print(f"{name}: done", flush=True)
