"""The GDN2 layer against the peer's layer and an attention layer of the same width, forward and train step.

    python benchmarks/bench_layer.py [--shapes 8x2048,1x16384] [--no-peer] [--no-compile] [--out DIR]
    python benchmarks/bench_layer.py --variants [V1,V2,...] [--shapes ...]   # our layer under other defaults

Three layers at hidden size 2048, 16 heads of 128 (bfloat16 parameters and inputs):

- ``ours``: ``gdn2.GDN2(backend="triton")`` (its fused path: Triton short convolution, gates and norm);
- ``ours-compiled``: the same under ``torch.compile`` (8x2048 only);
- ``peer``: flash-linear-attention 0.6.0's ``fla.layers.gdn2.GatedDeltaNet2`` (same sizes);
- ``sdpa``: q, k, v, o projections around PyTorch's causal scaled-dot-product attention (flash).

Shapes: 8x2048, 4x4096, 1x16384, 1x65536, and ``varlen``: one packed row of 16384 tokens split into
documents of random lengths (``cu_seqlens``; attention has no packed path here, so no sdpa row). Each
timing is the median of ``triton.testing.do_bench`` after warm-up, on fresh random inputs; a train step
is the forward and the backward of ⟨y, dy⟩ with gradients for the input and every parameter. Peak memory
is the allocator's peak during one train step above what the inputs and parameters hold. The
operator alone (``ours-op``, ``peer-op``: ``chunk_gdn2`` of ours and the peer on the same inputs) is
timed too, at 8x2048 and on the packed row. A profile of the train step at 8x2048 splits its device
time into the mixing kernels, the short convolution, the norm, the GEMMs and the rest (``mode=profile``),
for our layer and the peer's; a profile of the forward (``mode=profile-fwd``, at 8x2048 and 1x65536) does
the same for one ``no_grad`` call and adds ``idle``: the timed forward less its device time, the share of
the call the GPU waits for the host.

Writes ``results/layer-<card>.csv``: card, mode (fwd, train, profile), shape, impl, ms, peak_mib,
peer_over_this, sdpa_over_this (and for profile rows the category in ``impl`` and its share: of the
device time for ``profile``, of the timed forward for ``profile-fwd``).

``--variants`` times only our layer, forward and train step, under other default launch settings and
``recompute`` modes (``launch_defaults.py``; default: :data:`VARIANTS`, at 8x2048, 1x16384 and the
packed row), the defaults first and again last (their spread is the run's noise). Writes
``results/layer-variants-<card>.csv``: card, shape, variant, mode, ms, peak_mib, defaults_over_this
(> 1: the variant is faster), rel_err_vs_defaults (the largest relative RMS difference of the output and
of every gradient from the defaults' for one fixed dy: bfloat16 rounding, or a variant that computes
something else). A default changes only on such a measured gain, and the GPU suite passes with it.
"""

import argparse
import sys
import time
from pathlib import Path

import launch_defaults
import torch
import torch.nn.functional as F
import triton
from bench import peer_ops, retune_peer, write_csv
from torch import nn
from triton.runtime.errors import OutOfResources
from triton.testing import do_bench
from triton_faults import rel_rms

import gdn2

D, H, K = 2048, 16, 128
SHAPES = [(8, 2048), (4, 4096), (1, 16384), (1, 65536)]
VARLEN_TOKENS = 16384
FIELDS = ["card", "mode", "shape", "impl", "ms", "peak_mib", "peer_over_this", "sdpa_over_this", "share"]
#: what --variants times besides the defaults (""): the recompute modes; the WY kernel's load order (each
#: load where first used: four waits on memory per key tile instead of one) and the diagonal kernel's
#: prefetch; the WY kernel's key-tile width and warps (narrower tiles hold fewer registers, so more
#: programs share an SM), and two programs per chunk, each one key tile and one value tile; the
#: off-diagonal kernel at 2 warps (no spills when compiled for sm_90: resources.py --set); the state
#: kernels' widths, whose rules count programs (sequences × value heads), not the tokens of each
#: sequence, and their stages
VARIANTS = ("", "recompute=True", "recompute=states", "recompute=False", "fwd.wy.LOADS_FIRST=False",
            "fwd.diag.PREFETCH=True",
            "fwd.wy.BK=32", "fwd.wy.BK=16", "fwd.wy.NP=2+fwd.wy.BV=64",
            "fwd.wy.BK=32+fwd.wy.num_warps=8", "fwd.wy.num_warps=8",
            "fwd.offdiag.num_warps=2", "fwd.state.BV=32+fwd.state.num_warps=4",
            "fwd.state.BV=64+fwd.state.num_warps=4", "fwd.state.num_stages=3", "bwd.state.num_stages=3",
            "bwd.state.BV=32", "bwd.state.BV=64")
