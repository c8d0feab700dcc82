"""The Gated DeltaNet-2 layer (paper Fig. 1, section 3.5, appendix C.1 and D.5; docs page "The layer").

    q, k, v = SiLU(ShortConv(W_q x)), SiLU(ShortConv(W_k x)), SiLU(ShortConv(W_v x))
    g = −exp(A_log) · softplus(W_g↑ W_g↓ x + dt_bias),   b = σ(W_b x) (×2 with negative eigenvalues),   w = σ(W_w x)
    o = W_o · [ RMSNorm(GDN2(l2(q), l2(k), v, g, b, w)) ⊙ SiLU(W_z↑ W_z↓ x + c_z) ]   per value head

The decay gate, the sigmoids of b and w and the L2 norm of q and k are handed to the operator (``A_log``,
``dt_bias``, ``use_gate_sigmoid_in_kernel=True``, ``use_qk_l2norm_in_kernel=True``) so that a fast
backend fuses them; a backend may also fuse the whole layer (``gdn2.fast.layer_forward``).
A [B, T] padding mask packs the valid tokens into one row with ``cu_seqlens``; a
:class:`~gdn2.cache.Cache` carries the recurrent state and the convolution states between calls, so
prefill then token-by-token decoding equals one call on the whole sequence.
"""

import math
from numbers import Real
from types import ModuleType

import torch
import torch.nn.functional as F
from jaxtyping import Float, Shaped
from torch import Tensor, nn

from .backends import available_backends, get_backend, loaded_backend, resolve_backend
from .cache import Cache, GDN2State
from .conv import ShortConvolution
from .norm import GatedRMSNorm
from .ops._contract import check_packed_offsets, check_recompute

__all__ = ["GDN2", "init_linear"]

#: longest input that decodes with ``fused_recurrent_gdn2`` (when a cache is in use, outside training)
RECURRENT_MAX_T = 64


