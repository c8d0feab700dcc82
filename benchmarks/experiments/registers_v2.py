"""Static registers and spills (ptxas, sm_90a) of the 16×16-tile intra kernels (fast/chunk_intra.py), no GPU.

    python benchmarks/experiments/registers_v2.py [diag] [pairs] [wy] [options]

``options``: every kernel with packing, the gate and saving, in bfloat16, float32 and float16, at
K = V = 128 and 256, so that a compile failure or a shared-memory size over the H200's 227 KB shows
before a GPU is at hand (2026-11-30: all compile, 2-24 KB of shared memory, spills only in float32).
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
if "options" in which:
    for dt, prec, lowp in (("bf16", "tf32", True), ("fp32", "ieee", False), ("fp16", "tf32", False)):
        P = "*" + dt
        t = dict(q=P, k=P, v=P, g=P32, b=P, w=P, Aqk=P, A=P32, q_rstd=P32, k_rstd=P32, Y=P, Qg=P, Kt=P, U=P, gC=P32,
                 G_out=P32, scale="fp32", T="i32", A_log=P32, dt_bias=P32, cu_seqlens="*i32", chunk_indices="*i32")
        fl = dict(USE_GATE=True, HAS_DT_BIAS=True, IS_VARLEN=True, DOT_PREC=prec)
        for K in (128, 256):
            regs(ci.chunk_diag_v2_kernel, t, dict(**fl, H=4, K=K, BK=32, L2NORM=True), 2, label=f"{dt} diag K{K}")
            regs(ci.chunk_pairs_solve_v2_kernel, t, dict(**fl, H=4, K=K, BK=32, LOWP=lowp), 4,
                 label=f"{dt} pairs K{K}")
            regs(ci.chunk_wy_v2_kernel, t, dict(**fl, H=4, HV=8, K=K, V=K, BK=32, BV=32, SAVE=True, LOWP=lowp), 4,
                 label=f"{dt} wy K{K} V{K}")
