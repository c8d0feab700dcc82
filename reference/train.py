"""A short CPU training run of :class:`~gdn2.model.GDN2LM` on the embedded corpus (``gdn2 train``).

Next-byte prediction on Jane Austen's *Persuasion* (the last 5 % held out for validation), AdamW
with linear warm-up and cosine decay, gradient clipping at 1. The defaults finish in about two
minutes on two CPU cores and take the validation loss from ln 256 ≈ 5.55 nats well below 3.
"""

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import Tensor

from .data import corpus_tensor
from .model import GDN2LM, GDN2LMConfig

__all__ = ["TrainConfig", "train", "sample_text"]


@dataclass
class TrainConfig:
    """Optimisation settings of :func:`train`."""

    steps: int = 200
    batch_size: int = 16
    seq_len: int = 64
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.1
    eval_every: int = 50
    eval_batches: int = 8
    seed: int = 0
    sample_tokens: int = 240
    prompt: str = "Anne Elliot"

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "seq_len", "eval_every", "eval_batches"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        for name in ("warmup", "sample_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")
        if not 0 <= self.weight_decay < float("inf"):
            raise ValueError(f"weight_decay must be a finite number >= 0, got {self.weight_decay}")
        if not isinstance(self.prompt, str) or (self.sample_tokens and not self.prompt):
            raise ValueError(f"prompt must be a non-empty str to sample from, got {self.prompt!r}")


def _batches(data: Tensor, batch_size: int, seq_len: int, gen: torch.Generator) -> Tensor:
    """A [batch_size, seq_len + 1] batch of random windows of ``data``."""
    starts = torch.randint(0, data.numel() - seq_len - 1, (batch_size,), generator=gen)
    return torch.stack([data[s: s + seq_len + 1] for s in starts.tolist()])


def _lr_factor(step: int, warmup: int, steps: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0.1."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only; not on norms, biases, A_log and dt_bias."""
    decay, no_decay = [], []
    for p in model.parameters():
        (no_decay if p.dim() < 2 or getattr(p, "_no_weight_decay", False) else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def evaluate(model: GDN2LM, batches: list[Tensor]) -> float:
    """Mean next-byte loss (nats) over fixed validation batches."""
    was_training = model.training
    model.eval()
    loss = sum(model.loss(b).item() for b in batches) / len(batches)
    model.train(was_training)
    return loss


def sample_text(model: GDN2LM, prompt: str, max_new_tokens: int, seed: int = 0, temperature: float = 0.8,
                top_k: int | None = 40) -> str:
    """Continue ``prompt`` byte by byte and decode as UTF-8 (undecodable bytes replaced)."""
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt.encode())], dtype=torch.long, device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    out = model.generate(ids, max_new_tokens, temperature=temperature, top_k=top_k, generator=gen)
    return bytes(out[0].tolist()).decode("utf-8", errors="replace")


def train(
    model_config: GDN2LMConfig | None = None,
    config: TrainConfig | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    device: str | torch.device = "cpu",
) -> tuple[GDN2LM, dict]:
    """Train a fresh :class:`GDN2LM`; returns the model and a summary (losses, timings, sample)."""
    from tqdm.auto import tqdm

    model_config, config = model_config or GDN2LMConfig(), config or TrainConfig()
    torch.manual_seed(config.seed)
    data = corpus_tensor()
    split = int(0.95 * data.numel())
    train_data, val_data = data[:split], data[split:]
    gen = torch.Generator().manual_seed(config.seed)
    val_gen = torch.Generator().manual_seed(config.seed + 1)
    val = [_batches(val_data, config.batch_size, config.seq_len, val_gen).to(device)
           for _ in range(config.eval_batches)]

    model = GDN2LM(model_config).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    log(f"GDN2LM: {n_params / 1e6:.2f}M parameters, {model_config.num_layers} layers "
        f"(sliding-window attention at {list(model_config.swa_layers) or 'none'}), backend "
        f"{model_config.backend!r}; corpus {data.numel() / 1e3:.0f} KB, {torch.get_num_threads()} threads")
    opt = torch.optim.AdamW(_param_groups(model, config.weight_decay), lr=config.lr, betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, config.warmup, config.steps))

    history = [(0, evaluate(model, val))]
    log(f"step {0:5d}  val loss {history[0][1]:.3f}")
    start = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc="train", disable=not progress, dynamic_ncols=True)
    smooth = None
    for step in bar:
        loss = model.loss(_batches(train_data, config.batch_size, config.seq_len, gen).to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        smooth = loss.item() if smooth is None else 0.9 * smooth + 0.1 * loss.item()
        bar.set_postfix(loss=f"{smooth:.3f}", lr=f"{sched.get_last_lr()[0]:.1e}")
        if step % config.eval_every == 0 or step == config.steps:
            history.append((step, evaluate(model, val)))
            msg = f"step {step:5d}  train loss {smooth:.3f}  val loss {history[-1][1]:.3f}"
            (tqdm.write if progress else log)(msg)
    bar.close()
    elapsed = time.perf_counter() - start
    tokens = config.steps * config.batch_size * config.seq_len
    first, last = history[0][1], history[-1][1]
    log(f"val loss {first:.3f} -> {last:.3f} nats/byte ({last / math.log(2):.2f} bits/byte) in {elapsed:.0f} s, "
        f"{tokens / elapsed:.0f} tokens/s")
    sample = sample_text(model, config.prompt, config.sample_tokens, seed=config.seed)
    log("sample:\n" + sample)
    summary = {"history": history, "initial_val_loss": first, "final_val_loss": last, "seconds": elapsed,
               "tokens_per_second": tokens / elapsed, "sample": sample, "params": n_params,
               "train_config": asdict(config), "model_config": model_config.to_dict()}
    return model, summary
