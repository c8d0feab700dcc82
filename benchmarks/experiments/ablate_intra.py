"""Where the time of ``chunk_intra_wy_fwd_kernel`` goes: time variants that leave one stage out.

    python benchmarks/experiments/ablate_intra.py          # on a GPU; prints µs per variant

No hardware counters needed (METHOD: "time variants that leave one stage out and take
differences"). Each variant is the kernel source of ``fast/chunk_fwd.py`` with one or more stages
replaced by nothing; outputs of a variant are wrong on purpose, only its time matters. Shapes: the
benchmark's 8×2K, H = 16, K = V = 128, bf16, in-kernel L2 norm.
"""

import importlib.util
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

import gdn2.fast.chunk_fwd as chunk_fwd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench import kernel_us  # noqa: E402

SRC = Path(chunk_fwd.__file__).read_text()

# stage -> (text in the kernel, replacement); each text must occur exactly as given (count checked)
CUTS = {
    "fallback": [("        if tl.min(b_ok.to(tl.int32)) == 0:", "        if NS < 0:", 1)],
    "diag": [("        b_Td += tl.where(b_ok[:, :, None], tl.dot(b_bk3 * b_er3, b_kd3, input_precision=DOT_PREC), 0.0)",
              "        b_Td = b_Td * 1.0", 1),
             ("        b_Ad += tl.where(b_ok[:, :, None], tl.dot(b_q3 * b_er3, b_kd3, input_precision=DOT_PREC), 0.0)",
              "        b_Ad = b_Ad * 1.0", 1)],
    "offdiag": [("        if NS > 1:\n            b_er = ", "        if NS < 0:\n            b_er = ", 1)],
    "subst": [("    for j in range(1, SUB):", "    for j in range(1, 1):", 1)],
    "horner": [("    if NS > 1:\n        # (I + T)", "    if NS < 0:\n        # (I + T)", 1)],
    "pass2": [("    # ---- pass 2, stage (3)", "    # ---- pass 2 cut", 1)],
    "U": [("    for i_g in range(HV // H):", "    for i_g in range(0):", 1)],
}
PASS2 = ("    for i_k in range(tl.cdiv(K, BK)):\n        o_k = i_k * BK + tl.arange(0, BK)\n"
         "        m_k = o_k < K\n        m = m_t")


def variant(cuts: tuple[str, ...], tag: str):
    src = SRC.replace("from .utils import", "from gdn2.fast.utils import")
    for c in cuts:
        for old, new, n in CUTS[c]:
            assert src.count(old) == n, (c, old)
            src = src.replace(old, new)
        if c == "pass2":
            assert src.count(PASS2) == 1
            src = src.replace(PASS2, PASS2.replace("range(tl.cdiv(K, BK))", "range(0)"))
    d = Path(tempfile.mkdtemp())
    path = d / f"intra_{tag}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(f"intra_{tag}", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def intra_us(mod, x, cfg, n=20) -> tuple[float, str]:
    fn = lambda: mod.chunk_gdn2_fwd(**x, scale=128 ** -0.5, use_qk_l2norm_in_kernel=True, intra_config=cfg)
    us = sum(t for key, t in kernel_us(fn, n, warmup=3).items() if "intra" in key)
    regs = ""
    for cache in getattr(mod.chunk_intra_wy_fwd_kernel, "device_caches", {}).values():
        for ck in cache[0].values():
            regs = f"{ck.n_regs} regs {ck.n_spills} spills"
    return us, regs


def main():
    torch.manual_seed(0)
    B, T, H, K = 8, 2048, 16, 128
    dev, dt = "cuda", torch.bfloat16
    x = dict(q=torch.randn(B, T, H, K, device=dev, dtype=dt), k=torch.randn(B, T, H, K, device=dev, dtype=dt),
             v=torch.randn(B, T, H, K, device=dev, dtype=dt), g=F.logsigmoid(torch.randn(B, T, H, K, device=dev)),
             b=torch.rand(B, T, H, K, device=dev, dtype=dt), w=torch.rand(B, T, H, K, device=dev, dtype=dt))
    plans = [(), ("fallback",), ("fallback", "diag"), ("fallback", "offdiag"), ("fallback", "subst"),
             ("fallback", "horner"), ("fallback", "pass2"), ("fallback", "U"),
             ("fallback", "diag", "offdiag"), ("fallback", "subst", "horner", "pass2", "U")]
    cfgs = [dict(BK=32, num_warps=4)]
    for i, cuts in enumerate(plans):
        for cfg in cfgs + ([dict(BK=64, num_warps=4), dict(BK=64, num_warps=8), dict(BK=32, num_warps=8)]
                           if cuts == ("fallback",) else []):
            mod = variant(cuts, f"{i}_{cfg['BK']}_{cfg['num_warps']}")
            us, regs = intra_us(mod, x, cfg)
            print(f"{'-'.join(cuts) or 'full':40} BK{cfg['BK']} w{cfg['num_warps']}: {us:8.1f} us  {regs}", flush=True)


if __name__ == "__main__":
    main()
