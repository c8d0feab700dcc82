"""Per-token decoding latency, throughput and memory of a whole language model: GDN2 against a Transformer
with a key-value cache and against sliding-window attention, at batch sizes 1-256 and contexts 1K-32K.

    python examples/evaluation/decode_latency.py                 # a CUDA GPU; writes results/decode-<card>.csv
    python examples/evaluation/decode_latency.py --dry-run       # the host logic on the CPU at tiny sizes

Three models of one backbone (embedding of a 32000-token vocabulary, pre-norm blocks with a SwiGLU MLP,
final RMSNorm, output head tied to the embedding; bfloat16 weights), the same width and depth:

- ``gdn2``: ``gdn2.GDN2LM``, every mixer a GDN2 layer (Triton). Decoding is ``GDN2LM.generate(...,
  cuda_graph=True)``: each step of the whole model replays one captured CUDA graph. Its per-sequence
  state, the float32 S of every layer and the short convolutions' tails, does not grow with the context;
- ``transformer``: causal softmax attention (SDPA) in every block, the same heads and head size, with a
  static key-value cache preallocated for the context plus the generated tokens, a boolean mask of
  the filled slots, and the decoding step captured in a CUDA graph the same way;
- ``swa-W``: the Transformer with a window of W tokens: a ring buffer of W slots per layer.

The Transformer's SwiGLU is widened so that its parameter count matches GDN2's (GDN2's gate projections
make its mixer larger). What is measured, at every batch B and context L: the cache is filled to L
tokens (random contents: the step's work does not depend on them; GDN2's state is one prefilled
token's, scaled, since its size and the step's work are the same at every L), then n tokens are
generated greedily. ``ms_per_token`` is the time of one step for the whole batch: the difference of
two runs of different lengths over the difference of their lengths, so that prefill and capture
cancel, the median of three such differences. ``tokens_per_s`` is B over that time;
``state_mib_per_seq`` the decoding state one sequence holds (GDN2: every layer's state and conv
tails; attention: the keys and values of its cache); ``peak_gib`` the largest memory allocated
during the step, weights included. A configuration whose cache does not fit is written with status
``does not fit`` (an outcome: the key-value cache's memory wall). The ``crossover`` CSV gives, per
batch size, the context at which GDN2's step becomes cheaper than the Transformer's (linear between
the measured contexts), or says that it is cheaper everywhere or nowhere.

A serving engine's paged flash-decoding kernels would run the Transformer's step faster than SDPA over a
masked static cache: this baseline is the one PyTorch gives, and the comparison is stated as such.
"""

import argparse
import copy
import csv
import math
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from models import SwiGLU  # this folder's models.py: the MLP of the retrieval models too
from torch import Tensor, nn

import gdn2
from gdn2 import GDN2LM, GDN2LMConfig
from gdn2.layer import init_linear
from gdn2.norm import RMSNorm

HERE = Path(__file__).resolve().parent
FIELDS = ["card", "model", "window", "batch", "context", "params_m", "ms_per_token", "tokens_per_s",
          "state_mib_per_seq", "peak_gib", "status"]
CROSS_FIELDS = ["card", "batch", "crossover_context", "note"]
FULL = {"vocab_size": 32000, "hidden_size": 1024, "num_layers": 24, "num_heads": 8, "head_dim": 128,
        "batches": [1, 8, 64, 256], "contexts": [1024, 2048, 4096, 8192, 16384, 32768], "windows": [64, 4096],
        "tokens": (16, 48)}
DRY = {"vocab_size": 256, "hidden_size": 64, "num_layers": 2, "num_heads": 2, "head_dim": 32,
       "batches": [1, 2], "contexts": [16, 32], "windows": [8], "tokens": (3, 6)}
REPEATS = 3  # each step time is the median of this many differences of two runs


