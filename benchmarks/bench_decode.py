"""Decoding benchmark: ``gdn2.fast.fused_recurrent_gdn2`` against flash-linear-attention's, one token per call.

    python benchmarks/bench_decode.py              # about a minute on an H200; writes results/decode-<card>.csv
    python benchmarks/bench_decode.py --model-only # the whole-model rows alone: results/decode-model-<card>.csv
    python benchmarks/bench_decode.py --dry-run    # the host code on the CPU (Triton's interpreter), tiny shapes

Every call is one decoding step as a layer makes it: H = HV = 16, K = V = 128, T = 1, bfloat16 q, k, v,
b, w, float32 g = logsigmoid(randn), a float32 initial state, output_final_state=True,
use_qk_l2norm_in_kernel=True. For B in {1, 8, 64, 256} each row has

- ``wall_us``: the whole call, host included: n calls back to back, timed by perf_counter between two
  synchronisations, divided by n (the median of three such runs);
- ``device_us``: the device alone: 50 calls captured in one CUDA graph, replays timed by CUDA events,
  divided by 50 (blank where the capture fails);
- ``mem_floor_us``: the float32 state read and written once, 2·B·H·K·V·4 bytes, over the device copy
  bandwidth measured in the same run;
- ``flop_floor_us``: the step's 8·B·H·K·V FLOPs (no matrix products: decay, read, write, output are
  vector operations on the state) over the float32 CUDA-core rate, ~67 TFLOP/s on an H100 SXM or H200;
- ``peer_over_ours``: the peer's time over ours (> 1: ours is faster); wall time for the operator's
  rows, device time for the sweep rows.

Also measured: one decoding step of a whole model (``model-eager`` and ``model-cuda-graph``: a
``gdn2.GDN2LM`` of 24 GDN2 blocks, hidden size 2048, 16 heads of 128, vocabulary 32000, bfloat16, about
1.3 B parameters; ``generate`` with and without ``cuda_graph=True``), µs per generated token at each B;
a bare launch of a one-line Triton kernel through the JIT (the host's floor for any
Triton call), and a sweep of our kernel's launch (``gdn2.fast.config.DecodeLaunch``) by device time at
every B, the default marked. A launch that fails to compile or to run is reported and skipped.
"""

import argparse
import statistics
import time
from pathlib import Path

import bench
import torch
import torch.nn.functional as F
from bench import peer_ops, retune_peer, write_csv

import gdn2.fast
from gdn2.fast.config import DecodeLaunch

BATCHES = [1, 8, 64, 256]
H, K, V = 16, 128, 128
#: where the benchmark runs and the dtype of q, k, v, b, w (bench.dry_run changes both)
DEVICE, DTYPE = "cuda", torch.bfloat16
SWEEP = [DecodeLaunch(BV=BV, num_warps=num_warps) for BV in (8, 16, 32, 64, 128) for num_warps in (1, 2, 4, 8)]
#: fewer programs than state blocks, each looping over blocks
SWEEP += [DecodeLaunch(BV=BV, num_warps=1, programs_per_sm=per_sm) for BV in (16, 32) for per_sm in (4, 8, 16)]
CALLS_PER_GRAPH = 50
FIELDS = ["card", "B", "impl", "config", "wall_us", "device_us", "mem_floor_us", "flop_floor_us", "peer_over_ours"]
FP32_FLOPS = 67e12


def inputs(B: int) -> dict:
    """One decoding step's inputs (fresh random draws, never zeros) and the carried state."""
    dev, bf = DEVICE, DTYPE
    return {
        "q": torch.randn(B, 1, H, K, device=dev, dtype=bf),
        "k": torch.randn(B, 1, H, K, device=dev, dtype=bf),
        "v": torch.randn(B, 1, H, V, device=dev, dtype=bf),
        "g": F.logsigmoid(torch.randn(B, 1, H, K, device=dev)),
        "b": torch.rand(B, 1, H, K, device=dev, dtype=bf),
        "w": torch.rand(B, 1, H, V, device=dev, dtype=bf),
        "initial_state": torch.randn(B, H, K, V, device=dev),
    }


def copy_bandwidth() -> float:
    """Device-to-device copy rate in bytes/s (bytes read plus bytes written), median of 20 copies of 1 GiB."""
    if bench.DRY_RUN:
        return bench.copy_bandwidth()
    x = torch.randn(256 * 2**20, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    times = []
    for _ in range(20):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        y.copy_(x)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3)
    return 2 * x.numel() * 4 / statistics.median(times)


def wall_us(fn, n: int) -> float:
    """Host-inclusive µs per call: n calls back to back between two synchronisations, median of 3 runs."""
    for _ in range(10 if not bench.DRY_RUN else 1):
        fn()
    bench.sync()
    runs = []
    for _ in range(3 if not bench.DRY_RUN else 1):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        bench.sync()
        runs.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(runs)


