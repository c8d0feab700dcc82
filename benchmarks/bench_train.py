"""Training-side benchmark of the Triton backend: forward + backward time, peak memory, and a loss curve.

    python benchmarks/bench_train.py                  # every mode, CSVs into benchmarks/results/
    python benchmarks/bench_train.py --mode fwdbwd    # time and memory only
    python benchmarks/bench_train.py --mode crossover # train step at B = 1, T from 4K to 16K, vs SDPA
    python benchmarks/bench_train.py --mode lm        # 200-step loss curves, Triton vs reference
    python benchmarks/bench_train.py --dry-run        # every mode's host code on the CPU (Triton's interpreter)

fwdbwd: one train step of the operator (forward, then backward of <o, do>) at H = 16, K = V = 128,
bfloat16, with the L2 norm in the op, for ours in its four ``recompute`` modes (``ours``: True, the
backward reruns the whole forward; ``ours-partial``: "partial", the default, it reruns stages (3)-(5);
``ours-states``: "states", it reruns the state pass only; ``ours-saved``: False, it reruns nothing),
flash-linear-attention's ``chunk_gdn2`` (the peer) and causal SDPA, all in the same run on fresh random
inputs (never zeros). Time is the median of ``triton.testing.do_bench``; memory is
``torch.cuda.max_memory_allocated`` over one step, minus what the inputs already hold. Ratios are
peer / ours and sdpa / ours (> 1: ours is faster).

lm: the small byte-level LM (``gdn2.model.GDN2LM``) trained for 200 steps from one seed on the
same batches with backend "triton" and backend "reference" in float32, and with "triton" under
bfloat16 autocast; the bfloat16-vs-float32 gap is the noise scale that the Triton-vs-reference gap
is compared with. (The reference backend's manual backward does not run under bfloat16 autocast.)

stages: where a train step of ours spends its time: the forward with and without saving its
intermediates, each backward stage, and the local stage under other launch settings.
"""

import argparse
import math
import os
from pathlib import Path

import bench
import torch
import torch.nn.functional as F
from bench import peer_ops, picked, profile_kernels, retune_peer, timed_ms, write_csv

import gdn2.fast

SHAPES = [(8, 2048), (4, 4096), (2, 8192), (1, 16384), (1, 65536)]
CROSSOVER_T = [4096, 6144, 8192, 10240, 12288, 14336, 16384]
#: stages mode: (B, T, with the sweep of launch settings); the first shape also gets a kernel profile
STAGE_SHAPES = [(8, 2048, True), (1, 65536, False)]
H, K, V = 16, 128, 128
#: lm mode: the model, and the batch and sequence length of its steps
LM_MODEL = dict(hidden_size=256, num_layers=2, num_heads=4, head_dim=64)
LM_BATCH, LM_SEQ = 16, 256
#: where the benchmarks run and the dtype of q, k, v, b, w (bench.dry_run changes both)
DEVICE, DTYPE = "cuda", torch.bfloat16


def op_inputs(B: int, T: int) -> dict:
    """Inputs as a layer makes them (raw q, k normalised in the op; g = logsigmoid < 0), with grads."""
    dev, bf = DEVICE, DTYPE
    x = {
        "q": torch.randn(B, T, H, K, device=dev, dtype=bf),
        "k": torch.randn(B, T, H, K, device=dev, dtype=bf),
        "v": torch.randn(B, T, H, V, device=dev, dtype=bf),
        "g": F.logsigmoid(torch.randn(B, T, H, K, device=dev)),
        "b": torch.rand(B, T, H, K, device=dev, dtype=bf),
        "w": torch.rand(B, T, H, V, device=dev, dtype=bf),
    }
    return {n: t.requires_grad_() for n, t in x.items()}


def train_step(fn, do: torch.Tensor):
    """One forward + backward of <fn(), do>; gradients land in .grad (reset by do_bench)."""
    def step():
        fn().backward(do)
    return step


def measure(step, leaves: list) -> tuple[float, float]:
    """(median ms, peak MiB above what was allocated before the step)."""
    step()                                                   # compile / autotune outside the numbers
    for t in leaves:
        t.grad = None
    peak = 0.0
    if DEVICE == "cuda":                                     # the CPU (a dry run) keeps no peak
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step()
        torch.cuda.synchronize()
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        for t in leaves:
            t.grad = None
    ms = timed_ms(step, warmup=25, rep=200, grad_to_none=leaves)
    return ms, peak


