"""Exercise 11, solution: the fused recurrent decoding step as a Triton kernel.

    S̄ = Diag(exp g) S,  r = S̄ᵀ(b⊙k),  S' = S̄ + k (w⊙v − r)ᵀ,  o = S'ᵀ(scale·q)

One program per (sequence, value head) holds its [K, V] state in a [BK, BV] block; lanes past K and
V are masked on every load (other=0.0, which leaves them 0 through the step) and every store.
"""

import triton
import triton.language as tl


@triton.jit
def decode_step_kernel(
    S, q, k, v, g, b, w,     # S [N, HV, K, V]; q, k, g, b [N, H, K]; v, w [N, HV, V]; float32
    o, S_out,                # outputs: o [N, HV, V], S_out [N, HV, K, V]
    scale,
    H: tl.constexpr, HV: tl.constexpr, K: tl.constexpr, V: tl.constexpr,
    BK: tl.constexpr, BV: tl.constexpr,
):
    """Program i_nh = n·HV + hv: one token's step of the state of sequence n, value head hv."""
    i_nh = tl.program_id(0)
    i_n, i_hv = i_nh // HV, i_nh % HV
    i_h = i_hv // (HV // H)                                  # GVA: the key head of this value head
    o_k, o_v = tl.arange(0, BK), tl.arange(0, BV)
    m_k, m_v = o_k < K, o_v < V
    p_key = (i_n * H + i_h) * K + o_k
    p_val = i_nh * V + o_v
    p_S = i_nh * K * V + o_k[:, None] * V + o_v[None, :]
    m_S = m_k[:, None] & m_v[None, :]

    b_S = tl.load(S + p_S, mask=m_S, other=0.0)
    b_q = tl.load(q + p_key, mask=m_k, other=0.0)
    b_k = tl.load(k + p_key, mask=m_k, other=0.0)
    b_g = tl.load(g + p_key, mask=m_k, other=0.0)
    b_b = tl.load(b + p_key, mask=m_k, other=0.0)
    b_v = tl.load(v + p_val, mask=m_v, other=0.0)
    b_w = tl.load(w + p_val, mask=m_v, other=0.0)

    b_S = b_S * tl.exp(b_g)[:, None]                           # decay first, per key row
    b_r = tl.sum((b_b * b_k)[:, None] * b_S, 0)                # read along e = b⊙k
    b_S = b_S + b_k[:, None] * (b_w * b_v - b_r)[None, :]      # write k (z − r)ᵀ
    b_o = tl.sum((scale * b_q)[:, None] * b_S, 0)              # read out the new state
    tl.store(o + p_val, b_o, mask=m_v)
    tl.store(S_out + p_S, b_S, mask=m_S)
