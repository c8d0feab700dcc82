"""One small language-model backbone, seven token mixers: the models of the retrieval evaluation.

    h_0 = Embed(tokens),   h ← h + Mixer(RMSNorm(h)),   h ← h + SwiGLU(RMSNorm(h)),   logits = RMSNorm(h) Embedᵀ

Only the mixer differs between models:

=============  ===============================================================================================
``gdn2``       the GDN2 layer: channel-wise decay α, erase gate b ∈ R^K, write gate w ∈ R^V
``b_only``     GDN2 with the write gate fixed to 1: b channel-wise, w = 1
``w_only``     GDN2 with the erase gate tied to a scalar per head: b = β·1, w channel-wise
``kda``        KDA: b = w = β·1 (one scalar β per head and token), channel-wise decay
``gdn``        Gated DeltaNet: b = w = β·1 and one scalar decay per head, broadcast over K
``swa``        sliding-window softmax attention (:class:`gdn2.model.SlidingWindowAttention`, RoPE)
``attention``  full causal softmax attention (the same module with a window as long as the context)
=============  ===============================================================================================

Every linear mixer is a :class:`GateModeGDN2`: the GDN2 layer (same q, k, v projections, short
convolutions, output gate and norm, same operator) whose gate projections have the width of the gates
they parameterise (H·K for a channel-wise b, HV·V for a channel-wise w, H for a scalar β or decay), run
through this project's own ``chunk_gdn2`` of the layer's backend ("auto": Triton for CUDA tensors, the
reference otherwise). In mode ``gdn2`` it has :class:`gdn2.GDN2`'s parameters and computes its forward
(the tests check both); going through the same call as the ablations gives every linear mixer the
same operator call, and on the CPU the same chunk size (``chunk_size`` of the config: the reference
takes any, and a small one is several times faster there; Triton keeps its own).

Matching rules (stated in the config, checked by the tests):

- recurrent state: every linear mixer keeps H·K·V floats per layer (the same H, K, V); the short
  convolutions' 3·(conv_size − 1) tails per channel are not counted;
- sliding window: the window W is the largest whose key-value cache, W·heads·(d_k + d_v) floats per
  layer, is not larger than the linear state, so W = ⌊H·K·V / (heads·(d_k + d_v))⌋ with d_k = d_v = D/heads;
- parameters: the gate projections make the mixers differ in size, so each model's SwiGLU width is
  chosen to bring its total parameter count to the reference model's (``gdn2``) within the config's
  relative tolerance; everything else (width, depth, embedding, norms) is the same.
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gdn2 import GDN2
from gdn2.layer import init_linear
from gdn2.model import SlidingWindowAttention
from gdn2.norm import RMSNorm

__all__ = ["MIXERS", "LINEAR_MIXERS", "GATE_MODES", "GateModeGDN2", "RetrievalLM", "build_model",
           "state_floats", "swa_window", "param_count", "matched_mlp_width"]

GATE_MODES = ("gdn2", "b_only", "w_only", "kda", "gdn")
LINEAR_MIXERS = GATE_MODES
MIXERS = (*GATE_MODES, "swa", "attention")


class GateModeGDN2(GDN2):
    """The GDN2 layer with its erase gate b, write gate w and decay built according to ``gate_mode``.

    ``gate_mode`` is one of :data:`GATE_MODES`. Projections per mode (D = hidden size):

    - ``gdn2``: ``b_proj`` D→H·K, ``w_proj`` D→HV·V, low-rank ``f_proj`` D→V→H·K (the layer's own gates);
    - ``b_only``: ``b_proj`` D→H·K, no write projection (w = 1);
    - ``w_only``: ``beta_proj`` D→H (b = σ(β)·1 over K), ``w_proj`` D→HV·V;
    - ``kda``: ``beta_proj`` D→H, b = w = σ(β)·1;
    - ``gdn``: ``beta_proj`` D→H as KDA, and ``a_proj`` D→H with ``dt_bias`` [H] instead of ``f_proj``
      and ``dt_bias`` [H·K]: g = −exp(A_log)·softplus(a + dt_bias), the same for every key channel.

    Gates given as logits go through the operator's sigmoid (``use_gate_sigmoid_in_kernel=True``); b_only
    passes b = σ(b_logit) and w = 1 as values. Tied modes need HV = H (β is one scalar per key head, and
    the write gate of a value head is tied to the erase gate of its key head).
    """

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int, gate_mode: str = "gdn2",
                 conv_size: int = 4, backend: str = "auto", layer_idx: int | None = None,
                 chunk_size: int | None = None) -> None:
        if gate_mode not in GATE_MODES:
            raise ValueError(f"gate_mode must be one of {GATE_MODES}, got {gate_mode!r}")
        super().__init__(hidden_size, num_heads, head_dim, conv_size=conv_size, backend=backend, layer_idx=layer_idx)
        self.gate_mode = gate_mode
        self.chunk_size = chunk_size
        D, H = hidden_size, num_heads
        if gate_mode in ("w_only", "kda", "gdn"):
            del self.b_proj
            self.beta_proj = nn.Linear(D, H, bias=False)
        if gate_mode in ("b_only", "kda", "gdn"):
            del self.w_proj
        if gate_mode == "gdn":
            del self.f_proj, self.dt_bias
            self.a_proj = nn.Linear(D, H, bias=False)
            self.dt_bias = nn.Parameter(torch.empty(H))
            self.dt_bias._no_weight_decay = True
        self.reset_parameters()

    def extra_repr(self) -> str:
        return f"gate_mode={self.gate_mode!r}, " + super().extra_repr()

    def operator_inputs(self, x: Tensor) -> tuple[tuple[Tensor, ...], dict]:
        """(q, k, v, g_raw, b, w) and the operator's keyword arguments for x [B, T, D]."""
        B, T, _ = x.shape
        H, HV, K, V = self.num_heads, self.num_v_heads, self.head_dim, self.head_v_dim
        (q, k, v), _ = self._qkv(x, None, None)
        q, k, v = q.view(B, T, H, K), k.view(B, T, H, K), v.view(B, T, HV, V)
        mode = self.gate_mode
        if mode == "gdn":
            g_raw = self.a_proj(x)[..., None].expand(B, T, H, K).contiguous()    # one decay per head
            dt_bias = self.dt_bias[:, None].expand(H, K).reshape(H * K)
        else:
            g_raw, dt_bias = self.f_proj(x).view(B, T, H, K), self.dt_bias
        logits = True
        if mode == "gdn2":
            b, w = self.b_proj(x).view(B, T, H, K), self.w_proj(x).view(B, T, HV, V)
        elif mode == "b_only":
            b, w = torch.sigmoid(self.b_proj(x).view(B, T, H, K)), v.new_ones(B, T, HV, V)
            logits = False
        else:
            beta = self.beta_proj(x).view(B, T, H, 1)                              # a logit per head and token
            b = beta.expand(B, T, H, K).contiguous()
            w = (self.w_proj(x).view(B, T, HV, V) if mode == "w_only"
                 else beta.expand(B, T, HV, V).contiguous())
        kwargs = dict(use_qk_l2norm_in_kernel=True, A_log=self.A_log, dt_bias=dt_bias,
                      use_gate_sigmoid_in_kernel=logits)
        return (q, k, v, g_raw, b, w), kwargs

    def forward(self, hidden_states: Tensor, attention_mask: Tensor | None = None, cache=None,
                use_cache: bool = False, op=None) -> Tensor:
        """Mix a whole [B, T, D] batch (no padding, no cache: the evaluation trains and scores full
        sequences). ``op`` replaces the backend's ``chunk_gdn2`` (a test passes ``recurrent_gdn2``)."""
        if attention_mask is not None or cache is not None or use_cache:
            raise ValueError("GateModeGDN2 mixes whole sequences: no attention_mask, no cache")
        x = hidden_states
        B, T, _ = x.shape
        HV, V = self.num_v_heads, self.head_v_dim
        args, kwargs = self.operator_inputs(x)
        if op is None:
            ops = self._ops(x)
            op = ops.chunk_gdn2
            if self.chunk_size is not None and ops.__name__ == "gdn2.ops":
                kwargs["chunk_size"] = self.chunk_size   # the reference takes any chunk size, Triton only its own
        o, _ = op(*args, **kwargs)
        z = self.g_proj(x).view(B, T, HV, V)
        return self.o_proj(self.o_norm(o, z).reshape(B, T, HV * V))


class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) ⊙ W_up x) with an explicit inner width (the parameter-matching knob)."""

    def __init__(self, hidden_size: int, inner: int) -> None:
        super().__init__()
        self.gate_proj = nn.Linear(hidden_size, inner, bias=False)
        self.up_proj = nn.Linear(hidden_size, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden_size, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def swa_window(cfg: dict) -> int:
    """The sliding window whose key-value cache is at most one linear layer's state, H·K·V floats."""
    heads = cfg["num_heads"]
    d = cfg["hidden_size"] // heads
    return max(1, cfg["num_heads"] * cfg["head_dim"] * cfg["head_dim"] // (heads * 2 * d))


def state_floats(mixer: str, cfg: dict, seq_len: int) -> int:
    """Floats one layer keeps per sequence to decode the next token after ``seq_len`` tokens:
    H·K·V for a linear mixer, W·heads·(d_k + d_v) for the window (or the whole context)."""
    if mixer in LINEAR_MIXERS:
        return cfg["num_heads"] * cfg["head_dim"] * cfg["head_dim"]
    heads, d = cfg["num_heads"], cfg["hidden_size"] // cfg["num_heads"]
    window = swa_window(cfg) if mixer == "swa" else seq_len
    return min(window, seq_len) * heads * 2 * d


class Block(nn.Module):
    """Pre-norm residual block: the mixer, then the SwiGLU."""

    def __init__(self, mixer: str, cfg: dict, mlp_inner: int, max_len: int, layer_idx: int, backend: str) -> None:
        super().__init__()
        D = cfg["hidden_size"]
        self.mixer_norm = RMSNorm(D)
        if mixer in GATE_MODES:
            self.mixer = GateModeGDN2(D, cfg["num_heads"], cfg["head_dim"], mixer, conv_size=cfg["conv_size"],
                                      backend=backend, layer_idx=layer_idx, chunk_size=cfg.get("chunk_size"))
        elif mixer in ("swa", "attention"):
            window = swa_window(cfg) if mixer == "swa" else max_len
            self.mixer = SlidingWindowAttention(D, cfg["num_heads"], window, layer_idx)
            init_linear(self.mixer)
        else:
            raise ValueError(f"unknown mixer {mixer!r}; known: {MIXERS}")
        self.mlp_norm = RMSNorm(D)
        self.mlp = SwiGLU(D, mlp_inner)
        init_linear(self.mlp)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.mixer(self.mixer_norm(h))
        return h + self.mlp(self.mlp_norm(h))


class RetrievalLM(nn.Module):
    """Embedding, ``num_layers`` blocks of one mixer kind, final RMSNorm, output head tied to the embedding."""

    def __init__(self, mixer: str, cfg: dict, vocab_size: int, max_len: int, mlp_inner: int,
                 backend: str = "auto") -> None:
        super().__init__()
        self.mixer_kind, self.mlp_inner = mixer, mlp_inner
        self.embed = nn.Embedding(vocab_size, cfg["hidden_size"])
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(mixer, cfg, mlp_inner, max_len, i, backend)
                                    for i in range(cfg["num_layers"]))
        self.norm = RMSNorm(cfg["hidden_size"])

    def forward(self, tokens: Tensor) -> Tensor:
        h = self.embed(tokens)
        for block in self.blocks:
            h = block(h)
        return self.norm(h) @ self.embed.weight.T


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _count(mixer: str, cfg: dict, vocab_size: int, max_len: int, mlp_inner: int) -> int:
    with torch.device("meta"):  # sizes only: nothing is allocated or initialised
        return param_count(RetrievalLM(mixer, cfg, vocab_size, max_len, mlp_inner, backend="reference"))