def fwdbwd_rows(B: int, T: int, card: str, peer, save=lambda rows: None, retune: bool = True,
                mode: str = "fwdbwd") -> list[dict]:
    """Time and peak memory of one train step of every implementation at one shape.

    The peer goes last (its first call autotunes for minutes); with ``retune`` it tunes again at this
    shape (``bench.retune_peer``). ``save`` gets the rows measured so far after each implementation,
    so a run cut short keeps ours and SDPA's.
    """
    x = op_inputs(B, T)
    leaves = list(x.values())
    do = torch.randn(B, T, H, V, device=DEVICE, dtype=DTYPE)
    qkv = [torch.randn(B, H, T, K, device=DEVICE, dtype=DTYPE, requires_grad=True) for _ in range(3)]
    impls = {
        "ours": (lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True, recompute=True)[0], do, leaves),
        "ours-partial": (lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)[0], do, leaves),
        "ours-states": (lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True, recompute="states")[0],
                        do, leaves),
        "ours-saved": (lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True, recompute=False)[0],
                       do, leaves),
        "sdpa": (lambda: F.scaled_dot_product_attention(*qkv, is_causal=True), do.transpose(1, 2), qkv),
    }
    if peer is not None:
        impls["peer"] = (lambda: peer(**x, use_qk_l2norm_in_kernel=True)[0], do, leaves)
    results = {}

    def rows() -> list[dict]:
        return [dict(card=card, mode=mode, shape=f"{B}x{T}", impl=name, ms=round(ms, 4), peak_mib=round(mib, 1),
                     peer_over_this=round(results["peer"][0] / ms, 3) if "peer" in results else "",
                     sdpa_over_this=round(results["sdpa"][0] / ms, 3) if "sdpa" in results else "")
                for name, (ms, mib) in results.items()]

    for name, (fn, grad, inputs) in impls.items():
        if name == "peer" and retune:
            print(f"  peer: {retune_peer()} autotuned kernels tune again at {B}x{T}", flush=True)
        results[name] = measure(train_step(fn, grad), inputs)
        print(f"  {B}x{T} {name}: {results[name][0]:.3f} ms, {results[name][1]:.0f} MiB", flush=True)
        save(rows())
    return rows()


def train_step_rows(args, card: str, mode: str, shapes: list[tuple[int, int]]) -> list[dict]:
    """fwdbwd_rows at each shape in turn, the CSV of ``mode`` rewritten after every implementation."""
    peer = None if args.no_peer else peer_ops()[0]
    if peer is not None and bench.DRY_RUN:
        print(f"dry run: the peer imports ({retune_peer()} autotuned kernels found); its kernels need a GPU")
        peer = None
    path = csv_path(args, card, mode)
    rows = []
    for B, T in shapes:
        done = list(rows)
        rows = done + fwdbwd_rows(B, T, card, peer, lambda new, done=done: write_csv(path, done + new),
                                  retune=not args.keep_peer_tuning, mode=mode)
        if DEVICE == "cuda":
            torch.cuda.empty_cache()
    return rows


def bench_fwdbwd(args, card: str) -> list[dict]:
    return train_step_rows(args, card, "fwdbwd", picked(SHAPES, args, 16384))


def crossing(rows: list[dict], impl: str) -> str:
    """T where ``impl``'s train step and SDPA's take equal time, interpolated linearly between the two
    measured lengths that bracket it (SDPA grows as T², the chunked forms about as T)."""
    pts = [(int(r["shape"].split("x")[1]), r["sdpa_over_this"]) for r in rows if r["impl"] == impl]
    for (t0, r0), (t1, r1) in zip(pts, pts[1:]):
        if r0 < 1 <= r1:
            return f"T ≈ {t0 + (1 - r0) / (r1 - r0) * (t1 - t0):.0f} (between {t0} and {t1})"
    return "not inside the measured lengths"


def bench_crossover(args, card: str) -> list[dict]:
    """The train step of ours, the peer and SDPA at B = 1 over CROSSOVER_T: where the linear forms
    overtake softmax attention."""
    rows = train_step_rows(args, card, "crossover", [(1, T) for T in CROSSOVER_T])
    for impl in ("ours", "ours-partial", "ours-states", "ours-saved", "peer"):
        print(f"{impl} overtakes SDPA (train step, B = 1) at {crossing(rows, impl)}")
    return rows


def csv_path(args, card: str, mode: str) -> Path:
    return Path(args.out) / f"train-{mode}-{card.replace(' ', '_')}.csv"


