"""Static registers and spills (ptxas, sm_90a) of the 16×16-tile intra kernels (fast/chunk_intra.py), no GPU.

    python benchmarks/experiments/registers_v2.py [diag] [pairs] [wy]
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ptxas_regs import regs  # noqa: E402

import gdn2.fast.chunk_intra as ci  # noqa: E402

P16, P32 = "*bf16", "*fp32"
H, HV, K, V = 16, 16, 128, 128
t = dict(q=P16, k=P16, v=P16, g=P32, b=P16, w=P16, Aqk=P16, A=P32, q_rstd=P32, k_rstd=P32, Y=P16, Qg=P16,
         Kt=P16, U=P16, gC=P32, G_out=P32, scale="fp32", T="i32")
none = dict(A_log=None, dt_bias=None, cu_seqlens=None, chunk_indices=None, USE_GATE=False, HAS_DT_BIAS=False,
            IS_VARLEN=False, DOT_PREC="tf32")
which = sys.argv[1:] or ["diag", "pairs", "wy"]
if "diag" in which:
    for bk, nw in ((32, 1), (32, 2), (32, 4), (64, 2)):
        regs(ci.chunk_diag_v2_kernel, t, dict(**none, H=H, K=K, BK=bk, L2NORM=True), nw, label=f"diag BK{bk}")
if "pairs" in which:
    for bk, nw in ((32, 2), (32, 4), (16, 2), (64, 4)):
        regs(ci.chunk_pairs_solve_v2_kernel, t, dict(**none, H=H, K=K, BK=bk, LOWP=True), nw, label=f"pairs BK{bk}")
if "wy" in which:
    for bk, bv, nw in ((64, 64, 4), (32, 32, 4), (64, 64, 8)):
        regs(ci.chunk_wy_v2_kernel, t, dict(**none, H=H, HV=HV, K=K, V=V, BK=bk, BV=bv, SAVE=False, LOWP=True), nw,
             label=f"wy BK{bk} BV{bv}")