def _rope(x: Tensor, pos: Tensor, base: float = 10000.0) -> Tensor:
    """Rotary embedding of x [B, h, T, d] at positions pos [T] (a tensor, so a captured graph can advance it)."""
    d = x.shape[-1]
    inv = base ** (-torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d)
    ang = pos.to(torch.float32)[:, None] * inv                                   # [T, d/2]
    cos, sin = ang.cos().to(x.dtype), ang.sin().to(x.dtype)
    x1, x2 = x[..., : d // 2], x[..., d // 2:]
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


class CachedAttention(nn.Module):
    """Causal softmax attention with a static cache of ``slots`` keys and values per sequence: the whole
    context (slots ≥ context + new tokens) or a ring buffer of the last ``slots`` tokens (a window)."""

    def __init__(self, hidden_size: int, heads: int) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, hidden_size // heads
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(hidden_size, hidden_size, bias=False)
                                                               for _ in range(4))
        self.k_cache: Tensor | None = None
        self.v_cache: Tensor | None = None

    def allocate(self, batch: int, slots: int, device, dtype) -> None:
        shape = (batch, self.heads, slots, self.head_dim)
        self.k_cache = torch.randn(shape, device=device, dtype=dtype)   # a filled cache: contents do not matter
        self.v_cache = torch.randn(shape, device=device, dtype=dtype)

    def cache_bytes(self) -> int:
        return 2 * self.k_cache.numel() * self.k_cache.element_size()

    def step(self, x: Tensor, pos: Tensor) -> Tensor:
        """One token per sequence, x [B, 1, D], at position pos (a 1-element tensor)."""
        B, _, D = x.shape
        h, d, slots = self.heads, self.head_dim, self.k_cache.shape[2]
        split = lambda y: y.view(B, 1, h, d).transpose(1, 2)                      # [B, h, 1, d]
        q, k = _rope(split(self.q_proj(x)), pos), _rope(split(self.k_proj(x)), pos)
        slot = pos % slots
        self.k_cache.index_copy_(2, slot, k)
        self.v_cache.index_copy_(2, slot, split(self.v_proj(x)))
        filled = torch.arange(slots, device=x.device) <= pos                      # every slot once pos ≥ slots − 1
        o = F.scaled_dot_product_attention(q, self.k_cache, self.v_cache, attn_mask=filled[None, None, None, :])
        return self.o_proj(o.transpose(1, 2).reshape(B, 1, D))


