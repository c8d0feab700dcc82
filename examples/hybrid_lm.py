"""Train the byte-level hybrid LM (GDN2 + one sliding-window attention layer) briefly, then generate.

Run: python examples/hybrid_lm.py [--steps 100]
"""

import argparse

import torch

from gdn2 import Cache, GDN2LMConfig
from gdn2.train import TrainConfig, train

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=100)
args = parser.parse_args()

config = GDN2LMConfig(num_layers=3, swa_layers=(1,), swa_window=32, backend="auto")
model, summary = train(config, TrainConfig(steps=args.steps, eval_every=max(1, args.steps // 4), sample_tokens=120))

# Decoding memory stays constant: GDN2 states and conv tails, and at most swa_window − 1 keys per SWA layer.
cache = Cache()
prompt = torch.tensor([list(b"Captain Wentworth")])
out = model.generate(prompt, 200, temperature=0.8, top_k=40, cache=cache)
print(bytes(out[0].tolist()).decode("utf-8", errors="replace"))
print(f"decoding state after {out.shape[1]} tokens: {cache.num_bytes()} bytes")