VARIANT_SHAPES = ("8x2048", "1x16384", "varlen")
VARIANT_FIELDS = ["card", "shape", "variant", "mode", "ms", "peak_mib", "defaults_over_this", "rel_err_vs_defaults"]


class Attention(nn.Module):
    """The attention layer of the same width: four projections around causal SDPA."""

    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(D, 3 * D, bias=False)
        self.o = nn.Linear(D, D, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, H, K).permute(2, 0, 3, 1, 4)       # [B, H, T, K] each
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return self.o(o.transpose(1, 2).reshape(B, T, D))


def peer_layer():
    """flash-linear-attention's GDN-2 layer, or None where it is not installed."""
    try:
        from fla.layers.gdn2 import GatedDeltaNet2
    except ImportError as e:
        print(f"peer layer unavailable: {e}")
        return None
    return GatedDeltaNet2(hidden_size=D, head_dim=K, num_heads=H)


def layers(args) -> dict[str, tuple[nn.Module, str]]:
    """name -> (module in bfloat16 on the GPU, how to call it: "ours", "peer" or "sdpa")."""
    out = {"ours": (gdn2.GDN2(D, H, head_dim=K, backend="triton"), "ours")}
    if not args.no_peer:
        peer = peer_layer()
        if peer is not None:
            out["peer"] = (peer, "peer")
    out["sdpa"] = (Attention(), "sdpa")
    for name, (m, kind) in out.items():
        out[name] = (m.to("cuda", torch.bfloat16), kind)
    return out


