"""Short convolution benchmark: ``gdn2.fast.conv`` against the PyTorch module the layer runs today.

    python benchmarks/bench_conv.py            # about a minute on an H200
    python benchmarks/bench_conv.py --sweep    # also time other launch settings (gdn2.fast.config)
    python benchmarks/bench_conv.py --sweep fwd   # the forward's launch settings only
    python benchmarks/bench_conv.py --sweep layer # the forward's, on the layer's own call only

``--sweep`` times the forward's launches at 4×4096 and on one of the layer's own calls (one
2048-channel projection, contiguous, a packed row of 16384 tokens: shape ``packed16384x2048``).

A layer's q, k and v side by side: D = 3·2048 channels (H = HV = 16, K = V = 128), W = 4, bfloat16, x a
column slice of a wider projection output (as the layer passes it), weight float32. For each B×T:

- ``fwd``: y = SiLU(conv(x)); ``bwd``: dx and dweight from dy (the backward alone, through the
  driver); ``fwdbwd``: forward and backward through autograd, as training runs it;
- ``torch``: the same through ``gdn2.conv.ShortConvolution`` on all D channels at once (the layer today
  runs three such modules, one per q, k, v);
- ``floor_us``: x read and y written once (forward), x, dy read and dx written once (backward), over
  the device copy bandwidth measured in the same run.

Decoding: ``short_conv_step`` for N sequences, one call, and the module on one token with its state.
Every time is the median of ``triton.testing.do_bench`` on fresh random inputs (never zeros).

Writes ``results/conv-<card>.csv``: card, shape (B×T, or N sequences for ``step``), what (fwd, bwd,
fwdbwd, step), launch (``default``, or the swept launch setting), ours_us, torch_us, floor_us.
"""

import argparse
from pathlib import Path

import torch
from bench import write_csv
from triton.testing import do_bench

from gdn2.conv import ShortConvolution
from gdn2.fast.config import ConvBwdLaunch, ConvLaunch
from gdn2.fast.conv import bwd_launch, conv_bwd, conv_fwd, short_conv, short_conv_step

SHAPES = [(8, 2048), (4, 4096), (1, 16384), (1, 65536)]
D, W = 3 * 2048, 4
STEP_N = [1, 16, 256]
FIELDS = ["card", "shape", "what", "launch", "ours_us", "torch_us", "floor_us"]
#: every timed row of this run (the CSV, less its card column)
ROWS: list[dict] = []


def record(shape: str, what: str, launch: object, ours: float, ref: float | None, floor: float | None) -> None:
    ROWS.append(dict(shape=shape, what=what, launch=str(launch or "default"), ours_us=round(ours, 2),
                     torch_us="" if ref is None else round(ref, 2), floor_us="" if floor is None else round(floor, 2)))


def copy_bandwidth() -> float:
    """Bytes per second of a device-to-device copy, read plus written."""
    a = torch.randn(1 << 29, device="cuda", dtype=torch.bfloat16)
    b = torch.empty_like(a)
    ms = do_bench(lambda: b.copy_(a), return_mode="median")
    return 2 * a.numel() * a.element_size() / (ms * 1e-3)


def inputs(B: int, T: int) -> dict:
    proj = torch.randn(B, T, 2 * D, device="cuda", dtype=torch.bfloat16)
    return {"x": proj[..., :D], "weight": torch.randn(D, W, device="cuda") / W ** 0.5,
            "dy": torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)}


def module(weight: torch.Tensor) -> ShortConvolution:
    conv = ShortConvolution(D, W).cuda()
    with torch.no_grad():
        conv.weight.copy_(weight[:, None])
    return conv


def time_us(fn) -> float:
    return do_bench(fn, return_mode="median") * 1e3


def bench_shape(B: int, T: int, bw: float) -> dict:
    """The rows of one B×T; returns its inputs (for the sweep)."""
    x = inputs(B, T)
    conv = module(x["weight"])
    n = B * T * D * 2
    xg = x["x"].detach().requires_grad_()
    wg = x["weight"].detach().requires_grad_()

    def ours_fwdbwd():
        y, _ = short_conv(xg, wg)
        torch.autograd.backward(y, x["dy"])

    def torch_fwdbwd():
        y, _ = conv(xg)
        torch.autograd.backward(y, x["dy"])

    with torch.no_grad():
        rows = [("fwd", time_us(lambda: conv_fwd(x["x"], x["weight"], None, None, False, True)),
                 time_us(lambda: conv(x["x"])), 2 * n / bw * 1e6),
                ("bwd", time_us(lambda: conv_bwd(x["dy"], None, x["x"], x["weight"], None, None, True)),
                 None, 3 * n / bw * 1e6)]
    rows.append(("fwdbwd", time_us(ours_fwdbwd), time_us(torch_fwdbwd), 5 * n / bw * 1e6))
    for what, ours, ref, floor in rows:
        record(f"{B}x{T}", what, None, ours, ref, floor)
        ratio = f"{ref / ours:10.2f}" if ref else f"{'':>10}"
        print(f"{B:>3}×{T:<5} {what:>7} {ours:9.1f} {ref or float('nan'):9.1f} {floor:9.1f} {ratio}")
    return x