def device_us(fn, replays: int = 10) -> float | None:
    """Device µs per call: CALLS_PER_GRAPH calls in one CUDA graph, replays timed by CUDA events.

    None (printed) when fn cannot be captured, and in a dry run (no CUDA graph on the CPU)."""
    if bench.DRY_RUN:
        return None
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):                       # warm up off the default stream, as capture wants
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        torch.cuda.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(CALLS_PER_GRAPH):
                fn()
    except Exception as e:  # a peer that cannot be captured gets a blank, not a crash
        print(f"    graph capture failed: {type(e).__name__}: {str(e)[:200]}")
        torch.cuda.synchronize()
        return None
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e3 / CALLS_PER_GRAPH)
    del graph
    return statistics.median(times)


#: triton.language, imported by bare_launches: Triton is imported only once a dry run has chosen its
#: interpreter (it reads TRITON_INTERPRET when its own modules and every kernel are defined)
tl = None


def _one_store(x):
    tl.store(x, 1.0)


def bare_launches(card: str) -> list[dict]:
    """The floor of any Triton call from Python: a one-line kernel launched through the JIT."""
    global tl
    import triton
    import triton.language as tl

    kernel = triton.jit(_one_store)
    flag = torch.zeros(1, device=DEVICE)
    jit = wall_us(lambda: kernel[(1,)](flag), 5000 if not bench.DRY_RUN else 2)
    return [dict(card=card, impl="bare-triton-launch", config="jit, 1 argument", wall_us=jit)]


def sweep(card: str, B: int, x: dict, kw: dict, default: DecodeLaunch, peer_dev: float | None,
          floor: float) -> list[dict]:
    """Device µs of every launch in SWEEP of our kernel at batch B."""
    from gdn2.fast import fused_recurrent as fr

    rows = []
    for config in SWEEP:
        if config.programs_per_sm and B < 64:             # fewer programs than blocks needs many blocks
            continue
        name = launch_name(config) + (" default" if config == default else "")
        try:
            fr.fused_recurrent_gdn2(**x, **kw, launch=config)
            bench.sync()
        except Exception as e:  # a launch that does not compile or run is skipped
            print(f"    {name}: failed: {type(e).__name__}: {str(e)[:200]}")
            continue
        dev = device_us(lambda c=config: fr.fused_recurrent_gdn2(**x, **kw, launch=c))
        rows.append(dict(card=card, B=B, impl="ours-sweep", config=name, device_us=dev, mem_floor_us=floor,
                         peer_over_ours=peer_dev / dev if peer_dev and dev else None))
        print(f"    {name:16s} {dev if dev is not None else float('nan'):8.1f} µs")
    return rows


def launch_name(t: DecodeLaunch) -> str:
    """BV32-w1, with -p8/SM for 8 programs per SM looping over the blocks."""
    return f"BV{t.BV}-w{t.num_warps}" + (f"-p{t.programs_per_sm}/SM" if t.programs_per_sm else "")


def registers() -> None:
    """Registers and spills per thread of every compiled variant of the decoding kernel (none in the interpreter)."""
    from gdn2.fast import fused_recurrent as fr

    names = fr.fused_recurrent_fwd_kernel.arg_names
    for cache in getattr(fr.fused_recurrent_fwd_kernel, "device_caches", {}).values():
        for ck in cache[0].values():
            constants = getattr(ck.src, "constants", {})
            flags = " ".join(f"{n}={constants.get(n, constants.get((names.index(n),), '?'))}" for n in ("BV",))
            print(f"   {flags} num_warps={ck.metadata.num_warps}: {ck.n_regs} registers, {ck.n_spills} spills")


