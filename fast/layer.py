"""The GDN2 layer on the Triton backend: the function of ``gdn2.layer.GDN2`` with fused kernels.

    q, k, v   three projections, each through the Triton short convolution + SiLU (one read, one write)
    b, w      two projections handed to the operator as logits (their sigmoid is applied in its kernels)
    g, z      two low-rank down-projections as one product (x read once for both; each bottleneck a
              column slice of it), then their up-projections (z's bias added by its GEMM)
    x         read by six products whose backward accumulates x's gradient in one buffer
              (``projections.shared_input_linear``: no elementwise additions of the gradients)
    o         chunk_gdn2 (or fused_recurrent_gdn2 when decoding), the fused gated RMSNorm, the output projection

Every projection writes a contiguous tensor that the next kernel reads as it is: no copies and no
separate elementwise passes. ``GDN2(backend="triton")`` calls :func:`layer_forward` (the registry finds
it on the backend module); the reference layer's parameters and ``state_dict`` are used as they are.
When decoding one token per sequence with a cache, the cache's tensors are updated in place, so a
model's decoding step can be captured in a CUDA graph.
"""

import torch
import torch.nn.functional as F
from torch import Tensor

from gdn2.cache import Cache, GDN2State
from gdn2.layer import GDN2, RECURRENT_MAX_T, pack_mask, unpack

from .chunk import chunk_gdn2
from .conv import short_conv, short_conv_step
from .fused_recurrent import fused_recurrent_gdn2
from .norm import gated_rms_norm
from .projections import shared_input_linear

__all__ = ["layer_forward"]


def layer_forward(layer: GDN2, hidden_states: Tensor, attention_mask: Tensor | None, cache: Cache | None,
                  use_cache: bool, state: GDN2State | None, cu_seqlens: Tensor | None = None) -> Tensor:
    """``layer(hidden_states, attention_mask, cache, use_cache, cu_seqlens)`` with the arguments checked by
    the layer and ``state`` its cache entry (or None)."""
    if hidden_states.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise TypeError("hidden_states must be float16, bfloat16 or float32 on the Triton backend (backend="
                        f"'reference' takes float64 too), got {hidden_states.dtype}")
    B, T, D = hidden_states.shape
    x, indices = hidden_states, None
    if attention_mask is not None:
        indices, cu_seqlens = pack_mask(attention_mask.to(x.device), T)
        x = x.reshape(B * T, D)[indices][None]                             # [1, T_valid, D]
    H, HV, K, V = layer.num_heads, layer.num_v_heads, layer.head_dim, layer.head_v_dim
    Bx, Tx = x.shape[:2]
    decoding = (cache is not None or use_cache) and T <= RECURRENT_MAX_T and not layer.training
    # one token per sequence into an existing entry: every state is updated where it lies
    in_place = (decoding and use_cache and Tx == 1 and cu_seqlens is None and state is not None
                and state.recurrent_state.dtype == torch.float32 and state.recurrent_state.is_contiguous())

    f_down, f_up = layer.f_proj
    g_down, g_up = layer.g_proj
    # everything that reads x: q, k, v, b, w, each its own contiguous output, and the bottlenecks of g and
    # z, two column slices of one product: a product of V columns is bound by its read of x, so the two
    # share that read. The up-projections take the slices as 2-D matrices (row stride 2·V), which the
    # GEMMs read in place, z's bias added in its GEMM.
    weights = (layer.q_proj.weight, layer.k_proj.weight, layer.v_proj.weight, layer.b_proj.weight,
               layer.w_proj.weight, (f_down.weight, g_down.weight))
    if torch.is_grad_enabled() and (x.requires_grad or any(w.requires_grad for w in (*weights[:-1], *weights[-1]))):
        q_in, k_in, v_in, b_logit, w_logit, f_low, g_low = shared_input_linear(x, *weights)
    else:
        q_in, k_in, v_in, b_logit, w_logit = (F.linear(x, w) for w in weights[:-1])
        f_low, g_low = F.linear(x, torch.cat(weights[-1])).split(f_down.weight.shape[0], dim=-1)
    conv_states, ins = None, (q_in, k_in, v_in)
    if not layer.use_short_conv:
        q, k, v = (F.silu(y) for y in ins)
    elif in_place and state.conv_state is not None:
        convs = (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)
        q, k, v = (short_conv_step(y, c.weight[:, 0], s) for y, c, s in zip(ins, convs, state.conv_state))
        conv_states = state.conv_state
    else:
        convs = (layer.q_conv1d, layer.k_conv1d, layer.v_conv1d)
        outs = [short_conv(y, c.weight[:, 0], cu_seqlens,
                           initial_state=None if state is None else state.conv_state[i], output_final_state=use_cache)
                for i, (y, c) in enumerate(zip(ins, convs))]
        (q, _), (k, _), (v, _) = outs
        conv_states = tuple(s for _, s in outs) if use_cache else None
    q, k = q.view(Bx, Tx, H, K), k.view(Bx, Tx, H, K)
    v = v.view(Bx, Tx, HV, V)
    b_logit = b_logit.view(Bx, Tx, H, K)
    w_logit = w_logit.view(Bx, Tx, HV, V)
    g_raw = F.linear(f_low.flatten(0, 1), f_up.weight).view(Bx, Tx, H, K)
    z = F.linear(g_low.flatten(0, 1), g_up.weight, g_up.bias).view(Bx, Tx, HV, V)

    extras = dict(use_qk_l2norm_in_kernel=True, A_log=layer.A_log, dt_bias=layer.dt_bias,
                  use_gate_sigmoid_in_kernel=True, allow_neg_eigval=layer.allow_neg_eigval)
    h0 = None if state is None else state.recurrent_state
    if in_place:
        o, final_state = fused_recurrent_gdn2(q, k, v, g_raw, b_logit, w_logit, initial_state=h0,
                                              output_final_state=True, inplace_final_state=True, **extras)
    else:
        chunked = {} if decoding else dict(recompute=layer.recompute)
        op = fused_recurrent_gdn2 if decoding else chunk_gdn2
        o, final_state = op(q, k, v, g_raw, b_logit, w_logit, initial_state=h0, output_final_state=use_cache,
                            cu_seqlens=cu_seqlens, **extras, **chunked)
    o = gated_rms_norm(o, z, layer.o_norm.weight, layer.o_norm.eps)        # [Bx, Tx, HV, V]
    o = layer.o_proj(o.reshape(Bx, Tx, HV * V))                            # [Bx, Tx, D]
    if use_cache and not in_place:
        cache.update(layer.cache_key, GDN2State(final_state, conv_states))
    return unpack(o, indices, B, T)
