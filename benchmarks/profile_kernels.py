"""Every kernel of one call of our layer (and the peer's), in launch order, with its device time.

    python benchmarks/profile_kernels.py [--shape varlen|BxT] [--train] [--no-peer] [--gemms]
    python benchmarks/profile_kernels.py --variants V1,V2,... [--shape ...] [--train]

A diagnostic for finding where a layer's call spends its device time kernel by kernel (``bench_layer.py``
sums them by category): hidden size 2048, 16 heads of 128, bfloat16, the shapes of ``bench_layer.py``
(``varlen``: its packed row of 16384 tokens). Each row is the mean over 5 calls of one launch position:
its µs and the kernel's name; the last row the sum. ``--train`` profiles a train step instead of a
``no_grad`` forward. ``--gemms`` also times the layer's low-rank projections three ways (as two GEMMs
that each read x, as one GEMM of both weights, and the up-projection with its bias on a column slice of
that product against a contiguous input), the median of ``triton.testing.do_bench``. ``--variants``
profiles only our layer, under the defaults and under each variant (``launch_defaults.py``), and prints
each kernel's µs per call summed over its launches, one column per variant: a kernel's own time in the
layer, which the layer's whole time shows only within its noise. Prints only.
"""

import argparse

import launch_defaults
import torch
import torch.nn.functional as F
from bench_layer import VARLEN_TOKENS, D, H, K, call, layers, random_lengths
from triton.testing import do_bench

import gdn2

STEPS = 5


def kernel_times(module, kind: str, x: torch.Tensor, cu: torch.Tensor | None, train: bool) -> list[tuple[str, float]]:
    """(name, mean µs) of each launch position of one call, in launch order."""
    x = x.detach().requires_grad_(train)
    params = [p for p in module.parameters() if p.requires_grad]
    dy = torch.randn_like(x)

    def step():
        if train:
            torch.autograd.grad(call(module, kind, x, cu), [x, *params], dy)
        else:
            with torch.no_grad():
                call(module, kind, x, cu)

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(STEPS):
            step()
        torch.cuda.synchronize()
    kernels = [(e.name, e.time_range.elapsed_us()) for e in prof.events()
               if e.device_type == torch.autograd.DeviceType.CUDA]
    per = len(kernels) // STEPS
    # the calls may differ by a launch: the flag word's copy to the host is queued only when no earlier
    # copy is in flight (gdn2.fast.checks)
    if per * STEPS != len(kernels):
        print(f"  {len(kernels)} kernels over {STEPS} calls: not the same launches each call; listing "
              f"them all, each µs divided by {STEPS} (so sums are per call)")
        return [(name, us / STEPS) for name, us in kernels]
    return [(kernels[i][0], sum(kernels[i + s * per][1] for s in range(STEPS)) / STEPS) for i in range(per)]


def gemm_probes(tokens: int) -> None:
    """The low-rank projections' GEMMs at ``tokens`` tokens, µs."""
    x = torch.randn(tokens, D, device="cuda", dtype=torch.bfloat16)
    wf, wg = (torch.randn(128, D, device="cuda", dtype=torch.bfloat16) / D ** 0.5 for _ in range(2))
    up = torch.randn(D, 128, device="cuda", dtype=torch.bfloat16) / 128 ** 0.5
    bias = torch.randn(D, device="cuda", dtype=torch.bfloat16)
    both = torch.cat([wf, wg])
    low = F.linear(x, both)

    def us(fn) -> float:
        return do_bench(fn, return_mode="median") * 1e3

    print(f"low-rank GEMMs at {tokens} tokens, µs:")
    print(f"  two down-projections, each reading x:      {us(lambda: (F.linear(x, wf), F.linear(x, wg))):8.1f}")
    print(f"  one down-projection of both weights:       {us(lambda: F.linear(x, both)):8.1f}")
    print(f"  the same with the weights' concatenation:  {us(lambda: F.linear(x, torch.cat([wf, wg]))):8.1f}")
    copied = us(lambda: F.linear(low[:, 128:].contiguous(), up, bias))
    print(f"  up-projection + bias, copied slice:        {copied:8.1f} (the copy included)")
    contiguous = low[:, 128:].contiguous()
    print(f"  up-projection + bias, contiguous input:    {us(lambda: F.linear(contiguous, up, bias)):8.1f}")
    print(f"  up-projection + bias, column slice input:  {us(lambda: F.linear(low[:, 128:], up, bias)):8.1f}")
    print(f"  up-projection, no bias, column slice:      {us(lambda: F.linear(low[:, :128], up)):8.1f}")
    print(f"  up-projection, no bias, contiguous:        {us(lambda: F.linear(contiguous, up)):8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="varlen", help="'varlen' (the packed row) or BxT")
    ap.add_argument("--train", action="store_true", help="a train step instead of a no_grad forward")
    ap.add_argument("--no-peer", action="store_true")
    ap.add_argument("--gemms", action="store_true", help="also time the low-rank projections' GEMMs")
    ap.add_argument("--variants", default="", metavar="V1,V2,...",
                    help="only our layer, its kernels by name under the defaults and each variant")
    args = ap.parse_args()
    args.no_compile = True
    torch.manual_seed(0)
    B, T = (1, VARLEN_TOKENS) if args.shape == "varlen" else map(int, args.shape.split("x"))
    x = torch.randn(B, T, D, device="cuda", dtype=torch.bfloat16)
    cu = random_lengths(T, torch.Generator().manual_seed(0)) if args.shape == "varlen" else None
    print(f"{torch.cuda.get_device_name()}, {args.shape}, {'train step' if args.train else 'forward'}")
    if args.variants:
        compare_variants(args, x, cu)
        return
    for name, (module, kind) in layers(args).items():
        if kind == "sdpa":
            continue
        rows = kernel_times(module, kind, x, cu, args.train)
        print(f"{name}: {len(rows)} launches")
        for kernel, us in rows:
            print(f"  {us:9.1f}  {kernel[:110]}")
        print(f"  {sum(us for _, us in rows):9.1f}  total")
    if args.gemms:
        gemm_probes(B * T)


def compare_variants(args, x: torch.Tensor, cu: torch.Tensor | None) -> None:
    """Our layer's kernels by name, µs per call, under the defaults and each variant."""
    variants = ["", *(v for v in args.variants.split(",") if v)]
    launch_defaults.validate(variants)
    module = gdn2.GDN2(D, H, head_dim=K, backend="triton").to("cuda", torch.bfloat16)
    columns = []
    for v in variants:
        with launch_defaults.overridden(launch_defaults.parse(v)):
            by_name: dict[str, float] = {}
            for kernel, us in kernel_times(module, "ours", x, cu, args.train):
                by_name[kernel] = by_name.get(kernel, 0.0) + us
        columns.append(by_name)
    names = list(dict.fromkeys(k for c in columns for k in c))
    for i, v in enumerate(variants):
        print(f"[{i}] {v or 'defaults'}")
    print(" ".join(f"{f'[{i}]':>9}" for i in range(len(variants))) + "  kernel")
    for name in names:
        print(" ".join(f"{c.get(name, 0.0):9.1f}" for c in columns) + f"  {name[:90]}")
    print(" ".join(f"{sum(c.values()):9.1f}" for c in columns) + "  total")


if __name__ == "__main__":
    main()
