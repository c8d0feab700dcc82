"""Benchmark of the Triton backend against its peer (flash-linear-attention ``chunk_gdn2``) and SDPA.

    python benchmarks/bench.py                       # forward + decoding, writes benchmarks/results/*.csv
    python benchmarks/bench.py --mode fwd --sweep    # also time other launch settings (gdn2.fast.config)

Modes live in ``MODES`` (name -> function(args, card) -> rows); a new mode (e.g. ``fwdbwd``)
adds one function there. Every timing is the median of many runs after warm-up
(``triton.testing.do_bench``), on fresh random inputs (never zeros). Each row carries the memory
floor (inputs read once + outputs written once, over the copy bandwidth measured in the same run)
and the FLOP floor (matrix-product FLOPs over ~700 TFLOP/s bf16), and the ratio peer / ours.
"""

import argparse
import csv
import time
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.testing import do_bench

import gdn2.fast
from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
from gdn2.fast.config import DiagLaunch, ForwardConfig, OffDiagLaunch, StateLaunch, WYLaunch

FWD_SHAPES = [(8, 2048), (4, 4096), (2, 8192), (1, 16384), (1, 65536)]
DECODE_BATCHES = [1, 8, 64, 256]
H, K, V, C = 16, 128, 128, 64
PEAK_FLOPS = 700e12


def peer_ops():
    """flash-linear-attention 0.6.0's GDN-2 operators, or (None, None) where it is not installed."""
    try:
        from fla.ops.gdn2 import chunk_gdn2, fused_recurrent_gdn2
    except ImportError as e:
        print(f"peer unavailable: {e}")
        return None, None
    return chunk_gdn2, fused_recurrent_gdn2


def retune_peer() -> int:
    """Make every autotuned kernel of the peer tune again at its next launch; returns how many.

    The peer's autotune keys hold H, K, V and the chunk size but not T (and mostly not B), so without
    this it keeps the launch settings chosen at the first shape it ran: configurations tuned at 8×2K
    made its train step 10% slower at 1×16K and 1×64K than configurations tuned there (H200). Its
    cached results on disk (``cache_results``) would bring the old choice back, so those go off too.
    """
    import sys

    from triton.runtime.autotuner import Autotuner

    tuners = {}
    for name, module in list(sys.modules.items()):
        if not name.startswith("fla.") or module is None:
            continue
        for obj in vars(module).values():
            while obj is not None and not isinstance(obj, type):   # autotune under heuristics etc.
                if isinstance(obj, Autotuner):
                    tuners[id(obj)] = obj
                obj = getattr(obj, "fn", None)
    for tuner in tuners.values():
        tuner.cache.clear()
        tuner.cache_results = False
    return len(tuners)