def matched_mlp_width(mixer: str, cfg: dict, vocab_size: int, max_len: int) -> int:
    """The SwiGLU width that brings ``mixer``'s model closest to the reference model's parameter count
    (the reference mixer keeps ``cfg["mlp_inner"]``); an error if that is outside the tolerance."""
    ref_mixer, tol = cfg["param_match"]["reference"], cfg["param_match"]["tolerance"]
    target = _count(ref_mixer, cfg, vocab_size, max_len, cfg["mlp_inner"])
    if mixer == ref_mixer:
        return cfg["mlp_inner"]
    base = _count(mixer, cfg, vocab_size, max_len, cfg["mlp_inner"])
    per_unit = 3 * cfg["hidden_size"] * cfg["num_layers"]                # one more SwiGLU channel, every layer
    inner = max(1, cfg["mlp_inner"] + round((target - base) / per_unit))
    got = _count(mixer, cfg, vocab_size, max_len, inner)
    if abs(got - target) > tol * target:
        raise ValueError(f"{mixer}: {got} parameters with SwiGLU width {inner}, the reference has {target} "
                         f"(tolerance {tol}); change the sizes")
    return inner


def build_model(mixer: str, cfg: dict, vocab_size: int, max_len: int, backend: str = "auto") -> RetrievalLM:
    """The model of ``mixer`` with the parameter-matched SwiGLU width (initialised from torch's global RNG)."""
    inner = matched_mlp_width(mixer, cfg, vocab_size, max_len)
    return RetrievalLM(mixer, cfg, vocab_size, max_len, inner, backend=backend)
