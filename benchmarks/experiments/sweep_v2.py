"""Launch settings of the three kernels of the 16×16-tile intra stage (fast/chunk_intra.py), one kernel
at a time from a base, with each kernel's GPU time (torch profiler, mean of 20 calls) and the whole
forward's median time (do_bench), at 8×2K and 1×16K (H=16, K=V=128, bf16, L2 norm in the kernel).

    python benchmarks/experiments/sweep_v2.py [--quick]

A kernel's time depends on its own settings only, so the best of each sweep add up; the printed
`best` line is that sum, and the last row times it.
"""

import sys
from pathlib import Path

from triton.testing import do_bench

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import K, inputs, kernel_us  # noqa: E402

from gdn2.fast.chunk_fwd import chunk_gdn2_fwd  # noqa: E402

BASE: dict = {}   # launch_intra_v2's defaults
#: round 4 (next). Round 1 (H200, 8×2K): diag BK 16 / 1 warp / 2 stages 218 µs, pairs 1 warp / 2 stages
#: 259 µs, WY BK = BV = 64 / 4 warps 319 µs; more warps, NP > 1 and WY stages were slower. Round 2: diag
#: 3 stages 200 µs, WY BV 128 305 µs. Round 3: state BV 128 / 8 warps 155 µs at 8×2K (the width rule).
#: The diag kernel at 3 stages miscompiles with tf32 products (v2_diagnose.py) and is at 1 stage now;
#: float32 ("ieee") products were right at 3 stages: time them, and check them with v2_diagnose.py.
SWEEP = {
    "diag": [{}, dict(BK=32), dict(DOT_PREC="ieee", num_stages=3), dict(DOT_PREC="ieee", num_stages=2),
             dict(DOT_PREC="tf32x3", num_stages=3)],
    "state": [None, dict(BV=64)],
}
NAMES = {"diag": "chunk_diag_v2_kernel", "pairs": "chunk_pairs_solve_v2_kernel", "wy": "chunk_wy_v2_kernel",
         "state": "chunk_state_output_fwd_kernel"}


def run(B: int, T: int) -> None:
    x = inputs(B, T)

    def fwd(cfg, state=None):
        return lambda: chunk_gdn2_fwd(**x, scale=K ** -0.5, use_qk_l2norm_in_kernel=True,
                                      intra_config={"V2": True, **cfg}, state_config=state)

    best = {}
    for part, cfgs in SWEEP.items():
        for c in cfgs:
            cfg = {**BASE, part: c}
            state = cfg.pop("state", None)
            try:
                us = kernel_us(fwd(cfg, state), n=20)
                ms = do_bench(fwd(cfg, state), warmup=20, rep=100, return_mode="median")
            except Exception as e:  # a setting that does not compile (shared memory, registers)
                print(f"{B}x{T} {part:5} {c}: {type(e).__name__}: {str(e)[:120]}", flush=True)
                continue
            t = us.get(NAMES[part], float("nan"))
            print(f"{B}x{T} {part:5} {str(c):60} {NAMES[part]} {t:8.1f} us   fwd {ms:.3f} ms   "
                  + " ".join(f"{k.split('_kernel')[0][-12:]}={v:.0f}" for k, v in us.items() if "kernel" in k),
                  flush=True)
            if t == t and (part not in best or t < best[part][1]):
                best[part] = (c, t)
    cfg = {p: c for p, (c, _) in best.items()}
    state = cfg.pop("state", None)
    ms = do_bench(fwd(cfg, state), warmup=20, rep=200, return_mode="median")
    cfg["state"] = state
    print(f"{B}x{T} best {cfg}: kernels {sum(t for _, t in best.values()):.1f} us, fwd {ms:.3f} ms", flush=True)


if __name__ == "__main__":
    for B, T in ((8, 2048),) if "--quick" in sys.argv else ((8, 2048), (1, 16384)):
        run(B, T)