def copy_bandwidth() -> float:
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written."""
    x = torch.randn(256 * 2**20, device="cuda")          # 1 GiB
    y = torch.empty_like(x)
    ms = do_bench(lambda: y.copy_(x), warmup=25, rep=200, return_mode="median")
    return 2 * x.numel() * 4 / (ms * 1e-3)


def inputs(B: int, T: int, dtype=torch.bfloat16, state: bool = False) -> dict:
    """Random operator inputs as a layer makes them: raw q, k (normalised in the op), g < 0 float32."""
    dev = "cuda"
    x = {
        "q": torch.randn(B, T, H, K, device=dev, dtype=dtype),
        "k": torch.randn(B, T, H, K, device=dev, dtype=dtype),
        "v": torch.randn(B, T, H, V, device=dev, dtype=dtype),
        "g": F.logsigmoid(torch.randn(B, T, H, K, device=dev)),
        "b": torch.rand(B, T, H, K, device=dev, dtype=dtype),
        "w": torch.rand(B, T, H, V, device=dev, dtype=dtype),
    }
    if state:
        x["initial_state"] = torch.randn(B, H, K, V, device=dev)
    return x


def forward_floors(B: int, T: int, bw: float) -> tuple[float, float]:
    """(memory floor, FLOP floor) in ms: q, k, b, v, w bf16 + g fp32 read once, o written once."""
    tokens = B * T * H
    nbytes = tokens * (K * (2 + 2 + 2 + 4) + V * (2 + 2) + V * 2)
    # T, A_qk (2·C·K), Y and U (C·(K+V)), Y S, Q S, K_tailᵀR (6·K·V), A_qk R (C·V) per token and head
    flops = tokens * (2 * C * K + C * (K + V) + 6 * K * V + C * V)
    return nbytes / bw * 1e3, flops / PEAK_FLOPS * 1e3


#: launch settings timed by --sweep at 8x2K and 1x16K: name -> ForwardConfig
SWEEP = {
    "diag-bk32": ForwardConfig(diag=DiagLaunch(BK=32)),
    "diag-w2": ForwardConfig(diag=DiagLaunch(num_warps=2)),
    "offdiag-bk16-w2": ForwardConfig(offdiag=OffDiagLaunch(BK=16, num_warps=2)),
    "wy-bk32-bv64": ForwardConfig(wy=WYLaunch(BK=32, BV=64)),
    "wy-np2": ForwardConfig(wy=WYLaunch(NP=2)),
    "state-bv32": ForwardConfig(state=StateLaunch(BV=32, num_warps=4)),
    "state-bv64": ForwardConfig(state=StateLaunch(BV=64, num_warps=4)),
}


def picked(shapes: list[tuple[int, int]], args, quick_tokens: int) -> list[tuple[int, int]]:
    """The shapes a run times: those named by ``--shapes`` (all if none), without those above
    quick_tokens with ``--quick``."""
    named = set(args.shapes.split(",")) if args.shapes else None
    return [(B, T) for B, T in shapes if not (args.quick and B * T > quick_tokens)
            and (named is None or f"{B}x{T}" in named)]


def bench_fwd(args, card: str, bw: float) -> list[dict]:
    peer_chunk, _ = peer_ops()
    rows = []
    for B, T in picked(FWD_SHAPES, args, 16384 * 2):
        x = inputs(B, T)
        mem, flop = forward_floors(B, T, bw)
        impls = {"ours": lambda x=x: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)}
        if peer_chunk is not None:
            impls["peer"] = lambda x=x: peer_chunk(**x, use_qk_l2norm_in_kernel=True)
        qkv = [x[n].transpose(1, 2) for n in "qkv"]                   # [B, H, T, K]
        impls["sdpa"] = lambda qkv=qkv: F.scaled_dot_product_attention(*qkv, is_causal=True)
        if args.sweep and (B, T) in ((8, 2048), (1, 16384)):
            for name, cfg in SWEEP.items():
                impls[name] = lambda x=x, cfg=cfg: chunk_gdn2_fwd(
                    **x, scale=K ** -0.5, use_qk_l2norm_in_kernel=True, config=cfg)
        if peer_chunk is not None and not args.keep_peer_tuning:
            print(f"peer: {retune_peer()} autotuned kernels tune again at {B}x{T}", flush=True)
            peer_chunk(**x, use_qk_l2norm_in_kernel=True)
        if args.profile and (B, T) in ((8, 2048), (1, 16384)):
            for name in ("ours", "peer"):
                if name in impls:
                    profile_kernels(f"{name} {B}x{T}", impls[name])
        times = {name: do_bench(fn, warmup=50, rep=300, return_mode="median") for name, fn in impls.items()}
        print(f"fwd {B}x{T}: " + ", ".join(f"{n} {ms:.3f}" for n, ms in times.items()), flush=True)
        for name, ms in times.items():
            rows.append(dict(card=card, mode="fwd", shape=f"{B}x{T}", impl=name, ms=round(ms, 4),
                             mem_floor_ms=round(mem, 4), flop_floor_ms=round(flop, 4),
                             peer_over_this=round(times["peer"] / ms, 3) if "peer" in times else ""))
        del x
        torch.cuda.empty_cache()
    return rows


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Write rows (columns ``fields``, else the first row's keys) to path, creating its folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def kernel_us(fn, n: int = 10, warmup: int = 1) -> dict[str, float]:
    """GPU µs per call of every kernel that one call of fn launches (torch profiler, mean of n calls),
    slowest first."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(n):
            fn()
        torch.cuda.synchronize()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    return {e.key: e.device_time_total / n for e in events if e.device_time_total > 0}


def profile_kernels(label: str, fn, n: int = 10) -> None:
    """Print the GPU time of every kernel one call of fn launches (torch profiler, mean of n calls)."""
    times = kernel_us(fn, n)
    print(f"-- kernels of {label} (us per call)")
    for key, us in list(times.items())[:12]:
        print(f"   {us:9.1f}  {key[:90]}")


