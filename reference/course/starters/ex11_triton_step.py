"""Exercise 11: the fused recurrent decoding step as a Triton kernel.

    S̄ = Diag(exp g) S,  r = S̄ᵀ(b⊙k),  S' = S̄ + k (w⊙v − r)ᵀ,  o = S'ᵀ(scale·q)

One program per (sequence n, value head hv) applies exercise 1's step to its [K, V] state, held in a
block of [BK, BV] (powers of two, at least 16, so BK ≥ K and BV ≥ V). With GVA, value head hv
reads key head hv // (HV/H). The grader launches the kernel itself, on the grid (N·HV,):

    from gdn2.course.launch import decode_step
    o, S_out = decode_step(decode_step_kernel, S, q, k, v, g, b, w, scale)

On a machine without a GPU run it with TRITON_INTERPRET=1 (the grader sets it).
Grade it with ``gdn2 course grade DIR 11``.
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
    """Program i_nh = n·HV + hv: write o[n, hv] and S_out[n, hv]. All tensors are contiguous."""
    raise NotImplementedError
