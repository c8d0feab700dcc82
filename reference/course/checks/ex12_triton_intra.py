"""Exercise 12: one 16×16 block of the intra-chunk matrix T as a Triton kernel (run by Triton's interpreter).

For the row block i and the column block j < i of a chunk, with the anchor a = 16·i (the first row
of the row block):

    T[r, s] = Σ_d (b_rd k_rd exp(G_rd − G_ad)) (k_sd exp(G_ad − G_sd)),   r in block i, s in block j

a product of two [16, BK] tiles (tl.dot). The anchor is causal: a ≤ r and s < a, so both exponents
are ≤ 0 and nothing overflows however strong the decay.
"""

import torch

from gdn2.ops.chunk import chunk_intra_t
from gdn2.tolerances import TOLERANCES

from .. import launch
from ..framework import Case, Diagnosis, Exercise, Mistake, Out, Property, Run, local_cumsum
from .ex06_intra import t_variant

TOL = TOLERANCES["reference-float32"][0]
OUT = (Out("T", "M R S"),)


def _draw(case: Case, C: int, K: tuple[int, int], g_min: float) -> tuple:
    """(k, b, G) float32 [M, C, K] for M = N·H·NC chunks."""
    M = case.size("chunks", 1, 3)
    C_ = case.fixed("C", C)
    K_ = case.size("K", *K)
    f32 = torch.float32
    k, b = case.unit(M, C_, K_, dtype=f32), case.gate("b", 2.0, M, C_, K_, dtype=f32)
    return k, b, local_cumsum(case.log_decay(g_min, M, C_, K_, dtype=f32))


def below_blocks(T):
    """T on the blocks below the diagonal, 0 elsewhere (where the launcher leaves NaN)."""
    return torch.where(launch.off_diagonal_blocks(T.shape[-1]), T, 0.0)


MISTAKES = (
    Mistake("erase-gate-on-column", "Your block gates the earlier token s: the erase gate belongs to the row "
            "token r (b_r⊙k_r in the left factor).",
            lambda k, b, G: t_variant(*(x.double() for x in (k, b, G)), gate_on_column=True)),
)


def _run(kernel, k, b, G):
    return below_blocks(launch.intra_blocks(kernel, k, b, G))


def _checker(C, K, g_min, count):
    def check(run: Run) -> None:
        for case in run.cases(count):
            args = _draw(case, C, K, g_min)
            got = case.call("intra_block_kernel", *args, via=_run)
            expected = below_blocks(chunk_intra_t(*(x.double() for x in args)))
            mistakes = [Mistake(m.id, m.text, lambda *a, m=m: below_blocks(m.wrong(*a))) for m in MISTAKES]
            case.expect(got, expected, OUT, TOL, what="the blocks below the diagonal", dtype=torch.float32,
                        mistakes=mistakes, args=args)
    return check


EXERCISE = Exercise(
    number=12,
    slug="ex12_triton_intra",
    title="Triton: a 16×16 block of T",
    functions=("intra_block_kernel",),
    properties=(
        Property("one block pair: C = 32, K = 16", _checker(32, (16, 16), -1.0, 2),
                 Diagnosis("block", "Load the [16, BK] tiles of rows r = 16·i_blk + (0..15) and s = 16·j_blk + "
                                    "(0..15); left = b_r⊙k_r⊙exp(G_r − G_a), right = k_s⊙exp(G_a − G_s) with a = "
                                    "16·i_blk; T block = tl.dot(left, tl.trans(right)).")),
        Property("K below the block size (masked lanes)", _checker(32, (5, 15), -1.0, 2),
                 Diagnosis("missing-mask", "Your kernel is right when K fills the block and wrong when it does not: "
                                           "load every [16, BK] tile with the mask o_d < K and other=0.0, so the "
                                           "padded lanes add nothing to the dot product.")),
        Property("g down to −20: every entry finite (C = 64, K = 16)", _checker(64, (16, 16), -20.0, 2),
                 Diagnosis("non-causal-anchor", "Your block overflows with strong decay: exp(G_r − G_a) and "
                                                "exp(G_a − G_s) are both ≤ 1 only when a ≤ r and s ≤ a. Anchor at "
                                                "the first row of the row block (a = 16·i_blk), never at a later "
                                                "row, never exp(−G) alone.")),
        Property("several chunks, C = 64, any K", _checker(64, (5, 40), -1.0, 2),
                 Diagnosis("block-any", "Check the offsets of chunk m: (m·C + r)·K + d for k, b and G, and "
                                        "(m·C + r)·C + s for T.")),
    ),
    minutes=60,
    difficulty=3,
    triton=True,
)
