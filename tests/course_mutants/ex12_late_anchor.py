"""Exercise 12, a typical wrong answer: the anchor at the last row of the row block, not the first."""

import triton
import triton.language as tl

DIAGNOSIS = "non-causal-anchor"


@triton.jit
def intra_block_kernel(
    k, b, G,                 # [M, C, K] float32: keys, erase gate, local cumulative decay of M chunks
    T,                       # output [M, C, C] float32
    i_blk, j_blk,            # the row block and the column block, i_blk > j_blk
    C: tl.constexpr, K: tl.constexpr, BK: tl.constexpr,
):
    """Program m: T[m, 16·i_blk + (0..15), 16·j_blk + (0..15)]."""
    i_m = tl.program_id(0)
    o_r = i_blk * 16 + tl.arange(0, 16)
    o_s = j_blk * 16 + tl.arange(0, 16)
    o_d = tl.arange(0, BK)
    m_d = o_d < K
    p_r = i_m * C * K + o_r[:, None] * K + o_d[None, :]                 # [16, BK] rows r
    p_s = i_m * C * K + o_s[:, None] * K + o_d[None, :]                 # [16, BK] rows s
    b_k_r = tl.load(k + p_r, mask=m_d[None, :], other=0.0)
    b_b_r = tl.load(b + p_r, mask=m_d[None, :], other=0.0)
    b_G_r = tl.load(G + p_r, mask=m_d[None, :], other=0.0)
    b_k_s = tl.load(k + p_s, mask=m_d[None, :], other=0.0)
    b_G_s = tl.load(G + p_s, mask=m_d[None, :], other=0.0)
    b_G_a = tl.load(G + i_m * C * K + (i_blk * 16 + 15) * K + o_d, mask=m_d, other=0.0)

    left = b_b_r * b_k_r * tl.exp(b_G_r - b_G_a[None, :])
    right = b_k_s * tl.exp(b_G_a[None, :] - b_G_s)
    b_T = tl.dot(left, tl.trans(right))                                 # [16, 16]
    tl.store(T + i_m * C * C + o_r[:, None] * C + o_s[None, :], b_T)
