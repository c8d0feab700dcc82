"""Forward benchmark of the Triton backend against its peer (flash-linear-attention's ``chunk_gdn2``) and SDPA.

    python benchmarks/bench.py                           # writes benchmarks/results/fwd-<card>.csv
    python benchmarks/bench.py --sweep --profile         # also other launch settings, per-kernel times
    python benchmarks/bench.py --shapes 1x16384,1x65536  # some shapes only
    python benchmarks/bench.py --dry-run                 # the host code on the CPU (Triton's interpreter)

One call of each operator at B×T from ``FWD_SHAPES``, H = 16, K = V = 128, bfloat16 q, k, v, b, w, float32
g = logsigmoid(randn) (fresh random inputs, never zeros), the L2 norm of q and k in the op. Every time is
the median of ``triton.testing.do_bench`` after warm-up. Each row carries two floors for the card of the
run: the memory floor (inputs read once and o written once, over the copy bandwidth measured in the same
run) and the FLOP floor (the matrix products' FLOPs over a bfloat16 product rate measured in the same
run), and the peer's time over this row's (> 1: this row is faster).

Modes live in ``MODES`` (name -> function(args, card, bw, flops) -> rows); a new mode adds one function
there. Helpers here (peer_ops, retune_peer, timed_ms, write_csv, profile_kernels, the dry-run switch)
are shared with bench_train.py and bench_decode.py.
"""

import argparse
import csv
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

FWD_SHAPES = [(8, 2048), (4, 4096), (2, 8192), (1, 16384), (1, 65536)]
#: the shapes where --profile prints per-kernel times and --sweep times other launch settings
PROFILED = [(8, 2048), (1, 16384)]
H, K, V, C = 16, 128, 128, 64
#: where the benchmarks run and the dtype of q, k, v, b, w; ``dry_run()`` changes both
DEVICE, DTYPE = "cuda", torch.bfloat16
DRY_RUN = False


def dry_run(module_globals: dict, **small) -> None:
    """Switch a benchmark script to a dry run: Triton's CPU interpreter, float16 for bfloat16 (the
    interpreter's tl.dot is wrong on bfloat16, and the backend refuses it there), the given small sizes
    (module globals of the calling script, e.g. H=2, K=32), one timed call per measurement. Call it
    before gdn2.fast's kernel modules are imported (Triton reads TRITON_INTERPRET when a kernel is
    defined)."""
    global DEVICE, DTYPE, DRY_RUN
    os.environ["TRITON_INTERPRET"] = "1"
    DEVICE, DTYPE, DRY_RUN = "cpu", torch.float16, True
    module_globals.update(small, DEVICE=DEVICE, DTYPE=DTYPE)


def out_folder(given: str) -> str:
    """The CSV folder: the one given, else benchmarks/results, or a fresh temporary one in a dry run (a
    dry run's numbers never belong in benchmarks/results)."""
    if given:
        return given
    return tempfile.mkdtemp(prefix="gdn2-bench-dry-run-") if DRY_RUN else str(Path(__file__).parent / "results")


def sync() -> None:
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def timed_ms(fn, warmup: int = 50, rep: int = 300, grad_to_none: list | None = None) -> float:
    """Median ms per call of fn (``triton.testing.do_bench``); in a dry run one call timed on the host."""
    if DRY_RUN:
        for t in grad_to_none or []:
            t.grad = None
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3
    from triton.testing import do_bench

    return do_bench(fn, warmup=warmup, rep=rep, grad_to_none=grad_to_none, return_mode="median")


def card_name() -> str:
    return "CPU interpreter" if DRY_RUN else torch.cuda.get_device_name()


def peer_ops():
    """flash-linear-attention's GDN-2 operators (package fla-core), or (None, None) where it is not installed."""
    try:
        from fla.ops.gdn2 import chunk_gdn2, fused_recurrent_gdn2
    except ImportError as e:
        print(f"peer unavailable: {e}")
        return None, None
    return chunk_gdn2, fused_recurrent_gdn2