def bench_lm(args, card: str) -> list[dict]:
    """Per-step training loss of the small LM under each backend, same seed, same batches."""
    from gdn2.data import corpus_tensor
    from gdn2.model import GDN2LM, GDN2LMConfig

    steps, batch, seq_len = args.lm_steps, LM_BATCH, LM_SEQ
    data = corpus_tensor()
    gen = torch.Generator().manual_seed(0)
    starts = torch.randint(0, data.numel() - seq_len - 1, (steps, batch), generator=gen)
    batches = [torch.stack([data[s: s + seq_len + 1] for s in row.tolist()]).to(DEVICE) for row in starts]
    low = "triton-" + {torch.bfloat16: "bf16", torch.float16: "fp16"}[DTYPE]
    curves = {}
    for name, backend, dtype in (("triton-fp32", "triton", None), ("reference-fp32", "reference", None),
                                 (low, "triton", DTYPE)):
        torch.manual_seed(0)
        model = GDN2LM(GDN2LMConfig(**LM_MODEL, backend=backend)).to(DEVICE)
        opt = torch.optim.AdamW(model.parameters(), lr=2e-3, betas=(0.9, 0.95), weight_decay=0.1)
        losses = []
        for ids in batches:
            with torch.autocast(DEVICE, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = model.loss(ids)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            losses.append(loss.item())
        curves[name] = losses
        print(f"{name:15s} loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    rows = [dict(card=card, mode="lm", step=i + 1, **{n: round(c[i], 5) for n, c in curves.items()})
            for i in range(steps)]
    gap = [abs(a - b) for a, b in zip(curves["triton-fp32"], curves["reference-fp32"])]
    noise = [abs(a - b) for a, b in zip(curves[low], curves["reference-fp32"])]
    n = min(50, steps)
    print(f"|triton-fp32 − reference-fp32|: max {max(gap):.4f}, mean of the last {n} steps {sum(gap[-n:]) / n:.4f}")
    print(f"|{low} − reference-fp32| (the 16-bit noise scale): max {max(noise):.4f}, mean of the last {n} "
          f"steps {sum(noise[-n:]) / n:.4f}")
    assert all(math.isfinite(v) for c in curves.values() for v in c), "non-finite loss"
    return rows


def stage_rows(B: int, T: int, card: str, sweep: bool) -> list[dict]:
    """Where ours spends a train step at one shape: the forward with and without saving, the backward's
    rerun of the forward (whole or from stage (3)), each backward stage; with ``sweep`` the local stage
    under several launch configurations of its two kernels."""
    from gdn2.fast.chunk_bwd import chunk_bwd_local, chunk_bwd_state
    from gdn2.fast.chunk_fwd import chunk_gdn2_fwd
    from gdn2.fast.config import BackwardConfig, LocalWYLaunch, PairwiseLaunch, StateBwdLaunch

    x = {n: t.detach() for n, t in op_inputs(B, T).items()}
    do = torch.randn(B, T, H, V, device=DEVICE, dtype=DTYPE)
    kw = dict(scale=K ** -0.5, use_qk_l2norm_in_kernel=True)
    saved = chunk_gdn2_fwd(**x, **kw, save=True)
    default = BackwardConfig()
    dS_end, dR, _ = chunk_bwd_state(saved, do, None, None, None, default)
    local = lambda cfg=default: chunk_bwd_local(  # noqa: E731
        x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], K ** -0.5, None, saved, do, dR, dS_end, cfg,
        use_qk_l2norm_in_kernel=True)
    stages = {
        "forward": lambda: chunk_gdn2_fwd(**x, **kw),
        "forward-save": lambda: chunk_gdn2_fwd(**x, **kw, save=True),
        # the backward's rerun of the forward: all four kernels (recompute=True), stages (3)-(5)
        # ("partial") or the state pass only ("states")
        "bwd-rerun": lambda: chunk_gdn2_fwd(**x, **kw, save=True, need_o=False),
        "bwd-rerun-partial": lambda: chunk_gdn2_fwd(**x, **kw, save=True, kept=saved._replace(Y=None),
                                                    need_o=False),
        "bwd-rerun-states": lambda: chunk_gdn2_fwd(**x, **kw, save=True, kept=saved, need_o=False),
        "bwd-state": lambda: chunk_bwd_state(saved, do, None, None, None, default),
        "bwd-local": local,
    }
    if sweep:
        stages["bwd-state-bv64"] = lambda: chunk_bwd_state(saved, do, None, None, None,
                                                           BackwardConfig(state=StateBwdLaunch(BV=64)))
        for name, cfg in (("wy4", BackwardConfig(local_wy=LocalWYLaunch(num_warps=4))),
                          ("wy8-bk32", BackwardConfig(local_wy=LocalWYLaunch(BK=32))),
                          ("wy8-bv32", BackwardConfig(local_wy=LocalWYLaunch(BV=32))),
                          ("pw8", BackwardConfig(pairwise=PairwiseLaunch(num_warps=8)))):
            stages[f"bwd-local-{name}"] = lambda cfg=cfg: local(cfg)
    rows = []
    for name, fn in stages.items():
        try:
            ms = timed_ms(fn, warmup=25, rep=100)
        except Exception as e:  # a launch configuration the compiler rejects is a result too
            print(f"stages {B}x{T:<6} {name:16s} failed: {e!r:.120}")
            continue
        rows.append(dict(card=card, mode="stages", shape=f"{B}x{T}", impl=name, ms=round(ms, 4)))
        print(f"stages {B}x{T:<6} {name:16s} {ms:8.3f} ms", flush=True)
    return rows


