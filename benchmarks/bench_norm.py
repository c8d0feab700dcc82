"""Time the Triton gated output norm (gdn2.fast.norm) at the layer's shape, against the reference module.

    python3 benchmarks/bench_norm.py                 # the rule's launch, the reference eager and compiled
    python3 benchmarks/bench_norm.py --sweep         # also every launch of a small grid, forward and backward

Prints one line per measurement: what, launch, milliseconds, and the bandwidth of the bytes the kernel
must move (o, z read and y written forward; dy, o, z read and do, dz written backward).
"""

import argparse

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from triton.testing import do_bench

import gdn2.fast.norm as norm
from gdn2.norm import GatedRMSNorm, _rms_norm


@triton.jit
def _contiguous_fwd(o, z, weight, y, R, eps, V: tl.constexpr, BR: tl.constexpr, BV: tl.constexpr,
                    MATH: tl.constexpr):
    """The forward with plain int32 contiguous addressing (MATH) or y = o·z (not MATH): how much of the
    kernel's time its strided addressing and its arithmetic take."""
    o_r = tl.program_id(0) * BR + tl.arange(0, BR)
    o_v = tl.arange(0, BV)
    m_t = (o_r < R)[:, None] & (o_v < V)[None, :]
    off = o_r[:, None] * V + o_v[None, :]
    b_o = tl.load(o + off, mask=m_t, other=0.0).to(tl.float32)
    b_z = tl.load(z + off, mask=m_t, other=0.0).to(tl.float32)
    if MATH:
        b_w = tl.load(weight + o_v, mask=o_v < V, other=0.0).to(tl.float32)
        b_r = 1.0 / tl.sqrt(tl.sum(b_o * b_o, 1) / V + eps)
        b_y = (b_o * b_r[:, None]) * b_w[None, :] * (b_z * tl.sigmoid(b_z))
    else:
        b_y = b_o * b_z
    tl.store(y + off, b_y.to(y.dtype.element_ty), mask=m_t)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="8,2048,16,128", help="B,T,HV,V")
    parser.add_argument("--sweep", action="store_true")
    args = parser.parse_args()
    B, T, HV, V = map(int, args.shape.split(","))
    dev, dt, eps = "cuda", torch.bfloat16, 1e-5
    R = B * T * HV
    o = torch.randn(B, T, HV, V, device=dev, dtype=dt)
    proj = torch.randn(B, T, HV * V + 256, device=dev, dtype=dt)
    z_strided = proj[..., 256:].view(B, T, HV, V)
    z = z_strided.contiguous()
    w = torch.rand(V, device=dev) + 0.5
    dy = torch.randn_like(o)
    fwd_bytes, bwd_bytes = 3 * R * V * o.element_size(), 5 * R * V * o.element_size()

    def report(what, launch, ms, nbytes):
        print(f"{what:<28} {launch:<26} {ms * 1e3:9.1f} us  {nbytes / ms / 1e9:7.2f} TB/s", flush=True)

    copy = torch.empty(2 * R * V, device=dev, dtype=dt)
    src = torch.randn_like(copy)
    report("copy (read + write)", "-", do_bench(lambda: copy.copy_(src)), 2 * copy.numel() * copy.element_size())

    rule = norm.norm_launch(V)
    launch = (rule.BR, rule.num_warps, rule.num_stages, rule.programs_per_sm)
    name = f"BR={rule.BR} w={rule.num_warps} pps={rule.programs_per_sm}"
    for what, zz in (("fwd", z), ("fwd strided z", z_strided)):
        ms = do_bench(lambda zz=zz: torch.ops.gdn2.gated_rms_norm_fwd(o, zz, w, eps, *launch))
        report(what, name, ms, fwd_bytes)
    for what, zz in (("bwd", z), ("bwd strided z", z_strided)):
        ms = do_bench(lambda zz=zz: torch.ops.gdn2.gated_rms_norm_bwd(dy, o, zz, w, eps, *launch))
        report(what, name, ms, bwd_bytes)

    leaves = [x.detach().clone().requires_grad_() for x in (o, z, w)]

    def ours():
        y = norm.gated_rms_norm(leaves[0], leaves[1], leaves[2], eps)
        torch.autograd.grad(y, leaves, dy)

    module = GatedRMSNorm(V, eps).to(dev)
    ref_leaves = leaves[:2] + [module.weight]

    def reference():
        torch.autograd.grad(module(leaves[0], leaves[1]), ref_leaves, dy)

    # the module's computation without its type-checking decorator, which Dynamo cannot trace
    compiled = torch.compile(lambda o, z, w: _rms_norm(o, w, eps) * F.silu(z.to(o.dtype)))

    def reference_compiled():
        torch.autograd.grad(compiled(leaves[0], leaves[1], module.weight), ref_leaves, dy)

    report("fwd+bwd ours", name, do_bench(ours), fwd_bytes + bwd_bytes)
    report("fwd reference eager", "-", do_bench(lambda: module(o, z)), fwd_bytes)
    report("fwd+bwd reference eager", "-", do_bench(reference), fwd_bytes + bwd_bytes)
    report("fwd+bwd reference compiled", "-", do_bench(reference_compiled), fwd_bytes + bwd_bytes)

    tiny = [torch.randn(1, 1, HV, V, device=dev, dtype=dt, requires_grad=True) for _ in range(2)]
    tiny.append(w.clone().requires_grad_())
    tiny_dy = torch.randn(1, 1, HV, V, device=dev, dtype=dt)
    report("host: fwd+bwd of one token", name, do_bench(
        lambda: torch.autograd.grad(norm.gated_rms_norm(*tiny, eps), tiny, tiny_dy)), 0)

    y = torch.empty_like(o)
    for BR in (8, 16, 32):
        for nw in (2, 4, 8):
            for math in (True, False):
                ms = do_bench(lambda a=(BR, nw, math): _contiguous_fwd[(triton.cdiv(R, a[0]),)](
                    o, z, w, y, R, eps, V=V, BR=a[0], BV=triton.next_power_of_2(V), MATH=a[2], num_warps=a[1]))
                report("fwd contiguous" + ("" if math else " y=o*z"), f"BR={BR} w={nw}", ms, fwd_bytes)

    if not args.sweep:
        return
    for BR in (1, 2, 4, 8, 16, 32, 64, 128):
        for nw in (1, 2, 4, 8, 16):
            ms = do_bench(lambda a=(BR, nw, 1, 8): torch.ops.gdn2.gated_rms_norm_fwd(o, z, w, eps, *a))
            report("fwd sweep", f"BR={BR} w={nw}", ms, fwd_bytes)
    for BR in (2, 4, 8, 16, 32):
        for nw in (2, 4, 8):
            for pps in (4, 8, 16, 32):
                ms = do_bench(lambda a=(BR, nw, 1, pps): torch.ops.gdn2.gated_rms_norm_bwd(dy, o, z, w, eps, *a))
                report("bwd sweep", f"BR={BR} w={nw} pps={pps}", ms, bwd_bytes)


if __name__ == "__main__":
    main()