def registers() -> None:
    """Print registers, spills, warps, stages and shared memory of every compiled variant of our forward kernels."""
    from gdn2.fast import intra_fwd, state_fwd

    kernels = [intra_fwd.chunk_intra_diag_kernel, intra_fwd.chunk_intra_offdiag_kernel, intra_fwd.chunk_wy_fwd_kernel,
               state_fwd.chunk_state_output_fwd_kernel]
    for kern in kernels:
        for cache in getattr(kern, "device_caches", {}).values():
            for ck in cache[0].values():
                md = ck.metadata
                print(f"   {kern.__name__}: {ck.n_regs} registers, {ck.n_spills} spills, {md.num_warps} warps, "
                      f"{md.num_stages} stages, {md.shared} B shared")


@triton.jit
def _noop_kernel(x):
    tl.store(x, 1.0)


def wall_us(fn, n: int = 2000) -> float:
    """Host-inclusive time of one call: n calls back to back, synchronised at both ends."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) / n * 1e6


def bench_decode(args, card: str, bw: float) -> list[dict]:
    _, peer_rec = peer_ops()
    rows = []
    flag = torch.zeros(1, device="cuda")
    bare = wall_us(lambda: _noop_kernel[(1,)](flag))
    rows.append(dict(card=card, mode="decode", shape="launch", impl="bare-triton-launch", ms=round(bare / 1e3, 5)))
    for B in DECODE_BATCHES:
        x = inputs(B, 1, state=True)
        mem = 2 * B * H * K * V * 4 / bw * 1e3          # state read + written once, float32
        impls = {"ours": lambda x=x: gdn2.fast.fused_recurrent_gdn2(**x, output_final_state=True,
                                                                     use_qk_l2norm_in_kernel=True)}
        if peer_rec is not None:
            impls["peer"] = lambda x=x: peer_rec(**x, output_final_state=True, use_qk_l2norm_in_kernel=True)
        wall = {name: wall_us(fn, 2000 if B <= 8 else 300) / 1e3 for name, fn in impls.items()}
        dev = {name: do_bench(fn, warmup=25, rep=200, return_mode="median") for name, fn in impls.items()}
        for name in impls:
            rows.append(dict(card=card, mode="decode", shape=f"B{B}", impl=name, ms=round(wall[name], 5),
                             device_ms=round(dev[name], 5), mem_floor_ms=round(mem, 5),
                             peer_over_this=round(wall["peer"] / wall[name], 3) if "peer" in wall else ""))
    return rows


MODES = {"fwd": bench_fwd, "decode": bench_decode}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="all", choices=["all", *MODES])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--sweep", action="store_true", help="also time other block sizes and warps of both kernels")
    ap.add_argument("--quick", action="store_true", help="skip the largest shapes")
    ap.add_argument("--shapes", default="", help="comma-separated BxT to run (fwd), e.g. 1x16384,1x65536")
    ap.add_argument("--profile", action="store_true", help="print per-kernel GPU times of ours and the peer")
    ap.add_argument("--keep-peer-tuning", action="store_true",
                    help="let the peer keep the launch settings it autotuned at the first shape (faster to run)")
    args = ap.parse_args()
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    bw = copy_bandwidth()
    print(f"card: {card}; copy bandwidth {bw / 1e12:.2f} TB/s; Triton {triton.__version__}, torch {torch.__version__}")
    rows = []
    for mode in MODES if args.mode == "all" else [args.mode]:
        rows += MODES[mode](args, card, bw)
    if args.profile:
        print("-- compiled kernel variants")
        registers()
    path = Path(args.out) / f"{args.mode}-{card.replace(' ', '_')}.csv"
    write_csv(path, rows, ["card", "mode", "shape", "impl", "ms", "device_ms", "mem_floor_ms", "flop_floor_ms",
                           "peer_over_this"])
    print(f"{'mode':7} {'shape':9} {'impl':20} {'ms':>9} {'dev ms':>9} {'mem floor':>9} {'flop fl.':>9} {'peer/x':>7}")
    for r in rows:
        print(f"{r['mode']:7} {r['shape']:9} {r['impl']:20} {r['ms']:>9} {r.get('device_ms', ''):>9} "
              f"{r.get('mem_floor_ms', ''):>9} {r.get('flop_floor_ms', ''):>9} {r.get('peer_over_this', ''):>7}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
