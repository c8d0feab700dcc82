"""A small byte-level causal language model built from GDN2 layers (the paper's hybrid, optionally).

    h_0 = Embed(bytes),   h ← h + Mixer(RMSNorm(h)),   h ← h + SwiGLU(RMSNorm(h)),   logits = RMSNorm(h) Embedᵀ

Each block's mixer is a :class:`~gdn2.layer.GDN2` layer, or, at the indices listed in
``GDN2LMConfig.swa_layers``, sliding-window softmax attention (SDPA with a causal banded mask, RoPE),
which the paper interleaves for its hybrid. Decoding keeps a constant amount of state per layer:
the GDN2 recurrent and convolution states, and at most ``swa_window − 1`` keys and values.
"""

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from jaxtyping import Float, Integer, Shaped
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from .cache import Cache, WindowState
from .layer import GDN2, init_linear
from .norm import RMSNorm
from .ops._contract import check_packed_offsets

__all__ = ["GDN2LMConfig", "GDN2LM", "SlidingWindowAttention", "SwiGLU"]

#: queries per block of the packed attention's explicit mask (``SlidingWindowAttention`` on packed documents)
PACKED_QUERY_BLOCK = 1024


@dataclass
class GDN2LMConfig:
    """Sizes of :class:`GDN2LM`. The defaults train on two CPU cores in about two minutes."""

    vocab_size: int = 256
    hidden_size: int = 128
    num_layers: int = 2
    num_heads: int = 2
    head_dim: int = 32
    num_v_heads: int | None = None
    expand_v: float = 1.0
    conv_size: int = 4
    allow_neg_eigval: bool = False
    mlp_ratio: float = 8 / 3
    swa_layers: tuple[int, ...] = field(default_factory=tuple)
    swa_window: int = 64
    swa_heads: int = 4
    norm_eps: float = 1e-5
    backend: str = "auto"
    #: what the GDN2 layers' Triton operator keeps for its backward (:class:`~gdn2.layer.GDN2`); "partial"
    #: rather than the layer's own default, "states", since a model keeps those bytes in every GDN2 layer
    recompute: bool | str = "partial"
    #: train with activation checkpointing: each block keeps only its input for the backward, which runs
    #: the block's forward again (about one more forward per step, for the memory of one block's activations)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        self.swa_layers = tuple(self.swa_layers)
        for name in ("vocab_size", "hidden_size", "num_layers", "swa_window", "swa_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        bad = [i for i in self.swa_layers if isinstance(i, bool) or not isinstance(i, int)
               or not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f"swa_layers must be layer indices in [0, {self.num_layers}), got {list(self.swa_layers)}")
        if self.swa_layers and self.hidden_size % (2 * self.swa_heads) != 0:
            raise ValueError(
                f"hidden_size = {self.hidden_size} must be a multiple of 2·swa_heads = {2 * self.swa_heads} (RoPE)"
            )
        if not self.mlp_ratio > 0:
            raise ValueError(f"mlp_ratio must be positive, got {self.mlp_ratio}")
        if not isinstance(self.gradient_checkpointing, bool):
            raise TypeError(f"gradient_checkpointing must be a bool, got {self.gradient_checkpointing!r}")

    def to_dict(self) -> dict:
        return asdict(self)


