"""Train-step throughput of a whole language model: GDN2 layers against the peer's, and a Transformer.

    python benchmarks/bench_lm.py [--batch 8] [--seq-len 4096] [--steps 5] [--impls ours,peer,transformer]
                                  [--no-peer] [--out DIR]

Three models of the same backbone (``gdn2.GDN2LM``: pre-norm blocks, SwiGLU MLPs, vocabulary 32000,
hidden size 2048, 24 blocks, bfloat16 parameters, AdamW), about 1.3 B parameters each:

- ``ours``: the paper's hybrid: GDN2 mixers (``backend="triton"``, 16 heads of 128) with an attention
  mixer in every fourth block (``swa_layers``; its window, 4096, covers the whole sequence);
- ``peer``: the same with each GDN2 mixer replaced by flash-linear-attention 0.6.0's ``GatedDeltaNet2``;
- ``transformer``: attention mixers in every block (causal SDPA, flash);
- ``ours-states``, ``ours-saved`` and ``ours-recompute`` (on request): ``ours`` with
  ``recompute="states"`` (the operator keeps all but its state pass's intermediates for its backward),
  ``recompute=False`` (every intermediate) and ``recompute=True`` (only its inputs); ``ours`` is the
  LM config's default, ``"partial"`` (a layer's own default is ``"states"``); ``ours-ckpt``: ``ours``
  with activation checkpointing (``gradient_checkpointing=True``: each block's forward runs again in the
  backward, for a larger batch).

A step is the forward, the cross-entropy loss, the backward and the optimizer step, on fresh random
token ids; the time is the median of ``--steps`` timed steps after two warm-up steps (synchronised with
CUDA events). When a batch does not fit, it is halved until it does. Writes ``results/lm-<card>.csv``
(``lm-<impls>-<card>.csv`` for another ``--impls``): card, impl, params_m, batch, seq_len, step_ms,
tokens_per_s, peak_gib, peer_over_this.
"""

import argparse
import statistics
from pathlib import Path

import torch
import triton
from bench import write_csv
from torch import nn

from gdn2 import GDN2LM, GDN2LMConfig

#: impl → the GDN2 layers' ``recompute`` for our models
RECOMPUTE = {"ours": "partial", "ours-states": "states", "ours-saved": False, "ours-recompute": True,
             "ours-ckpt": "partial"}
IMPLS = [*RECOMPUTE, "peer", "transformer"]
FIELDS = ["card", "impl", "params_m", "batch", "seq_len", "step_ms", "tokens_per_s", "peak_gib", "peer_over_this"]


class PeerMixer(nn.Module):
    """flash-linear-attention's GDN-2 layer behind the mixer interface of gdn2's blocks."""

    def __init__(self, hidden_size: int, num_heads: int, head_dim: int) -> None:
        super().__init__()
        from fla.layers.gdn2 import GatedDeltaNet2

        self.layer = GatedDeltaNet2(hidden_size=hidden_size, head_dim=head_dim, num_heads=num_heads)

    def forward(self, x, attention_mask=None, cache=None, use_cache=False, cu_seqlens=None):
        return self.layer(x, cu_seqlens=cu_seqlens)[0]


def build(impl: str, seq_len: int) -> GDN2LM:
    layers = 24
    swa = tuple(range(layers)) if impl == "transformer" else tuple(range(3, layers, 4))
    config = GDN2LMConfig(vocab_size=32000, hidden_size=2048, num_layers=layers, num_heads=16, head_dim=128,
                          swa_layers=swa, swa_window=seq_len, swa_heads=16, backend="triton",
                          recompute=RECOMPUTE.get(impl, "partial"), gradient_checkpointing=impl == "ours-ckpt")
    model = GDN2LM(config)
    if impl == "peer":
        for block in model.blocks:
            if not hasattr(block.mixer, "window"):
                block.mixer = PeerMixer(2048, 16, 128)
    return model.to("cuda", torch.bfloat16)


def measure(impl: str, batch: int, seq_len: int, steps: int) -> dict | None:
    """One model's median step time at the largest batch ≤ ``batch`` that fits."""
    while batch >= 1:
        model = opt = None
        try:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            model = build(impl, seq_len)
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
            times = []
            for i in range(steps + 2):
                ids = torch.randint(0, 32000, (batch, seq_len), device="cuda")
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                model.loss(ids).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                end.record()
                end.synchronize()
                if i >= 2:
                    times.append(start.elapsed_time(end))
            ms = statistics.median(times)
            params = sum(p.numel() for p in model.parameters()) / 1e6
            row = dict(impl=impl, params_m=round(params, 1), batch=batch, seq_len=seq_len, step_ms=round(ms, 1),
                       tokens_per_s=round(batch * seq_len / ms * 1e3), peak_gib=round(torch.cuda.max_memory_allocated()
                                                                                     / 2**30, 1))
            print(f"{impl:12s} {params:7.0f} M params  batch {batch}x{seq_len}  {ms:8.1f} ms/step  "
                  f"{row['tokens_per_s']:8d} tokens/s  peak {row['peak_gib']} GiB", flush=True)
            return row
        except torch.OutOfMemoryError:
            print(f"{impl}: batch {batch} does not fit; halving", flush=True)
            batch //= 2
        finally:
            del model, opt
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq-len", type=int, default=4096)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--impls", default="ours,peer,transformer",
                    help=f"models to time, in order, comma-separated, from {','.join(IMPLS)}")
    ap.add_argument("--no-peer", action="store_true", help="leave the peer out of --impls")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args()
    impls = [i for i in args.impls.split(",") if i and not (args.no_peer and i == "peer")]
    if any(i not in IMPLS for i in impls):
        ap.error(f"--impls takes {', '.join(IMPLS)}; got {args.impls!r}")
    torch.manual_seed(0)
    card = torch.cuda.get_device_name()
    print(f"card: {card}; Triton {triton.__version__}, torch {torch.__version__}")
    # another choice of models gets its own file, so that it never overwrites the comparison the docs quote
    default = impls == ap.get_default("impls").split(",")
    path = Path(args.out) / f"lm-{'' if default else '-'.join(impls) + '-'}{card.replace(' ', '_')}.csv"
    rows = []
    for impl in impls:                                   # the CSV is rewritten after every model
        row = measure(impl, args.batch, args.seq_len, args.steps)
        if row is None:
            continue
        rows.append(dict(row, card=card))
        peer = next((r for r in rows if r["impl"] == "peer"), None)
        for r in rows:
            r["peer_over_this"] = round(peer["step_ms"] / r["step_ms"] * r["batch"] / peer["batch"], 3) if peer else ""
        write_csv(path, rows, FIELDS)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
