"""Static registers and spills (ptxas, sm_90a) of the fwd_v2 kernels at their tiles, no GPU needed.

    python benchmarks/experiments/registers_v2.py
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import fwd_v2  # noqa: E402
from ptxas_regs import regs  # noqa: E402

P16, P32 = "*bf16", "*fp32"
H, HV, K, V = 16, 16, 128, 128
t = dict(q=P16, k=P16, v=P16, g=P32, b=P16, w=P16, Aqk=P16, A=P32, q_rstd=P32, k_rstd=P32, Y=P16, Qg=P16,
         Kt=P16, U=P16, gC=P32, scale="fp32", T="i32")
which = sys.argv[1:] or ["diag", "pairs", "wy"]
if "diag" in which:
    for bk, nw in ((64, 1), (32, 1), (64, 2), (128, 2)):
        regs(fwd_v2.chunk_diag_v2_kernel, t, dict(H=H, K=K, BK=bk, L2NORM=True, DOT_PREC="tf32"), nw,
             label=f"diag BK{bk}")
if "pairs" in which:
    for bk, nw in ((32, 2), (32, 4), (16, 2), (64, 4)):
        regs(fwd_v2.chunk_pairs_solve_v2_kernel, t, dict(H=H, K=K, BK=bk, DOT_PREC="tf32", LOWP=True), nw,
             label=f"pairs+solve BK{bk}")
if "wy" in which:
    for bk, bv, nw in ((64, 64, 4), (32, 32, 4), (64, 64, 8), (32, 32, 2)):
        regs(fwd_v2.chunk_wy_v2_kernel, t, dict(H=H, HV=HV, K=K, V=V, BK=bk, BV=bv, L2NORM=True, DOT_PREC="tf32",
             LOWP=True), nw, label=f"wy BK{bk} BV{bv}")