class SwiGLU(nn.Module):
    """W_down (SiLU(W_gate x) ⊙ W_up x), the width rounded up to a multiple of 16."""

    def __init__(self, hidden_size: int, ratio: float) -> None:
        super().__init__()
        inner = 16 * -(-int(hidden_size * ratio) // 16)
        self.gate_proj = nn.Linear(hidden_size, inner, bias=False)
        self.up_proj = nn.Linear(hidden_size, inner, bias=False)
        self.down_proj = nn.Linear(inner, hidden_size, bias=False)

    def forward(self, x: Float[Tensor, "*lead D"]) -> Float[Tensor, "*lead D"]:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def _rope(x: Tensor, pos: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary position embedding of x [B, heads, T, d] at integer positions pos [B, T]."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)   # [d/2]
    ang = pos.to(torch.float32)[:, None, :, None] * inv                               # [B, 1, T, d/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class SlidingWindowAttention(nn.Module):
    """Causal softmax attention over the last ``window`` tokens (itself included), RoPE positions.

    Decoding keeps the last ``window − 1`` token slots per sequence: constant memory. Positions count
    the valid tokens of each sequence, so padding never shifts them.
    """

    @property
    def cache_key(self):
        """This layer's key in a Cache: ``layer_idx``, or the layer itself when it has none."""
        return self if self.layer_idx is None else self.layer_idx

    def __init__(self, hidden_size: int, num_heads: int, window: int, layer_idx: int | None = None) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.window = num_heads, hidden_size // num_heads, window
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.k_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.v_proj = nn.Linear(hidden_size, hidden_size, bias=False)
        self.o_proj = nn.Linear(hidden_size, hidden_size, bias=False)

    def forward(
        self,
        x: Float[Tensor, "B T D"],
        attention_mask: Shaped[Tensor, "B Tm"] | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        cu_seqlens: Tensor | None = None,
    ) -> Float[Tensor, "B T D"]:
        """Attend over the window; zero at padded positions. With ``use_cache`` the cache is updated in place.

        ``cu_seqlens`` [N + 1] says that the one row of x (B = 1) packs N documents: each attends within
        itself only, and its positions start at 0.
        """
        B, T, D = x.shape
        h, d = self.num_heads, self.head_dim
        if use_cache and cache is None:
            raise ValueError("use_cache=True needs a cache to update: pass cache=gdn2.Cache()")
        if cu_seqlens is not None:
            return self._packed(x, cu_seqlens, attention_mask, cache)
        if attention_mask is None and cache is None and T <= self.window:
            # every token sees all earlier ones: plain causal attention, which SDPA runs without a mask
            split = lambda y: y.view(B, T, h, d).transpose(1, 2)                            # [B, h, T, d]
            pos = torch.arange(T, device=x.device).expand(B, T)
            q, k = _rope(split(self.q_proj(x)), pos), _rope(split(self.k_proj(x)), pos)
            o = F.scaled_dot_product_attention(q, k, split(self.v_proj(x)), is_causal=True)
            return self.o_proj(o.transpose(1, 2).reshape(B, T, D))
        valid = (torch.ones(B, T, dtype=torch.bool, device=x.device) if attention_mask is None
                 else attention_mask[:, attention_mask.shape[1] - T:].to(x.device).bool())   # [B, T]
        past = cache.get(self.cache_key) if cache is not None else None
        seen = past.seen if past is not None else torch.zeros(B, dtype=torch.long, device=x.device)
        pos = seen[:, None] + valid.long().cumsum(1) - 1                                    # [B, T]
        split = lambda y: y.view(B, T, h, d).transpose(1, 2)                                # [B, h, T, d]
        q = _rope(split(self.q_proj(x)), pos.clamp_min(0))
        k = _rope(split(self.k_proj(x)), pos.clamp_min(0))
        v = split(self.v_proj(x))
        if past is not None:
            k_all, v_all = torch.cat([past.k, k], 2), torch.cat([past.v, v], 2)             # [B, h, L+T, d]
            valid_all, pos_all = torch.cat([past.valid, valid], 1), torch.cat([past.pos, pos], 1)
        else:
            k_all, v_all, valid_all, pos_all = k, v, valid, pos
        L = k_all.shape[2] - T
        dist = pos[:, :, None] - pos_all[:, None, :]                                        # [B, T, L+T]
        allowed = valid_all[:, None, :] & (dist >= 0) & (dist < self.window)
        allowed[:, :, L:] &= torch.ones(T, T, dtype=torch.bool, device=x.device).tril()     # causal in slots
        # A padded query sees only itself (its output is never used): no row is empty, no NaN.
        allowed[:, :, L:] |= torch.eye(T, dtype=torch.bool, device=x.device) & ~valid[:, :, None]
        o = F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=allowed[:, None])     # [B, h, T, d]
        if use_cache:  # keep the last window − 1 slots: all that a later query can see
            start = max(0, k_all.shape[2] - (self.window - 1))
            cache.update(self.cache_key, WindowState(
                k=k_all[:, :, start:], v=v_all[:, :, start:], valid=valid_all[:, start:], pos=pos_all[:, start:],
                seen=seen + valid.long().sum(1),
            ))
        return self.o_proj(o.transpose(1, 2).reshape(B, T, D)) * valid[..., None]

    def _packed(self, x: Tensor, cu_seqlens: Tensor, attention_mask: Tensor | None, cache: Cache | None) -> Tensor:
        """Documents packed in one row: the window's mask restricted to each document, positions from its start.

        PyTorch's SDPA has no packed form, so the mask is explicit: queries go in blocks of
        ``PACKED_QUERY_BLOCK`` tokens, each against the keys its window can reach, so memory and time grow
        with T·(block + window) rather than T²."""
        B, T, D = x.shape
        if B != 1 or attention_mask is not None or cache is not None:
            raise ValueError("cu_seqlens packs documents into one row (B = 1) for training, without "
                             f"attention_mask or cache; got B = {B}"
                             + (", an attention_mask" if attention_mask is not None else "")
                             + (", a cache" if cache is not None else ""))
        check_packed_offsets(cu_seqlens, T)
        h, d = self.num_heads, self.head_dim
        cu = cu_seqlens.to(device=x.device, dtype=torch.long)
        t = torch.arange(T, device=x.device)
        doc = torch.searchsorted(cu[1:], t, right=True)                                     # [T]
        pos = (t - cu[doc])[None]                                                            # [1, T]
        split = lambda y: y.view(B, T, h, d).transpose(1, 2)                                # [1, h, T, d]
        q, k = _rope(split(self.q_proj(x)), pos), _rope(split(self.k_proj(x)), pos)
        v = split(self.v_proj(x))
        blocks = []
        for start in range(0, T, PACKED_QUERY_BLOCK):
            end = min(T, start + PACKED_QUERY_BLOCK)
            lo = max(0, start - self.window + 1)                                            # keys [lo, end)
            dist = pos[:, start:end, None] - pos[:, None, lo:end]                           # [1, Tq, Tk]
            allowed = (doc[start:end, None] == doc[None, lo:end]) & (dist >= 0) & (dist < self.window)
            blocks.append(F.scaled_dot_product_attention(q[:, :, start:end], k[:, :, lo:end], v[:, :, lo:end],
                                                         attn_mask=allowed[:, None]))
        o = torch.cat(blocks, 2) if blocks else q                                           # [1, h, T, d]
        return self.o_proj(o.transpose(1, 2).reshape(B, T, D))


def _check_token_ids(input_ids: object) -> Tensor:
    """input_ids itself if it is a [B, T] integer tensor, else the named error."""
    if not isinstance(input_ids, Tensor) or input_ids.dim() != 2:
        shape = list(input_ids.shape) if isinstance(input_ids, Tensor) else type(input_ids).__name__
        raise ValueError(f"input_ids must be a [B, T] tensor of token ids, got {shape} (one sequence: "
                         "input_ids[None])")
    if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
        raise TypeError(f"input_ids must be an integer tensor of token ids, got {input_ids.dtype}")
    return input_ids


class Block(nn.Module):
    """Pre-norm residual block: mixer (GDN2 or sliding-window attention), then SwiGLU."""

    def __init__(self, config: GDN2LMConfig, layer_idx: int) -> None:
        super().__init__()
        c = config
        self.mixer_norm = RMSNorm(c.hidden_size, c.norm_eps)
        if layer_idx in c.swa_layers:
            self.mixer = SlidingWindowAttention(c.hidden_size, c.swa_heads, c.swa_window, layer_idx)
            init_linear(self.mixer)
        else:
            self.mixer = GDN2(c.hidden_size, c.num_heads, c.head_dim, c.num_v_heads, c.expand_v, c.conv_size,
                              allow_neg_eigval=c.allow_neg_eigval, norm_eps=c.norm_eps, backend=c.backend,
                              layer_idx=layer_idx, recompute=c.recompute)
        self.mlp_norm = RMSNorm(c.hidden_size, c.norm_eps)
        self.mlp = SwiGLU(c.hidden_size, c.mlp_ratio)
        init_linear(self.mlp)

    def forward(self, h: Tensor, attention_mask: Tensor | None, cache: Cache | None, use_cache: bool,
                cu_seqlens: Tensor | None = None) -> Tensor:
        h = h + self.mixer(self.mixer_norm(h), attention_mask, cache, use_cache, cu_seqlens=cu_seqlens)
        return h + self.mlp(self.mlp_norm(h))


class GDN2LM(nn.Module):
    """Byte-level causal LM: embedding (vocab 256), N blocks, final RMSNorm, output head tied to the embedding."""

    def __init__(self, config: GDN2LMConfig | None = None) -> None:
        super().__init__()
        self.config = config = config or GDN2LMConfig()
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.blocks = nn.ModuleList(Block(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.norm_eps)

    def forward(
        self,
        input_ids: Integer[Tensor, "B T"],
        attention_mask: Shaped[Tensor, "B Tm"] | None = None,
        cache: Cache | None = None,
        use_cache: bool = False,
        cu_seqlens: Tensor | None = None,
    ) -> Float[Tensor, "B T vocab"]:
        """Logits [B, T, vocab_size]; with ``use_cache`` every layer's decoding state is updated in place.

        ``cu_seqlens`` [N + 1] (int32 or int64, 0 to T, non-decreasing) says that the one row of
        ``input_ids`` (B = 1) packs N documents, as pre-training feeds them: no layer lets a document see
        another (the GDN2 layers restart their state and convolution, attention masks across documents and
        restarts its positions), so the logits of each document are those of the document alone. For
        training and scoring: without ``attention_mask`` and without a cache.
        """
        _check_token_ids(input_ids)
        # a value check reads the ids on the host: not while compiling or capturing a CUDA graph
        capturing = input_ids.is_cuda and torch.cuda.is_current_stream_capturing()
        if (input_ids.numel() and not torch.compiler.is_compiling() and not capturing
                and not (0 <= int(input_ids.min()) and int(input_ids.max()) < self.config.vocab_size)):
            raise ValueError(f"input_ids must lie in [0, {self.config.vocab_size}), got "
                             f"[{int(input_ids.min())}, {int(input_ids.max())}]")
        if cu_seqlens is not None:
            if input_ids.shape[0] != 1 or attention_mask is not None or cache is not None or use_cache:
                raise ValueError("cu_seqlens packs documents into one row (B = 1) for training and scoring, "
                                 f"without attention_mask or a cache; got B = {input_ids.shape[0]}"
                                 + (", an attention_mask" if attention_mask is not None else "")
                                 + (", a cache" if cache is not None or use_cache else ""))
            check_packed_offsets(cu_seqlens, input_ids.shape[1])
            cu_seqlens = cu_seqlens.to(input_ids.device)
        h = self.embed(input_ids)
        # activation checkpointing applies to training only: a cache is state that a rerun would advance twice
        checkpointing = (self.config.gradient_checkpointing and self.training and torch.is_grad_enabled()
                         and cache is None and not use_cache)
        for block in self.blocks:
            if checkpointing:
                h = checkpoint(block, h, attention_mask, None, False, cu_seqlens, use_reentrant=False)
            else:
                h = block(h, attention_mask, cache, use_cache, cu_seqlens)
        return self.norm(h) @ self.embed.weight.T

    def loss(self, input_ids: Integer[Tensor, "B T"], cu_seqlens: Tensor | None = None) -> Tensor:
        """Mean next-byte cross-entropy (nats) of ``input_ids[:, 1:]`` given the prefixes.

        With ``cu_seqlens`` (packed documents, see :meth:`forward`), of every token given the earlier ones of
        its own document: a document's first token is never a target (nothing of it precedes it).
        """
        T = _check_token_ids(input_ids).shape[1]
        if T < 2:
            raise ValueError(f"input_ids has T = {T} token: nothing to predict")
        if cu_seqlens is None:
            logits = self(input_ids[:, :-1])
            return F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), input_ids[:, 1:].reshape(-1))
        logits = self(input_ids, cu_seqlens=cu_seqlens)[0, :-1]                            # predict tokens 1 … T−1
        starts = cu_seqlens.to(input_ids.device, torch.long)                               # documents' first tokens
        # target s − 1 (token s given token s − 1) crosses into the document that starts at s, 0 < s < T
        across = torch.zeros(T - 1, dtype=torch.long, device=input_ids.device).scatter_reduce(
            0, (starts - 1).clamp(0, T - 2), ((starts > 0) & (starts < T)).long(), "amax")
        targets = input_ids[0, 1:].masked_fill(across.bool(), -100)
        if not torch.compiler.is_compiling() and bool(across.all()):
            raise ValueError("no token of input_ids has an earlier one in its document: nothing to predict")
        return F.cross_entropy(logits.float(), targets, ignore_index=-100)

    @torch.no_grad()
    def generate(
        self,
        input_ids: Tensor,
        max_new_tokens: int,
        temperature: float | int = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        cache: Cache | None = None,
        cuda_graph: bool = False,
    ) -> Integer[Tensor, "B T_out"]:
        """Prefill the prompt ``input_ids`` [B, T] (byte ids), then sample one token at a time with constant
        memory per token.

        ``temperature = 0`` is greedy. Pass a :class:`~gdn2.cache.Cache` to inspect the decoding state.
        Returns the prompt followed by ``max_new_tokens`` sampled tokens.

        ``cuda_graph=True`` (CUDA, Triton backend, no attention layers) captures one decoding step of the
        whole model in a CUDA graph after the first and replays it for every further token: a step at
        small batch then costs what its kernels take on the GPU, not what the host does to launch them.
        The layers update their states in place, so the graph reads and writes the same cache tensors.
        """
        _check_token_ids(input_ids)
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a non-negative int, got {max_new_tokens!r}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a real number, got {type(temperature).__name__}")
        if not temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {temperature}")
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        if input_ids.shape[1] < 1:
            raise ValueError("input_ids must hold at least one prompt token")
        if cuda_graph and not (input_ids.is_cuda and not self.config.swa_layers):
            raise ValueError("cuda_graph=True needs CUDA input ids and a model without attention layers (their "
                             "decoding cache grows up to the window, which a captured graph cannot follow)")
        was_training = self.training
        self.eval()
        cache = Cache() if cache is None else cache
        out, logits = [input_ids], self(input_ids, cache=cache, use_cache=True)[:, -1]
        step = self._decode_step(cache, cuda_graph)
        for i in range(max_new_tokens):
            if temperature == 0:
                nxt = logits.argmax(-1, keepdim=True)
            else:
                scaled = logits.float() / temperature
                if top_k is not None:
                    kth = scaled.topk(min(top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
                    scaled = scaled.masked_fill(scaled < kth, float("-inf"))
                nxt = torch.multinomial(scaled.softmax(-1), 1, generator=generator)
            out.append(nxt)
            if i + 1 < max_new_tokens:
                logits = step(nxt)
        self.train(was_training)
        return torch.cat(out, dim=1)

    def _decode_step(self, cache: Cache, cuda_graph: bool):
        """token [B, 1] -> logits [B, vocab] of one decoding step (the cache updated in place): eager, or
        eager once and then a CUDA graph of it replayed on a static token buffer."""

        def eager(token: Tensor) -> Tensor:
            return self(token, cache=cache, use_cache=True)[:, -1]

        if not cuda_graph:
            return eager
        graph: list = []

        def replay(token: Tensor) -> Tensor:
            if not graph:                                   # the first step runs eagerly (compiles the kernels)
                logits = eager(token)
                static = token.clone()
                torch.cuda.synchronize()
                g = torch.cuda.CUDAGraph()
                with torch.cuda.graph(g):                   # records the step; nothing runs, the state stays
                    static_logits = eager(static)
                graph.extend([g, static, static_logits])
                return logits
            g, static, static_logits = graph
            static.copy_(token)
            g.replay()
            return static_logits.clone()

        return replay