def time_fwd(x: dict, launch: ConvLaunch | None) -> float:
    return time_us(lambda: conv_fwd(x["x"], x["weight"], x.get("cu"), None, False, True, launch=launch))


def layer_call_inputs(tokens: int = 16384, channels: int = 2048) -> dict:
    """One of the layer's three calls on a packed row: a contiguous [1, tokens, 2048] projection output
    split into documents of 64 to 4096 tokens (a fixed draw)."""
    gen = torch.Generator().manual_seed(0)
    cuts = [0]
    while cuts[-1] < tokens:
        cuts.append(min(tokens, cuts[-1] + int(torch.randint(64, 4097, (1,), generator=gen))))
    return {"x": torch.randn(1, tokens, channels, device="cuda", dtype=torch.bfloat16),
            "weight": torch.randn(channels, W, device="cuda") / W ** 0.5,
            "cu": torch.tensor(cuts, dtype=torch.int32, device="cuda")}


def time_bwd(x: dict, launch: ConvBwdLaunch | None) -> float:
    return time_us(lambda: conv_bwd(x["dy"], None, x["x"], x["weight"], None, None, True, launch=launch))


def sweep_launches(x: dict, what: str = "all", shape: str | None = None) -> None:
    B, T = x["x"].shape[:2]
    shape = shape or f"{B}x{T}"
    print(f"sweep at {shape} (default first):")
    fwd = [ConvLaunch(BT=BT, BD=BD, num_warps=nw, CHANNELS_FIRST=first) for first in (False, True)
           for BT in (8, 16, 32, 64) for BD in (64, 128, 256) for nw in (1, 2, 4, 8)
           if BT * BD >= 32 * nw * 8 and (BT, nw) != (64, 1) and (shape == f"{B}x{T}" or (BT <= 32 and nw <= 4))]
    timed: dict[str, list[tuple[float, object]]] = {"fwd": [], "bwd": []}
    for launch in [None] + fwd:
        try:
            us = time_fwd(x, launch)
            timed["fwd"].append((us, launch))
            record(shape, "fwd", launch, us, None, None)
            print(f"  fwd {launch or 'default'}: {us:.1f} us")
        except Exception as e:  # a launch that does not compile or run is reported, not fatal
            print(f"  fwd {launch}: failed ({type(e).__name__})")
    rule = bwd_launch(B * T, D, W, x["x"].device)
    bwd = [ConvBwdLaunch(BD=BD, num_warps=nw, tokens=tokens) for BD in (64, 128, 256) for nw in (1, 2, 4)
           for tokens in (None, 16, 64, 256) if BD >= 32 * nw]
    for launch in ([None] + bwd) if what == "all" else []:
        try:
            us = time_bwd(x, launch)
            timed["bwd"].append((us, launch))
            record(shape, "bwd", launch, us, None, None)
            print(f"  bwd {launch or rule}: {us:.1f} us")
        except Exception as e:
            print(f"  bwd {launch}: failed ({type(e).__name__})")
    for what, rows in timed.items():
        if rows and rows[0][1] is None:
            best = min(rows, key=lambda r: r[0])
            print(f"  => {what}: default {rows[0][0]:.1f} us, fastest {best[0]:.1f} us with {best[1] or 'the default'}")


def bench_step(N: int) -> None:
    weight = torch.randn(D, W, device="cuda")
    conv = module(weight)
    x = torch.randn(N, 1, D, device="cuda", dtype=torch.bfloat16)
    state = torch.randn(N, D, W - 1, device="cuda", dtype=torch.bfloat16)
    with torch.no_grad():
        ours = time_us(lambda: short_conv_step(x, weight, state))
        ref = time_us(lambda: conv(x, state))
    record(str(N), "step", None, ours, ref, None)
    print(f"{N:>5} {ours:9.1f} {ref:9.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", nargs="?", const="all", choices=("all", "fwd", "layer"), default=None,
                        help="also time other launch settings at 4×4096 and on the layer's call (fwd: the "
                             "forward's only; layer: the forward's on the layer's call only, nothing else)")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = parser.parse_args()
    bw = copy_bandwidth()
    card = torch.cuda.get_device_name()
    print(f"{card}: copy {bw / 1e12:.2f} TB/s; D = {D}, W = {W}, bfloat16")
    print(f"{'B×T':>9} {'what':>7} {'ours_us':>9} {'torch_us':>9} {'floor_us':>9} {'torch/ours':>10}")
    for B, T in SHAPES if args.sweep != "layer" else []:
        x = bench_shape(B, T, bw)
        if args.sweep and (B, T) == (4, 4096):
            sweep_launches(x, args.sweep)
        del x
    if args.sweep:      # the layer's own call: one 2048-channel projection, contiguous, on a packed row
        call = layer_call_inputs()
        print(f"the layer's call: floor {4 * call['x'].numel() / bw * 1e6:.1f} us")
        sweep_launches(call, "fwd", "packed16384x2048")
    print(f"{'N':>5} {'step_us':>9} {'torch_us':>9}")
    for N in STEP_N if args.sweep != "layer" else []:
        bench_step(N)
    path = Path(args.out) / f"conv-{card.replace(' ', '_')}.csv"
    write_csv(path, [dict(card=card, **row) for row in ROWS], FIELDS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