def init_linear(module: nn.Module, gain: float = 2**-2.5) -> None:
    """Xavier-uniform weights with ``gain`` and zero biases for every nn.Linear inside ``module``."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight, gain=gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be a positive int, got {value}")
    return value


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
    return value


def pack_mask(attention_mask: Tensor, T: int) -> tuple[Tensor, Tensor]:
    """[B, T'] 0/1 mask → (indices of the valid tokens in the flattened [B·T] of its last T columns,
    cu_seqlens [B+1] of the packed row). Left, right or any padding works."""
    if not isinstance(attention_mask, Tensor):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(attention_mask).__name__}")
    if attention_mask.dim() != 2 or attention_mask.shape[1] < T:
        raise ValueError(
            f"attention_mask must have shape [B, T'] with T' >= T = {T}, got {list(attention_mask.shape)}"
        )
    mask = attention_mask[:, attention_mask.shape[1] - T:]
    if not ((mask == 0) | (mask == 1)).all():
        raise ValueError("attention_mask must hold only 0 and 1 (1 = a real token, 0 = padding)")
    mask = mask.bool()
    indices = mask.flatten().nonzero().squeeze(-1)                          # [T_valid]
    cu_seqlens = F.pad(mask.sum(1).cumsum(0), (1, 0)).to(torch.int32)      # [B+1]
    return indices, cu_seqlens


class GDN2(nn.Module):
    """Gated DeltaNet-2 token mixer: ``[B, T, hidden_size] → [B, T, hidden_size]``.

    Args:
        hidden_size: model width d_model.
        num_heads: key heads H (q, k, g, b live here).
        head_dim: key head dim K.
        num_v_heads: value heads HV (default H); HV % H == 0 (grouped value heads).
        expand_v: value head dim V = head_dim · expand_v (an integer).
        conv_size: taps of the causal depthwise short convolutions.
        use_short_conv: without it q, k, v are SiLU(W x).
        allow_neg_eigval: erase gate b in [0, 2] instead of [0, 1].
        norm_eps: epsilon of the gated output RMSNorm.
        backend: "auto" (Triton for CUDA tensors when available, else the reference), "reference"
            or "triton". Parameters and ``state_dict`` are the same under every backend.
        layer_idx: key of this layer's state in a :class:`~gdn2.cache.Cache`.
        recompute: what the Triton operator keeps from its forward for the backward: ``True`` only its
            inputs (least memory), ``"partial"`` also the intra-chunk products, ``"states"`` (the layer's
            default: its backward then reruns only the sequential state pass) all but the chunk states,
            ``False`` everything. Memory against time, the same numbers bit for bit (docs pages "The
            operator contract" and "The layer"); the reference backend's autograd keeps what it needs and
            ignores it.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        head_dim: int = 128,
        num_v_heads: int | None = None,
        expand_v: float = 1.0,
        conv_size: int = 4,
        use_short_conv: bool = True,
        allow_neg_eigval: bool = False,
        norm_eps: float = 1e-5,
        backend: str = "auto",
        layer_idx: int | None = None,
        recompute: bool | str = "states",
    ) -> None:
        super().__init__()
        self.hidden_size = _positive_int("hidden_size", hidden_size)
        self.num_heads = _positive_int("num_heads", num_heads)
        self.head_dim = _positive_int("head_dim", head_dim)
        self.num_v_heads = num_heads if num_v_heads is None else _positive_int("num_v_heads", num_v_heads)
        if self.num_v_heads % self.num_heads != 0:
            raise ValueError(f"num_v_heads = {num_v_heads} must be a multiple of num_heads = {num_heads} (GVA)")
        if isinstance(expand_v, bool) or not isinstance(expand_v, Real):
            raise TypeError(f"expand_v must be a number, got {type(expand_v).__name__}")
        head_v_dim = head_dim * expand_v
        if not (expand_v > 0 and math.isfinite(expand_v) and float(head_v_dim).is_integer()):
            raise ValueError(
                f"expand_v must be positive with head_dim · expand_v an integer, got expand_v = {expand_v} "
                f"(head_dim · expand_v = {head_v_dim})"
            )
        self.expand_v = expand_v
        self.head_v_dim = int(head_v_dim)
        self.conv_size = _positive_int("conv_size", conv_size)
        self.use_short_conv = _flag("use_short_conv", use_short_conv)
        self.allow_neg_eigval = _flag("allow_neg_eigval", allow_neg_eigval)
        if isinstance(norm_eps, bool) or not isinstance(norm_eps, Real):
            raise TypeError(f"norm_eps must be a float, got {type(norm_eps).__name__}")
        if not norm_eps > 0:
            raise ValueError(f"norm_eps must be positive, got {norm_eps!r}")
        self.norm_eps = float(norm_eps)
        resolve_backend(backend)  # unknown or unavailable: the registry's error, listing what is available
        self.backend = backend
        # the backend for CUDA inputs and for the others, resolved (and imported) once, here: a forward
        # then only looks them up, which torch.compile traces
        cuda = backend if backend != "auto" else ("triton" if available_backends()["triton"] is None else "reference")
        self._backend_names = (cuda, backend if backend != "auto" else "reference")
        for name in set(self._backend_names):
            get_backend(name)
        if layer_idx is not None and (isinstance(layer_idx, bool) or not isinstance(layer_idx, int) or layer_idx < 0):
            raise ValueError(f"layer_idx must be None or a non-negative int, got {layer_idx!r}")
        self.layer_idx = layer_idx
        self.recompute = check_recompute(recompute)

        H, HV, K, V, D = self.num_heads, self.num_v_heads, self.head_dim, self.head_v_dim, hidden_size
        self.key_dim, self.value_dim = H * K, HV * V
        self.q_proj = nn.Linear(D, H * K, bias=False)
        self.k_proj = nn.Linear(D, H * K, bias=False)
        self.v_proj = nn.Linear(D, HV * V, bias=False)
        if use_short_conv:
            self.q_conv1d = ShortConvolution(H * K, conv_size)
            self.k_conv1d = ShortConvolution(H * K, conv_size)
            self.v_conv1d = ShortConvolution(HV * V, conv_size)
        self.f_proj = nn.Sequential(nn.Linear(D, V, bias=False), nn.Linear(V, H * K, bias=False))  # low-rank gate
        self.b_proj = nn.Linear(D, H * K, bias=False)                  # erase gate, per key channel
        self.w_proj = nn.Linear(D, HV * V, bias=False)                 # write gate, per value channel
        self.A_log = nn.Parameter(torch.empty(H))
        self.dt_bias = nn.Parameter(torch.empty(H * K))
        self.g_proj = nn.Sequential(nn.Linear(D, V, bias=False), nn.Linear(V, HV * V, bias=True))  # output gate
        self.o_norm = GatedRMSNorm(V, eps=norm_eps)
        self.o_proj = nn.Linear(HV * V, D, bias=False)
        self.A_log._no_weight_decay = True
        self.dt_bias._no_weight_decay = True
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """The paper's initialisation: A_log = log U(1, 16), dt_bias = softplus⁻¹(dt) with dt ~ logU(1e-3, 1e-1),
        Xavier-uniform linears with gain 2^-2.5 and zero biases."""
        init_linear(self)
        self.A_log.copy_(torch.empty_like(self.A_log).uniform_(1, 16).log())
        lo, hi = math.log(1e-3), math.log(1e-1)
        dt = torch.exp(torch.rand_like(self.dt_bias) * (hi - lo) + lo).clamp_min(1e-4)
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))           # softplus(dt_bias) = dt
        self.o_norm.weight.fill_(1.0)

    @property
    def cache_key(self):
        """This layer's key in a Cache: ``layer_idx``, or the layer itself when it has none (so two
        layers without an index never share an entry)."""
        return self if self.layer_idx is None else self.layer_idx

    def extra_repr(self) -> str:
        return (f"H={self.num_heads}, HV={self.num_v_heads}, K={self.head_dim}, V={self.head_v_dim}, "
                f"backend={self.backend!r}, layer_idx={self.layer_idx}")

    def _ops(self, x: Tensor) -> ModuleType:
        """The backend module for this input: "auto" takes Triton only for CUDA tensors."""
        return loaded_backend(self._backend_names[0 if x.is_cuda else 1])

    def _qkv(self, x: Tensor, conv_states: tuple | None, cu_seqlens: Tensor | None) -> tuple[tuple, tuple | None]:
        """Projection → short conv → SiLU for q, k, v; returns the three and the new conv states."""
        projs = (self.q_proj, self.k_proj, self.v_proj)
        if not self.use_short_conv:
            return tuple(F.silu(p(x)) for p in projs), None
        outs, states = [], []
        for i, (p, conv) in enumerate(zip(projs, (self.q_conv1d, self.k_conv1d, self.v_conv1d))):
            y, s = conv(p(x), None if conv_states is None else conv_states[i], cu_seqlens)
            outs.append(y)
            states.append(s)
        return tuple(outs), tuple(states)

    def forward(
        self,
        hidden_states: Float[Tensor, "B T D"],
        attention_mask: Shaped[Tensor, "B Tm"] | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        cu_seqlens: Tensor | None = None,
    ) -> Float[Tensor, "B T D"]:
        """Mix tokens; zero at padded positions. With ``use_cache`` the cache is updated in place.

        ``attention_mask`` is a [B, T'] 0/1 mask whose last T columns belong to ``hidden_states``
        (T' > T when decoding with the mask of the whole sequence so far). ``cu_seqlens`` [N + 1] instead
        says that the one row of ``hidden_states`` (B = 1) packs N sequences, as pre-training batches are
        fed (the operator's contract). A backend that provides a fused layer
        (``gdn2.fast.layer_forward``) computes the same function with its own kernels.
        """
        if not isinstance(hidden_states, Tensor) or hidden_states.dim() != 3:
            got = list(hidden_states.shape) if isinstance(hidden_states, Tensor) else type(hidden_states).__name__
            raise ValueError(f"hidden_states must be a [B, T, hidden_size] tensor, got {got}")
        B, T, D = hidden_states.shape
        if D != self.hidden_size:
            raise ValueError(f"hidden_states must have last dim hidden_size = {self.hidden_size}, got {D}")
        if not isinstance(use_cache, bool):
            raise TypeError(f"use_cache must be a bool, got {type(use_cache).__name__}")
        if cache is not None and not isinstance(cache, Cache):
            raise TypeError(f"cache must be a gdn2.Cache or None, got {type(cache).__name__}")
        if use_cache and cache is None:
            raise ValueError("use_cache=True needs a cache to update: pass cache=gdn2.Cache()")
        state = cache.get(self.cache_key) if cache is not None else None
        if state is not None and not isinstance(state, GDN2State):
            raise ValueError(f"cache entry {self.cache_key} is a {type(state).__name__}, not a GDN2 state")
        if state is not None and state.recurrent_state.shape[0] != B:
            raise ValueError(f"the cache holds {state.recurrent_state.shape[0]} sequences, hidden_states has B = {B}")
        if cu_seqlens is not None and (attention_mask is not None or B != 1):
            raise ValueError("cu_seqlens packs sequences into one row (B = 1) and replaces attention_mask; "
                             f"got B = {B}" + (" and an attention_mask" if attention_mask is not None else ""))
        ops = self._ops(hidden_states)
        fused = getattr(ops, "layer_forward", None)
        if fused is not None:       # the backend's own convolution and operator check the offsets
            return fused(self, hidden_states, attention_mask, cache, use_cache, state, cu_seqlens)
        if cu_seqlens is not None:  # before the convolution reads them
            check_packed_offsets(cu_seqlens, T)

        x, indices = hidden_states, None
        if attention_mask is not None:
            indices, cu_seqlens = pack_mask(attention_mask.to(x.device), T)
            x = x.reshape(B * T, D)[indices][None]                             # [1, T_valid, D]
        H, HV, K, V = self.num_heads, self.num_v_heads, self.head_dim, self.head_v_dim
        (q, k, v), conv_states = self._qkv(x, None if state is None else state.conv_state, cu_seqlens)
        Bx, Tx = x.shape[:2]
        q, k = q.view(Bx, Tx, H, K), k.view(Bx, Tx, H, K)                      # [Bx, Tx, H, K]
        v = v.view(Bx, Tx, HV, V)                                              # [Bx, Tx, HV, V]
        g_raw = self.f_proj(x).view(Bx, Tx, H, K)                              # softplus input of the gate
        b_logit = self.b_proj(x).view(Bx, Tx, H, K)                            # b = σ(b_logit), ×2 with neg. eigvals
        w_logit = self.w_proj(x).view(Bx, Tx, HV, V)                           # w = σ(w_logit)

        decoding = (cache is not None or use_cache) and T <= RECURRENT_MAX_T and not self.training
        op = ops.fused_recurrent_gdn2 if decoding else ops.chunk_gdn2
        o, final_state = op(
            q, k, v, g_raw, b_logit, w_logit,
            initial_state=None if state is None else state.recurrent_state,
            output_final_state=use_cache,
            cu_seqlens=cu_seqlens,
            use_qk_l2norm_in_kernel=True,
            A_log=self.A_log,
            dt_bias=self.dt_bias,
            use_gate_sigmoid_in_kernel=True,
            allow_neg_eigval=self.allow_neg_eigval,
        )
        z = self.g_proj(x).view(Bx, Tx, HV, V)
        o = self.o_proj(self.o_norm(o, z).reshape(Bx, Tx, HV * V))             # [Bx, Tx, D]
        if use_cache:
            cache.update(self.cache_key, GDN2State(final_state, conv_states))
        return unpack(o, indices, B, T)


def unpack(o: Tensor, indices: Tensor | None, B: int, T: int) -> Tensor:
    """The packed row [1, T_valid, D] back to [B, T, D], zeros at padded positions (o itself unpacked)."""
    if indices is None:
        return o
    D = o.shape[-1]
    return o.new_zeros(B * T, D).index_copy(0, indices, o[0]).view(B, T, D)