def retune_peer() -> int:
    """Make every autotuned kernel of the peer tune again at its next launch; returns how many.

    The peer's autotune keys hold H, K, V and the chunk size but not T (and mostly not B), so without
    this it keeps the launch settings chosen at the first shape it ran, which are slower at other
    shapes. Its results cached on disk (``cache_results``) would bring the old choice back, so those
    go off too.
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
    """Device-to-device copy rate in bytes/s, counting bytes read plus bytes written (1 GiB copied)."""
    x = torch.randn(256 * 2**20 if not DRY_RUN else 2**20, device=DEVICE)
    y = torch.empty_like(x)
    ms = timed_ms(lambda: y.copy_(x), warmup=25, rep=200)
    return 2 * x.numel() * 4 / (ms * 1e-3)


def matmul_rate() -> float:
    """Dense bfloat16 matrix-product rate in FLOP/s: an 8192×8192×8192 product on random data."""
    n = 8192 if not DRY_RUN else 256
    a, b = (torch.randn(n, n, device=DEVICE, dtype=torch.bfloat16) for _ in range(2))
    ms = timed_ms(lambda: a @ b, warmup=10, rep=100)
    return 2 * n**3 / (ms * 1e-3)


def inputs(B: int, T: int) -> dict:
    """Random operator inputs as a layer makes them: raw q, k (normalised in the op), g < 0 float32."""
    dtype = DTYPE
    return {
        "q": torch.randn(B, T, H, K, device=DEVICE, dtype=dtype),
        "k": torch.randn(B, T, H, K, device=DEVICE, dtype=dtype),
        "v": torch.randn(B, T, H, V, device=DEVICE, dtype=dtype),
        "g": F.logsigmoid(torch.randn(B, T, H, K, device=DEVICE)),
        "b": torch.rand(B, T, H, K, device=DEVICE, dtype=dtype),
        "w": torch.rand(B, T, H, V, device=DEVICE, dtype=dtype),
    }


def forward_floors(B: int, T: int, bw: float, flops: float) -> tuple[float, float]:
    """(memory floor, FLOP floor) in ms: q, k, b, v, w bf16 + g fp32 read once, o written once; the
    matrix products T, A_qk (2·C·K), Y and U (C·(K+V)), Y S, Q S, K_tailᵀR (6·K·V), A_qk R (C·V)."""
    tokens = B * T * H
    nbytes = tokens * (K * (2 + 2 + 2 + 4) + V * (2 + 2) + V * 2)
    flop = tokens * (2 * C * K + C * (K + V) + 6 * K * V + C * V)
    return nbytes / bw * 1e3, flop / flops * 1e3


def sweep_configs() -> dict:
    """Launch settings timed by --sweep at the PROFILED shapes: name -> gdn2.fast.config.ForwardConfig."""
    from gdn2.fast.config import DiagLaunch, ForwardConfig, OffDiagLaunch, StateLaunch, WYLaunch

    return {
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


def bench_fwd(args, card: str, bw: float, flops: float) -> list[dict]:
    import gdn2.fast
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd

    peer_chunk = None if args.no_peer else peer_ops()[0]
    if peer_chunk is not None and DRY_RUN:
        print(f"dry run: the peer imports ({retune_peer()} autotuned kernels found); its kernels need a GPU")
        peer_chunk = None
    rows = []
    for B, T in picked(FWD_SHAPES, args, 16384 * 2):
        x = inputs(B, T)
        mem, flop = forward_floors(B, T, bw, flops)
        impls = {"ours": lambda x=x: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)}
        if peer_chunk is not None:
            impls["peer"] = lambda x=x: peer_chunk(**x, use_qk_l2norm_in_kernel=True)
        qkv = [x[n].transpose(1, 2) for n in "qkv"]                   # [B, H, T, K]
        impls["sdpa"] = lambda qkv=qkv: F.scaled_dot_product_attention(*qkv, is_causal=True)
        if args.sweep and (B, T) in PROFILED:
            for name, cfg in sweep_configs().items():
                impls[name] = lambda x=x, cfg=cfg: chunk_gdn2_fwd(
                    **x, scale=K ** -0.5, use_qk_l2norm_in_kernel=True, config=cfg)
        if peer_chunk is not None and not args.keep_peer_tuning:
            print(f"peer: {retune_peer()} autotuned kernels tune again at {B}x{T}", flush=True)
            peer_chunk(**x, use_qk_l2norm_in_kernel=True)
        if args.profile and (B, T) in PROFILED:
            for name in ("ours", "peer"):
                if name in impls:
                    profile_kernels(f"{name} {B}x{T}", impls[name])
        times = {name: timed_ms(fn) for name, fn in impls.items()}
        print(f"fwd {B}x{T}: " + ", ".join(f"{n} {ms:.3f}" for n, ms in times.items()), flush=True)
        for name, ms in times.items():
            rows.append(dict(card=card, mode="fwd", shape=f"{B}x{T}", impl=name, ms=round(ms, 4),
                             mem_floor_ms=round(mem, 4), flop_floor_ms=round(flop, 4),
                             peer_over_this=round(times["peer"] / ms, 3) if "peer" in times else ""))
        del x
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def write_csv(path: Path, rows: list[dict], fields: list[str] | None = None) -> None:
    """Write rows (columns ``fields``, else the first row's keys) to path, creating its folder."""
    if not rows and not fields:
        print(f"no rows: {path} not written")
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields or list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def kernel_us(fn, n: int = 10, warmup: int = 1) -> dict[str, float]:
    """GPU µs per call of every kernel that one call of fn launches (torch profiler, mean of n calls),
    slowest first (empty in a dry run: the interpreter launches no GPU kernel)."""
    for _ in range(warmup):
        fn()
    sync()
    activity = torch.profiler.ProfilerActivity.CUDA if DEVICE == "cuda" else torch.profiler.ProfilerActivity.CPU
    with torch.profiler.profile(activities=[activity]) as prof:
        for _ in range(n):
            fn()
        sync()
    events = sorted(prof.key_averages(), key=lambda e: -e.device_time_total)
    return {e.key: e.device_time_total / n for e in events if e.device_time_total > 0}


def profile_kernels(label: str, fn, n: int = 10) -> None:
    """Print the GPU time of every kernel one call of fn launches (torch profiler, mean of n calls)."""
    times = kernel_us(fn, n if not DRY_RUN else 1)
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


MODES = {"fwd": bench_fwd}
FIELDS = ["card", "mode", "shape", "impl", "ms", "mem_floor_ms", "flop_floor_ms", "peer_over_this"]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="fwd", choices=list(MODES))
    ap.add_argument("--out", default="", help="CSV folder (default: benchmarks/results; dry run: a temporary one)")
    ap.add_argument("--sweep", action="store_true", help="also time other launch settings of our kernels")
    ap.add_argument("--quick", action="store_true", help="skip the shapes above 32K tokens")
    ap.add_argument("--shapes", default="", help="comma-separated BxT to run, e.g. 1x16384,1x65536")
    ap.add_argument("--profile", action="store_true", help="print per-kernel GPU times of ours and the peer")
    ap.add_argument("--no-peer", action="store_true", help="skip flash-linear-attention")
    ap.add_argument("--keep-peer-tuning", action="store_true",
                    help="let the peer keep the launch settings it autotuned at the first shape (faster to run)")
    ap.add_argument("--dry-run", action="store_true",
                    help="run the host code on the CPU through Triton's interpreter at tiny shapes")
    args = ap.parse_args()
    if args.dry_run:
        dry_run(globals(), H=2, K=32, V=32, FWD_SHAPES=[(1, 128), (2, 64)], PROFILED=[(1, 128)])
    out = out_folder(args.out)
    import triton

    torch.manual_seed(0)
    card = card_name()
    bw, flops = copy_bandwidth(), matmul_rate()
    print(f"card: {card}; copy bandwidth {bw / 1e12:.2f} TB/s, bf16 products {flops / 1e12:.0f} TFLOP/s; "
          f"Triton {triton.__version__}, torch {torch.__version__}")
    rows = MODES[args.mode](args, card, bw, flops)
    if args.profile:
        print("-- compiled kernel variants")
        registers()
    path = Path(out) / f"{args.mode}-{card.replace(' ', '_')}.csv"
    write_csv(path, rows, FIELDS)
    print(f"{'mode':7} {'shape':9} {'impl':20} {'ms':>9} {'mem floor':>9} {'flop fl.':>9} {'peer/x':>7}")
    for r in rows:
        print(f"{r['mode']:7} {r['shape']:9} {r['impl']:20} {r['ms']:>9} {r['mem_floor_ms']:>9} "
              f"{r['flop_floor_ms']:>9} {r['peer_over_this']:>7}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
