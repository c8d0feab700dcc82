"""Exercise 12: a 16×16 block of the intra-chunk matrix T, below the diagonal, as a Triton kernel.

    T[r, s] = Σ_d b_rd k_rd k_sd exp(G_rd − G_sd),   r in row block i_blk, s in column block j_blk

Write it as one tl.dot of two [16, BK] tiles, splitting each exponent at an anchor row a:
exp(G_r − G_s) = exp(G_r − G_a)·exp(G_a − G_s). Choose a so that neither factor can overflow.
The grader launches the kernel once per block pair (i_blk > j_blk), on the grid (M,):

    from gdn2.course.launch import intra_blocks
    T = intra_blocks(intra_block_kernel, k, b, G)      # NaN on and above the diagonal blocks

On a machine without a GPU run it with TRITON_INTERPRET=1 (the grader sets it).
Grade it with ``gdn2 course grade DIR 12``.
"""

import triton
import triton.language as tl


@triton.jit
def intra_block_kernel(
    k, b, G,                 # [M, C, K] float32: keys, erase gate, local cumulative decay
    T,                       # output [M, C, C] float32
    i_blk, j_blk,            # the row block and the column block, i_blk > j_blk
    C: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
):
    """Program m (chunk m): write T[m, 16·i_blk + (0..15), 16·j_blk + (0..15)], nothing else.

    BK ≥ K is a power of two (at least 16); C is a multiple of 16.
    """
    raise NotImplementedError