def call(module: nn.Module, kind: str, x: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
    if kind == "ours":
        return module(x, cu_seqlens=cu_seqlens)
    if kind == "peer":
        return module(x, cu_seqlens=cu_seqlens)[0]
    return module(x)


def random_lengths(total: int, gen: torch.Generator) -> torch.Tensor:
    """cu_seqlens of documents of random lengths (64 to 4096 tokens) filling ``total`` tokens."""
    cuts, at = [0], 0
    while at < total:
        at = min(total, at + int(torch.randint(64, 4097, (1,), generator=gen)))
        cuts.append(at)
    return torch.tensor(cuts, dtype=torch.int32, device="cuda")


def time_layer(module, kind, x, cu) -> tuple[float, float, float]:
    """(forward ms, train-step ms, peak MiB of a train step)."""
    x = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    params = [p for p in module.parameters() if p.requires_grad]

    def fwd():
        with torch.no_grad():
            call(module, kind, x, cu)

    def train():
        y = call(module, kind, x, cu)
        torch.autograd.grad(y, [x, *params], dy)

    train()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    train()
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return (do_bench(fwd, warmup=10, rep=100, return_mode="median"),
            do_bench(train, warmup=5, rep=100, return_mode="median"), peak)


# first match wins: the norms before the mixing kernels (the peer's l2norm is part of its mixing, the
# gated norm is not), the gates before the mixing (the peer runs its gate activations as own kernels)
CATEGORIES = (("gated norm", ("gated_rms_norm", "layer_norm", "rms_norm_gated", "rmsnorm", "fused_norm_gate")),
              ("short convolution", ("short_conv", "conv1d", "conv_depthwise", "causal_conv")),
              ("gates", ("gate_fwd", "gate_bwd", "sigmoid", "kda_gate")),
              ("mixing kernels", ("chunk", "solve_tril", "recompute_w_u", "wy_", "l2norm", "fused_recurrent",
                                  "gdn2", "kda")),
              ("GEMMs", ("gemm", "sm90", "cutlass", "nvjet", "xmma", "cublas", "matmul")))


def category(kernel: str) -> str:
    """The category of a kernel's name: the first of :data:`CATEGORIES` one of whose keys it holds."""
    key = kernel.lower()
    return next((c for c, keys in CATEGORIES if any(k in key for k in keys)), "other")


def categorise(events, steps: int) -> dict[str, float]:
    """Device ms per step of each category from profiler averages (objects with ``key`` and
    ``device_time_total`` in µs over ``steps`` steps)."""
    totals: dict[str, float] = {}
    for e in events:
        if e.device_time_total > 0:
            cat = category(e.key)
            totals[cat] = totals.get(cat, 0.0) + e.device_time_total / steps / 1e3
    return totals


def profile_share_rows(name: str, totals: dict[str, float], card: str, shape: str,
                       wall_ms: float | None = None) -> list[dict]:
    """The CSV rows of one profile, largest first: ``mode=profile`` with each category's share of the
    device time, or with ``wall_ms`` (the timed forward) ``mode=profile-fwd`` with ``idle`` = wall_ms
    less the device time (not below 0) and each share of wall_ms."""
    totals = dict(totals)
    device = sum(totals.values())
    if wall_ms is not None:
        totals["idle"] = max(wall_ms - device, 0.0)
    whole = device if wall_ms is None else max(wall_ms, device)
    mode = "profile" if wall_ms is None else "profile-fwd"
    return [dict(card=card, mode=mode, shape=shape, impl=f"{name}:{cat}", ms=round(ms, 4),
                 share=round(ms / whole, 4))
            for cat, ms in sorted(totals.items(), key=lambda kv: -kv[1])]


def profile_rows(name: str, module, kind, x, card: str, shape: str, cu: torch.Tensor | None = None,
                 wall_ms: float | None = None) -> list[dict]:
    """Device ms of one layer's train step by category (torch profiler, mean of 5 steps), or with
    ``wall_ms`` (its timed forward) of one ``no_grad`` forward (:func:`profile_share_rows`)."""
    x = x.detach().requires_grad_()
    dy = torch.randn_like(x)
    params = [p for p in module.parameters() if p.requires_grad]

    def step():
        if wall_ms is not None:
            with torch.no_grad():
                call(module, kind, x, cu)
        else:
            torch.autograd.grad(call(module, kind, x, cu), [x, *params], dy)

    for _ in range(2):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(5):
            step()
        torch.cuda.synchronize()
    for e in prof.key_averages():
        if e.device_time_total > 0:
            print(f"   {name:5s} {e.device_time_total / 5:9.1f} us  {category(e.key):18s} {e.key[:80]}")
    return profile_share_rows(name, categorise(prof.key_averages(), 5), card, shape, wall_ms)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shapes", default="", help="comma-separated BxT (and/or 'varlen'); default: all")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    ap.add_argument("--keep-peer-tuning", action="store_true",
                    help="let the peer keep the launch settings it chose at its first shape (or found in "
                         "Triton's cache) instead of autotuning again at every shape")
    ap.add_argument("--warm", action="store_true",
                    help="only compile: one train step of every layer (the peer autotuning) and operator per "
                         "shape, no timing and no CSV; fills Triton's cache for a later timed run")
    ap.add_argument("--compile-workers", type=int, default=0, metavar="N",
                    help="with --warm: the warm-up in N processes at once, each compiling a share of "
                         "every autotune candidate and timing nothing (precompile.py); a later run's "
                         "autotuning then only times the candidates")
    ap.add_argument("--precompile-rank", default=None, metavar="R/N", help=argparse.SUPPRESS)
    ap.add_argument("--variants", nargs="?", const=",".join(VARIANTS), default=None, metavar="V1,V2,...",
                    help="time our layer under other default launch settings instead (launch_defaults.py; "
                         "'' is the defaults); without a list: VARIANTS")
    ap.add_argument("--also", default="", metavar="V1,V2,...",
                    help="also time our layer under these variants (as --variants names them) in the same "
                         "run as the peer: rows ours[V]")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    if args.variants is not None:
        run_variants(args)
        return
    if args.compile_workers and not args.warm:
        raise SystemExit("--compile-workers goes with --warm")
    if args.compile_workers:
        from precompile import spawn

        argv = [a for i, a in enumerate(sys.argv) if not (a.startswith("--compile-workers") or
                                                          sys.argv[i - 1] == "--compile-workers")]
        spawn(argv, args.compile_workers)
        return
    if args.precompile_rank:
        from precompile import candidates_compiled

        rank, world = map(int, args.precompile_rank.split("/"))
        with candidates_compiled(rank, world) as counts:
            run(args)
        print(f"rank {rank}/{world}: {counts['compiled']} candidates compiled, {counts['failed']} failed")
        return
    run(args)


