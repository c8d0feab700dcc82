"""Gated Delta Rule-2, token by token: the ground truth of every other path (paper eq. 9-10).

    S̄_t = Diag(α_t) S_{t-1},  r_t = S̄_tᵀ (b_t ⊙ k_t),  S_t = S̄_t + k_t ((w_t ⊙ v_t) − r_t)ᵀ,  o_t = S_tᵀ (scale·q_t)

with α_t = exp(g_t). Special cases: b = w = β·1 recovers KDA; additionally a scalar α per head
recovers Gated DeltaNet; α = 1 and b = w = β recovers DeltaNet; b = w = 0 is pure decay.
The state S is key-major, [K, V] per value head, and carried in float32 (float64 for float64 input).
"""

from numbers import Real

import torch
from jaxtyping import Float, Integer
from torch import Tensor

from ._contract import (
    check_log_decay,
    compute_dtype,
    empty_output,
    erase_gate_scale,
    gate_from_raw,
    gates_from_logits,
    l2norm,
    split_sequences,
)
from ._typing import shape_checked

__all__ = ["recurrent_gdn2", "fused_recurrent_gdn2", "recurrent_step"]


# --8<-- [start:recurrent_step]
def recurrent_step(
    S: Float[Tensor, "N HV K V"],
    q: Float[Tensor, "N HV K"],
    k: Float[Tensor, "N HV K"],
    v: Float[Tensor, "N HV V"],
    g: Float[Tensor, "N HV K"],
    b: Float[Tensor, "N HV K"],
    w: Float[Tensor, "N HV V"],
    scale: float,
) -> tuple[Float[Tensor, "N HV V"], Float[Tensor, "N HV K V"]]:
    """One token of the recurrence for every sequence and value head; returns (o_t, S_t)."""
    S_bar = torch.exp(g)[..., :, None] * S                   # decay first, per key channel
    r = torch.einsum("nhkv,nhk->nhv", S_bar, b * k)          # read along the gated erase direction
    S_new = S_bar + k[..., :, None] * (w * v - r)[..., None, :]  # write the gated value minus the read
    o = torch.einsum("nhkv,nhk->nhv", S_new, scale * q)      # read out with the query
    return o, S_new
# --8<-- [end:recurrent_step]


def _recurrent(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens,
               use_qk_l2norm_in_kernel, A_log, dt_bias, use_gate_sigmoid_in_kernel, allow_neg_eigval):
    H, K, HV, V = q.shape[2], q.shape[3], v.shape[2], v.shape[3]
    G = HV // H
    scale = K ** -0.5 if scale is None else float(scale)
    dt = compute_dtype(q)
    if use_qk_l2norm_in_kernel:
        q, k = l2norm(q), l2norm(k)
    if A_log is not None:
        g = gate_from_raw(g, A_log, dt_bias)
        if not torch.compiler.is_compiling():
            check_log_decay(g)
    b_scale = erase_gate_scale(use_gate_sigmoid_in_kernel, allow_neg_eigval)
    if b_scale is not None:
        b, w = gates_from_logits(b, w, b_scale)
    # GVA: value head j reads key head j // G; the readable form repeats the key side.
    q, k, g, b = (x.to(dt).repeat_interleave(G, dim=2) for x in (q, k, g, b))  # [B, T, HV, K]
    v, w = v.to(dt), w.to(dt)                                                  # [B, T, HV, V]

    seqs = [split_sequences(x, cu_seqlens) for x in (q, k, v, g, b, w)]
    outputs, finals = [], []
    for n, (q_n, k_n, v_n, g_n, b_n, w_n) in enumerate(zip(*seqs)):
        S = (q.new_zeros(HV, K, V) if initial_state is None else initial_state[n].to(dt))[None]  # [1, HV, K, V]
        o_n = []
        for t in range(q_n.shape[0]):
            o_t, S = recurrent_step(S, q_n[t, None], k_n[t, None], v_n[t, None], g_n[t, None],
                                    b_n[t, None], w_n[t, None], scale)
            o_n.append(o_t[0])
        outputs.append(torch.stack(o_n) if o_n else v_n.new_zeros(0, HV, V))
        finals.append(S[0])
    if q.shape[0] * q.shape[1] == 0:               # no tokens: o still depends on every input
        o = empty_output(v, q, k, g, b, w, dtype=v.dtype)
    elif cu_seqlens is None:
        o = torch.stack(outputs)                   # [B, T, HV, V]
    else:
        o = torch.cat(outputs)[None]               # [1, T, HV, V]
    final_state = None
    if output_final_state:                         # [N, HV, K, V]
        final_state = torch.stack(finals) if finals else (v.new_zeros(0, HV, K, V) if initial_state is None
                                                          else initial_state.to(dt, copy=True))
    return o, final_state


# --8<-- [start:recurrent_gdn2]
@shape_checked
def recurrent_gdn2(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: Real | None = None,
    initial_state: Float[Tensor, "N HV K V"] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Float[Tensor, " H"] | None = None,
    dt_bias: Float[Tensor, "..."] | None = None,
    use_gate_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """Token-by-token Gated DeltaNet-2: the float64 ground truth of the project.

    Returns ``(o, final_state)``: o in q's dtype, final_state in float32 (float64 for float64
    input) or None. With ``A_log`` given, ``g`` is the raw gate and the op applies
    ``g = -exp(A_log) * softplus(g + dt_bias)``; ``use_qk_l2norm_in_kernel`` L2-normalises q and k;
    ``use_gate_sigmoid_in_kernel`` takes b and w as logits: b = σ(b) (2σ(b) with ``allow_neg_eigval``), w = σ(w).
    Cost: 4·K·V multiply-adds per token and value head; memory O(N·HV·K·V).
    """
    o, final_state = _recurrent(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens,
                                use_qk_l2norm_in_kernel, A_log, dt_bias, use_gate_sigmoid_in_kernel, allow_neg_eigval)
    return o.to(q.dtype), final_state
# --8<-- [end:recurrent_gdn2]


# --8<-- [start:fused_recurrent_gdn2]
@shape_checked
def fused_recurrent_gdn2(
    q: Float[Tensor, "B T H K"],
    k: Float[Tensor, "B T H K"],
    v: Float[Tensor, "B T HV V"],
    g: Float[Tensor, "B T H K"],
    b: Float[Tensor, "B T H K"],
    w: Float[Tensor, "B T HV V"],
    scale: Real | None = None,
    initial_state: Float[Tensor, "N HV K V"] | None = None,
    output_final_state: bool = False,
    cu_seqlens: Integer[Tensor, " Np1"] | None = None,
    *,
    use_qk_l2norm_in_kernel: bool = False,
    A_log: Float[Tensor, " H"] | None = None,
    dt_bias: Float[Tensor, "..."] | None = None,
    use_gate_sigmoid_in_kernel: bool = False,
    allow_neg_eigval: bool = False,
) -> tuple[Float[Tensor, "B T HV V"], Float[Tensor, "N HV K V"] | None]:
    """The decoding operator (one step per token, state read and written once per step).

    In the reference it is the same loop as :func:`recurrent_gdn2`; the Triton backend fuses each
    step into one kernel. It is the path for decoding and for short multi-token prompts.
    """
    o, final_state = _recurrent(q, k, v, g, b, w, scale, initial_state, output_final_state, cu_seqlens,
                                use_qk_l2norm_in_kernel, A_log, dt_bias, use_gate_sigmoid_in_kernel, allow_neg_eigval)
    return o.to(q.dtype), final_state
# --8<-- [end:fused_recurrent_gdn2]