def kernel_profile(B: int, T: int) -> None:
    """Per-kernel device time of one train step of ours, printed (bench.profile_kernels)."""
    x = op_inputs(B, T)
    do = torch.randn(B, T, H, V, device=DEVICE, dtype=DTYPE)
    profile_kernels(f"one train step {B}x{T}", train_step(
        lambda: gdn2.fast.chunk_gdn2(**x, use_qk_l2norm_in_kernel=True)[0], do))


def bench_stages(args, card: str) -> list[dict]:
    rows = []
    for i, (B, T, sweep) in enumerate(STAGE_SHAPES):
        if i and args.quick:
            break
        rows += stage_rows(B, T, card, sweep=sweep)
        if i == 0:
            kernel_profile(B, T)
    return rows


MODES = {"fwdbwd": bench_fwdbwd, "crossover": bench_crossover, "stages": bench_stages, "lm": bench_lm}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="all", choices=["all", *MODES])
    ap.add_argument("--out", default="", help="CSV folder (default: benchmarks/results; dry run: a temporary one)")
    ap.add_argument("--quick", action="store_true", help="skip the shapes above 16K tokens (stages: the second shape)")
    ap.add_argument("--shapes", default="", help="comma-separated BxT to run (fwdbwd), e.g. 8x2048,1x65536")
    ap.add_argument("--lm-steps", type=int, default=200)
    ap.add_argument("--no-peer", action="store_true", help="skip flash-linear-attention (its autotuning is slow)")
    ap.add_argument("--keep-peer-tuning", action="store_true",
                    help="let the peer keep the launch settings it autotuned at the first shape (faster to run)")
    ap.add_argument("--dry-run", action="store_true",
                    help="run the host code on the CPU through Triton's interpreter at tiny shapes and 3 LM steps")
    args = ap.parse_args()
    if args.dry_run:
        bench.dry_run(globals(), H=2, K=32, V=32, SHAPES=[(1, 128), (2, 64)],
                                 CROSSOVER_T=[64, 128], STAGE_SHAPES=[(1, 128, True), (2, 64, False)],
                                 LM_MODEL=dict(hidden_size=64, num_layers=2, num_heads=2, head_dim=32),
                                 LM_BATCH=2, LM_SEQ=64)
        args.lm_steps = min(args.lm_steps, 3)
    args.out = bench.out_folder(args.out)
    import triton

    torch.manual_seed(0)
    card = bench.card_name()
    print(f"card: {card}; Triton {triton.__version__}, torch {torch.__version__}")
    os.makedirs(args.out, exist_ok=True)
    for mode in MODES if args.mode == "all" else [args.mode]:
        rows = MODES[mode](args, card)
        path = csv_path(args, card, mode)
        write_csv(path, rows)
        if mode == "fwdbwd":
            print(f"{'shape':9} {'impl':11} {'ms':>9} {'peak MiB':>9} {'peer/x':>7} {'sdpa/x':>7}")
            for r in rows:
                print(f"{r['shape']:9} {r['impl']:11} {r['ms']:>9} {r['peak_mib']:>9} {r['peer_over_this']:>7} "
                      f"{r['sdpa_over_this']:>7}")
            faster = [r["shape"] for r in rows if r["impl"] == "ours" and r["sdpa_over_this"] > 1]
            print(f"ours beats SDPA (fwd+bwd) at: {', '.join(faster) or 'no shape measured'}")
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