class TransformerLM(nn.Module):
    """GDN2LM's backbone with CachedAttention mixers; decoding only (the step of a filled cache)."""

    def __init__(self, vocab_size: int, hidden_size: int, num_layers: int, heads: int, mlp_inner: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.mixer_norms = nn.ModuleList(RMSNorm(hidden_size) for _ in range(num_layers))
        self.mixers = nn.ModuleList(CachedAttention(hidden_size, heads) for _ in range(num_layers))
        self.mlp_norms = nn.ModuleList(RMSNorm(hidden_size) for _ in range(num_layers))
        self.mlps = nn.ModuleList(SwiGLU(hidden_size, mlp_inner) for _ in range(num_layers))
        self.norm = RMSNorm(hidden_size)
        init_linear(self)
        self.pos = torch.zeros(1, dtype=torch.long)

    def allocate(self, batch: int, slots: int, context: int) -> None:
        p = next(self.parameters())
        for m in self.mixers:
            m.allocate(batch, slots, p.device, p.dtype)
        self.pos = torch.full((1,), context, dtype=torch.long, device=p.device)

    def cache_bytes(self) -> int:
        return sum(m.cache_bytes() for m in self.mixers)

    def step(self, token: Tensor) -> Tensor:
        """token [B, 1] → logits [B, vocab]; the caches and the position advance in place."""
        h = self.embed(token)
        for mn, m, fn, f in zip(self.mixer_norms, self.mixers, self.mlp_norms, self.mlps):
            h = h + m.step(mn(h), self.pos)
            h = h + f(fn(h))
        self.pos.add_(1)
        return (self.norm(h) @ self.embed.weight.T)[:, -1]


def param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(cfg: dict, device, dtype, backend: str) -> tuple[GDN2LM, TransformerLM]:
    """GDN2LM and a Transformer whose SwiGLU width brings it to GDN2LM's parameter count."""
    lm_cfg = GDN2LMConfig(vocab_size=cfg["vocab_size"], hidden_size=cfg["hidden_size"], num_layers=cfg["num_layers"],
                          num_heads=cfg["num_heads"], head_dim=cfg["head_dim"], backend=backend)
    torch.manual_seed(0)
    ours = GDN2LM(lm_cfg)
    D, L, heads = cfg["hidden_size"], cfg["num_layers"], cfg["hidden_size"] // cfg["head_dim"]
    with torch.device("meta"):
        base = TransformerLM(cfg["vocab_size"], D, L, heads, 1)
    inner = max(1, round((param_count(ours) - param_count(base) + 3 * D * L) / (3 * D * L)))
    other = TransformerLM(cfg["vocab_size"], D, L, heads, inner)
    return ours.to(device, dtype).eval(), other.to(device, dtype).eval()


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _clone_cache(cache: gdn2.Cache) -> gdn2.Cache:
    return copy.deepcopy(cache)


@torch.no_grad()
def gdn2_step_ms(model: GDN2LM, batch: int, tokens: tuple[int, int], device, graph: bool) -> tuple[float, int]:
    """(ms per decoding step of ``generate``, state bytes per sequence): two runs of different lengths."""
    ids = torch.randint(0, model.config.vocab_size, (batch, 1), device=device)
    cache = gdn2.Cache()
    model(ids, cache=cache, use_cache=True)                       # one token: the state's shapes and dtypes
    for state in cache.layers.values():
        state.recurrent_state.normal_().mul_(0.1)                 # a used state; its size is the same at any context

    def run(n: int) -> float:
        c = _clone_cache(cache)
        _sync(device)
        start = time.perf_counter()
        model.generate(ids, n, temperature=0, cache=c, cuda_graph=graph)
        _sync(device)
        return time.perf_counter() - start

    diffs = [run(tokens[1]) - run(tokens[0]) for _ in range(REPEATS)]
    return 1e3 * statistics.median(diffs) / (tokens[1] - tokens[0]), cache.num_bytes() // batch


@torch.no_grad()
def attention_step_ms(model: TransformerLM, batch: int, context: int, slots: int, tokens: tuple[int, int],
                      device, graph: bool) -> float:
    """ms per greedy decoding step with a cache filled to ``context`` tokens (``slots`` per layer)."""
    def run(n: int) -> float:
        model.allocate(batch, slots, context)
        token = torch.randint(0, model.embed.num_embeddings, (batch, 1), device=device)
        step = model.step
        if graph:
            static_tok = token.clone()
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                model.step(static_tok)                             # warm-up outside the capture
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                static_logits = model.step(static_tok)

            def step(tok: Tensor) -> Tensor:
                static_tok.copy_(tok)
                g.replay()
                return static_logits.clone()
        _sync(device)
        start = time.perf_counter()
        for _ in range(n):
            token = step(token).argmax(-1, keepdim=True)
        _sync(device)
        return time.perf_counter() - start

    diffs = [run(tokens[1]) - run(tokens[0]) for _ in range(REPEATS)]
    return 1e3 * statistics.median(diffs) / (tokens[1] - tokens[0])


def _fits(nbytes: int, device) -> bool:
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info()
    return nbytes < 0.85 * free


def _peak_gib(device) -> float | str:
    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else ""


def crossovers(rows: list[dict], card: str) -> list[dict]:
    """Per batch: the context where GDN2's step gets cheaper than the Transformer's (linear between contexts)."""
    out = []
    for batch in dict.fromkeys(r["batch"] for r in rows):
        pts = []
        for r in rows:
            if r["batch"] == batch and r["model"] == "transformer":
                g = next((x for x in rows if x["model"] == "gdn2" and x["batch"] == batch
                          and x["context"] == r["context"] and x["status"] == "ok"), None)
                if g is not None:
                    t = r["ms_per_token"] if r["status"] == "ok" else math.inf
                    pts.append((r["context"], t - g["ms_per_token"]))
        pts.sort()
        row = {"card": card, "batch": batch, "crossover_context": "", "note": ""}
        if not pts:
            row["note"] = "no measurements"
        elif pts[0][1] > 0:
            row["note"] = f"GDN2 cheaper at every measured context (from {pts[0][0]})"
        else:
            for (c0, d0), (c1, d1) in zip(pts, pts[1:]):
                if d0 <= 0 < d1:
                    frac = 1.0 if math.isinf(d1) else -d0 / (d1 - d0)
                    row["crossover_context"] = round(c0 + frac * (c1 - c0))
                    row["note"] = ("the Transformer's cache does not fit beyond" if math.isinf(d1)
                                   else "linear between the measured contexts")
                    break
            else:
                row["note"] = f"the Transformer is cheaper at every measured context (to {pts[-1][0]})"
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="the host logic on the CPU, tiny sizes")
    parser.add_argument("--out", default=None,
                        help="folder of the CSVs (default: results/ next to this script; for --dry-run a "
                             "temporary one)")
    parser.add_argument("--batches", default=None, help="comma-separated batch sizes")
    parser.add_argument("--contexts", default=None, help="comma-separated context lengths")
    args = parser.parse_args(argv)
    cfg = dict(DRY if args.dry_run else FULL)
    if args.batches:
        cfg["batches"] = [int(x) for x in args.batches.split(",")]
    if args.contexts:
        cfg["contexts"] = [int(x) for x in args.contexts.split(",")]
    if args.dry_run:
        device, dtype, backend, graph, card = torch.device("cpu"), torch.float32, "reference", False, "dry-run"
    else:
        if not torch.cuda.is_available():
            parser.error("needs a CUDA GPU (or --dry-run)")
        device, dtype, backend, graph = torch.device("cuda"), torch.bfloat16, "triton", True
        card = torch.cuda.get_device_name()
    ours, other = build(cfg, device, dtype, backend)
    params = {"gdn2": param_count(ours) / 1e6, "transformer": param_count(other) / 1e6}
    print(f"{card}: GDN2LM {params['gdn2']:.1f}M and Transformer {params['transformer']:.1f}M parameters, "
          f"{platform.python_version()}, torch {torch.__version__}", file=sys.stderr)
    rows = []
    try:
        measure(cfg, ours, other, params, card, device, dtype, graph, rows)
    except KeyboardInterrupt:       # a time limit: keep what was measured
        print("interrupted: writing the rows measured so far", file=sys.stderr)
    write(args, card, rows)
    return 0