def run(args) -> None:
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    print(f"card: {card}; Triton {triton.__version__}, torch {torch.__version__}")
    wanted = set(args.shapes.split(",")) if args.shapes else None
    mods = layers(args)
    also = [v for v in args.also.split(",") if v] if not args.warm else []
    launch_defaults.validate(also)            # every variant valid before anything is timed
    gen = torch.Generator().manual_seed(0)
    rows = []
    cases = [(f"{B}x{T}", B, T) for B, T in SHAPES] + [("varlen", 1, VARLEN_TOKENS)]
    if args.precompile_rank:
        # many processes share the GPU: at most 16K tokens each (T is not part of what is compiled
        # beyond its divisibility by 16, which these lengths keep)
        cases = [(shape, B, min(T, max(16384 // B, 16))) for shape, B, T in cases]
    for shape, B, T in cases:
        if wanted is not None and shape not in wanted:
            continue
        x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
        cu = random_lengths(T, gen) if shape == "varlen" else None
        if "peer" in mods and not args.keep_peer_tuning:
            retune_peer()
        if args.warm:
            warm(mods, x, cu, args)
            continue
        times = {}
        # every layer, then ours under each --also variant, beside the peer in this run
        entries = [(name, module, kind, "") for name, (module, kind) in mods.items()]
        entries += [(f"ours[{v}]", *mods["ours"], v) for v in also]
        for name, module, kind, variant in entries:
            if cu is not None and kind == "sdpa":
                continue
            t0 = time.perf_counter()
            with launch_defaults.overridden(launch_defaults.parse(variant)):
                try:
                    times[name] = time_layer(module, kind, x, cu)
                except torch.OutOfMemoryError:
                    print(f"{shape} {name}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                except OutOfResources as e:          # a variant's launch that needs more than the card has
                    print(f"{shape} {name}: does not fit: {e}")
                    continue
            print(f"{shape} {name:14s} fwd {times[name][0]:8.3f} ms  train {times[name][1]:8.3f} ms  "
                  f"peak {times[name][2]:9.1f} MiB  ({time.perf_counter() - t0:.0f} s)", flush=True)
        if shape == "8x2048" and not args.no_compile:
            compiled = torch.compile(mods["ours"][0])
            try:
                times["ours-compiled"] = time_layer(compiled, "ours", x, None)
                print(f"{shape} ours-compiled  fwd {times['ours-compiled'][0]:8.3f}  train "
                      f"{times['ours-compiled'][1]:8.3f}", flush=True)
            except Exception as e:  # a compile failure is a result, reported
                print(f"{shape} ours-compiled failed: {type(e).__name__}: {str(e)[:300]}")
        for i, mode in enumerate(("fwd", "train")):
            for name, t in times.items():
                rows.append(dict(card=card, mode=mode, shape=shape, impl=name, ms=round(t[i], 4),
                                 peak_mib=round(t[2], 1) if mode == "train" else "",
                                 peer_over_this=round(times["peer"][i] / t[i], 3) if "peer" in times else "",
                                 sdpa_over_this=round(times["sdpa"][i] / t[i], 3) if "sdpa" in times else ""))
        if shape in ("varlen", "8x2048", "1x16384"):
            rows += op_rows(x, cu, card, args)
        for name in ("ours", "peer"):
            if name not in mods or name not in times:
                continue
            if shape == "8x2048":
                rows += profile_rows(name, *mods[name], x, card, shape)
            if shape in ("8x2048", "1x65536"):
                rows += profile_rows(name, *mods[name], x, card, shape, cu, wall_ms=times[name][0])
        del x
        torch.cuda.empty_cache()
        write_csv(Path(args.out) / f"layer-{card.replace(' ', '_')}.csv", rows, FIELDS)
    if not args.warm:
        print(f"wrote {Path(args.out) / f'layer-{card.replace(chr(32), chr(95))}.csv'}")


def layer_result(module, x: torch.Tensor, cu: torch.Tensor | None) -> list[torch.Tensor]:
    """The layer's output and the gradients of its input and every parameter for a fixed dy, in float32."""
    x = x.detach().requires_grad_()
    dy = torch.randn(x.shape, generator=torch.Generator(device=x.device).manual_seed(2), device=x.device,
                     dtype=x.dtype)
    y = call(module, "ours", x, cu)
    grads = torch.autograd.grad(y, [x, *module.parameters()], dy)
    return [t.float() for t in (y.detach(), *grads)]


def run_variants(args) -> None:
    """Our layer under each variant (the defaults first and last), forward and train step, per shape."""
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    print(f"card: {card}; Triton {triton.__version__}, torch {torch.__version__}")
    variants = ["", *(v for v in args.variants.split(",") if v), ""]
    launch_defaults.validate(variants)       # every variant valid before anything is timed
    module = gdn2.GDN2(D, H, head_dim=K, backend="triton").to("cuda", torch.bfloat16)
    gen = torch.Generator().manual_seed(0)
    shapes = args.shapes.split(",") if args.shapes else VARIANT_SHAPES
    path = Path(args.out) / f"layer-variants-{card.replace(' ', '_')}.csv"
    rows = []
    for shape in shapes:
        B, T = (1, VARLEN_TOKENS) if shape == "varlen" else map(int, shape.split("x"))
        x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
        cu = random_lengths(T, gen) if shape == "varlen" else None
        base = reference = None
        for i, v in enumerate(variants):
            name = v or ("defaults" if i == 0 else "defaults (again)")
            t0 = time.perf_counter()
            with launch_defaults.overridden(launch_defaults.parse(v)):
                try:
                    t = time_layer(module, "ours", x, cu)
                    result = layer_result(module, x, cu)
                except torch.OutOfMemoryError:
                    print(f"{shape} {name}: out of memory")
                    torch.cuda.empty_cache()
                    continue
                except OutOfResources as e:
                    print(f"{shape} {name}: does not fit: {e}")
                    continue
            base, reference = base or t, reference or result
            err = max(rel_rms(a, e) for a, e in zip(result, reference))
            print(f"{shape} {name:42s} fwd {t[0]:8.3f} ms  train {t[1]:8.3f} ms  peak {t[2]:9.1f} MiB  "
                  f"defaults/this {base[1] / t[1]:.3f}  rel. error {err:.1e}  ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
            rows += [dict(card=card, shape=shape, variant=name, mode=mode, ms=round(t[j], 4),
                          peak_mib=round(t[2], 1) if mode == "train" else "",
                          defaults_over_this=round(base[j] / t[j], 3), rel_err_vs_defaults=f"{err:.2e}")
                     for j, mode in enumerate(("fwd", "train"))]
            write_csv(path, rows, VARIANT_FIELDS)
        del x
        torch.cuda.empty_cache()
    print(f"wrote {path}")


def warm(mods, x: torch.Tensor, cu: torch.Tensor | None, args) -> None:
    """One train step of every layer and operator at this shape: compiles (and autotunes) their kernels."""
    t0 = time.perf_counter()
    for module, kind in mods.values():
        if cu is not None and kind == "sdpa":
            continue
        xx = x.detach().requires_grad_()
        call(module, kind, xx, cu).sum().backward()
    op_rows(x, cu, "", args, timed=False)
    torch.cuda.synchronize()
    print(f"warmed {x.shape[0]}x{x.shape[1]}{' packed' if cu is not None else ''} in "
          f"{time.perf_counter() - t0:.0f} s", flush=True)


def op_rows(x: torch.Tensor, cu: torch.Tensor | None, card: str, args, timed: bool = True) -> list[dict]:
    """The operator alone, ours and the peer, forward and train step, at the layer's shape (packed or not)."""
    B, T = x.shape[:2]
    gen = torch.Generator(device="cuda").manual_seed(1)
    r = lambda *s, dt=torch.bfloat16: torch.randn(*s, device="cuda", dtype=dt, generator=gen)  # noqa: E731
    inputs = dict(q=r(B, T, H, K), k=r(B, T, H, K), v=r(B, T, H, K), g=F.logsigmoid(r(B, T, H, K, dt=torch.float32)),
                  b=torch.sigmoid(r(B, T, H, K)), w=torch.sigmoid(r(B, T, H, K)))
    impls = {"ours-op": gdn2.fast.chunk_gdn2}
    peer_chunk = None if args.no_peer else peer_ops()[0]
    if peer_chunk is not None:
        impls["peer-op"] = peer_chunk
    shape = "varlen" if cu is not None else f"{B}x{T}"
    times = {}
    for name, op in impls.items():
        leaves = {n: t.clone().requires_grad_() for n, t in inputs.items()}
        do = torch.randn_like(inputs["v"])

        def fwd(op=op):
            with torch.no_grad():
                op(**inputs, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)

        def train(op=op, leaves=leaves, do=do):
            o, _ = op(**leaves, cu_seqlens=cu, use_qk_l2norm_in_kernel=True)
            torch.autograd.grad(o, list(leaves.values()), do)

        if not timed:
            fwd()
            train()
            continue
        times[name] = (do_bench(fwd, warmup=10, rep=100, return_mode="median"),
                       do_bench(train, warmup=5, rep=100, return_mode="median"))
        print(f"op {shape} {name:8s} fwd {times[name][0]:.3f} ms  train {times[name][1]:.3f} ms", flush=True)
    return [dict(card=card, mode=mode, shape=shape, impl=name, ms=round(t[i], 4),
                 peer_over_this=round(times["peer-op"][i] / t[i], 3) if "peer-op" in times else "")
            for i, mode in enumerate(("fwd", "train")) for name, t in times.items()]


if __name__ == "__main__":
    main()