def model_rows(card: str) -> list[dict]:
    """µs per generated token of a whole GDN2 model, eager and replayed from a CUDA graph."""
    from gdn2 import GDN2LM, GDN2LMConfig

    torch.manual_seed(0)
    lm = GDN2LM(GDN2LMConfig(vocab_size=32000, hidden_size=2048, num_layers=24, num_heads=16, head_dim=128,
                             backend="triton")).to("cuda", torch.bfloat16)
    rows = []
    for B in BATCHES:
        prompt = torch.randint(0, 32000, (B, 32), device="cuda")
        for name, graph in (("model-eager", False), ("model-cuda-graph", True)):
            try:
                lm.generate(prompt, 4, temperature=0, cuda_graph=graph)          # compile and warm up
                times = []
                for _ in range(3):
                    torch.cuda.synchronize()
                    t0 = time.perf_counter()
                    lm.generate(prompt, 65, temperature=0, cuda_graph=graph)
                    torch.cuda.synchronize()
                    t1 = time.perf_counter()
                    lm.generate(prompt, 1, temperature=0, cuda_graph=graph)       # prefill and one token
                    torch.cuda.synchronize()
                    times.append(((t1 - t0) - (time.perf_counter() - t1)) / 64 * 1e6)
            except Exception as e:  # a path that fails is reported, not fatal
                print(f"B={B} {name}: failed: {type(e).__name__}: {str(e)[:300]}")
                continue
            us = statistics.median(times)
            rows.append(dict(card=card, B=B, impl=name, config="24 x GDN2, d 2048, 1.3B, bf16", wall_us=us))
            print(f"B={B} {name:17s} {us:9.1f} µs per token ({B * 1e6 / us:9.0f} tokens/s)", flush=True)
    del lm
    torch.cuda.empty_cache()
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="", help="CSV folder (default: benchmarks/results; dry run: a temporary one)")
    ap.add_argument("--no-peer", action="store_true", help="skip flash-linear-attention")
    ap.add_argument("--model-only", action="store_true", help="only the whole-model decoding rows")
    ap.add_argument("--dry-run", action="store_true",
                    help="run the host code on the CPU through Triton's interpreter at tiny shapes")
    args = ap.parse_args()
    if args.dry_run:
        bench.dry_run(globals(), BATCHES=[1, 64], H=1, K=32, V=32)
    out = bench.out_folder(args.out)
    import triton

    from gdn2.fast import fused_recurrent as fr

    if args.model_only:
        card = bench.card_name()
        rows = model_rows(card)
        path = out / f"decode-model-{card.replace(' ', '_')}.csv"
        write_csv(path, rows, FIELDS)
        print(f"wrote {path}")
        return

    t_start = time.perf_counter()
    torch.manual_seed(0)
    card = bench.card_name()
    bw = copy_bandwidth()
    print(f"card: {card}; copy bandwidth {bw / 1e12:.2f} TB/s; Triton {triton.__version__}, torch {torch.__version__}")
    peer = None if args.no_peer else peer_ops()[1]
    if peer is not None and bench.DRY_RUN:
        print(f"dry run: the peer imports ({retune_peer()} autotuned kernels found); its kernels need a GPU")
        peer = None
    kw = dict(output_final_state=True, use_qk_l2norm_in_kernel=True)
    rows = []
    try:
        rows += bare_launches(card)
    except Exception as e:
        print(f"bare launches failed: {type(e).__name__}: {str(e)[:200]}")
    for B in BATCHES:
        x = inputs(B)
        floor = 2 * B * H * K * V * 4 / bw * 1e6
        flop_floor = 8 * B * H * K * V / FP32_FLOPS * 1e6
        n = 2 if bench.DRY_RUN else 2000 if B <= 8 else 1000 if B <= 64 else 200
        default = fr.decode_launch(B * H, K, V)
        impls = {"ours": (lambda x=x: gdn2.fast.fused_recurrent_gdn2(**x, **kw), launch_name(default) + " default")}
        if peer is not None:
            impls["peer"] = (lambda x=x: peer(**x, **kw), "fla")
        times, mine = {}, {}
        for name, (fn, config) in impls.items():
            try:
                times[name] = (wall_us(fn, n), device_us(fn))
            except Exception as e:
                print(f"B={B} {name}: failed: {type(e).__name__}: {str(e)[:200]}")
                continue
            mine[name] = dict(card=card, B=B, impl=name, config=config, wall_us=times[name][0],
                              device_us=times[name][1], mem_floor_us=floor, flop_floor_us=flop_floor)
            rows.append(mine[name])
        if "ours" in times and "peer" in times:
            mine["ours"]["peer_over_ours"] = times["peer"][0] / times["ours"][0]
        print(f"B={B}: " + ", ".join(f"{name} wall {t[0]:.1f} µs, device {t[1] or float('nan'):.1f} µs"
                                      for name, t in times.items()) + f"; floor {floor:.1f} µs")
        print(f"  sweep at B={B} (device µs per call):")
        rows += sweep(card, B, x, kw, default, times.get("peer", (None, None))[1], floor)
        del x
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    if not bench.DRY_RUN:
        try:
            rows += model_rows(card)
        except Exception as e:
            print(f"model decoding failed: {type(e).__name__}: {str(e)[:300]}")
    print("-- compiled variants of fused_recurrent_fwd_kernel")
    try:
        registers()
    except Exception as e:
        print(f"   unavailable: {type(e).__name__}: {e}")
    path = Path(out) / f"decode-{card.replace(' ', '_')}.csv"
    for r in rows:
        for col in ("wall_us", "device_us", "mem_floor_us", "flop_floor_us", "peer_over_ours"):
            if isinstance(r.get(col), float):
                r[col] = round(r[col], 2 if col != "peer_over_ours" else 3)
    write_csv(path, rows, FIELDS)
    print(f"\n{'B':>4} {'impl':22} {'config':34} {'wall µs':>9} {'device µs':>9} {'mem fl.':>9} {'flop fl.':>9} "
          f"{'peer/ours':>9}")
    for r in rows:
        print(f"{r.get('B', ''):>4} {r['impl']:22} {r.get('config', '')[:34]:34} {_cell(r, 'wall_us'):>9} "
              f"{_cell(r, 'device_us'):>9} {_cell(r, 'mem_floor_us'):>9} {_cell(r, 'flop_floor_us'):>9} "
              f"{_cell(r, 'peer_over_ours'):>9}")
    print(f"wrote {path} in {time.perf_counter() - t_start:.0f} s")


def _cell(row: dict, col: str) -> str:
    v = row.get(col)
    return "" if v is None else str(v)


if __name__ == "__main__":
    main()