def measure(cfg, ours, other, params, card, device, dtype, graph, rows: list[dict]) -> None:
    """Append a row per (batch, context, model) to ``rows``. GDN2's step is measured once per batch: its
    state, and so its step, is the same at every context."""
    for batch in cfg["batches"]:
        gdn2_ms = None
        for context in cfg["contexts"]:
            cases = [("gdn2", "")] + [("transformer", "")] + [(f"swa-{w}", w) for w in cfg["windows"]]
            for model, window in cases:
                row = {"card": card, "model": model, "window": window, "batch": batch, "context": context,
                       "params_m": round(params["gdn2" if model == "gdn2" else "transformer"], 2),
                       "ms_per_token": "", "tokens_per_s": "", "state_mib_per_seq": "", "peak_gib": "",
                       "status": "ok"}
                if device.type == "cuda":
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                if model == "gdn2":
                    if gdn2_ms is None:
                        gdn2_ms = (*gdn2_step_ms(ours, batch, cfg["tokens"], device, graph), _peak_gib(device))
                    ms, per_seq, peak = gdn2_ms
                else:
                    slots = context + cfg["tokens"][1] + 2 if model == "transformer" else min(window, context)
                    per_seq = 2 * cfg["num_layers"] * slots * cfg["hidden_size"] * torch.finfo(dtype).bits // 8
                    if not _fits(per_seq * batch, device):
                        row.update(state_mib_per_seq=round(per_seq / 2**20, 3), status="does not fit")
                        rows.append(row)
                        continue
                    try:
                        ms = attention_step_ms(other, batch, context, slots, cfg["tokens"], device, graph)
                    except torch.cuda.OutOfMemoryError:
                        row.update(state_mib_per_seq=round(per_seq / 2**20, 3), status="does not fit")
                        rows.append(row)
                        continue
                    finally:
                        for m in other.mixers:
                            m.k_cache = m.v_cache = None
                    peak = _peak_gib(device)
                row.update(ms_per_token=round(ms, 4), tokens_per_s=round(batch / ms * 1e3, 1),
                           state_mib_per_seq=round(per_seq / 2**20, 3), peak_gib=peak)
                rows.append(row)
                print(f"B={batch:<4} L={context:<6} {model:<12} {ms:8.3f} ms/token  "
                      f"{batch / ms * 1e3:10.0f} tokens/s  {per_seq / 2**20:9.2f} MiB/seq", file=sys.stderr)


def write(args, card: str, rows: list[dict]) -> None:
    cross = crossovers(rows, card)
    # a dry run's numbers mean nothing: unless told, they go to a temporary folder, not next to the results
    out = Path(args.out) if args.out else (Path(tempfile.mkdtemp(prefix="gdn2-decode-")) if args.dry_run
                                           else HERE / "results")
    out.mkdir(parents=True, exist_ok=True)
    stem = "decode-" + card.replace(" ", "_")
    outputs = ((out / f"{stem}.csv", FIELDS, rows), (out / f"{stem}-crossover.csv", CROSS_FIELDS, cross))
    for path, fields, data in outputs:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
            writer.writeheader()
            writer.writerows(data)
        print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
