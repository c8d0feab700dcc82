"""The ``gdn2`` command line (also ``python -m gdn2``).

    gdn2 check      every available backend's operators against the float64 reference (SPEC §7 table)
    gdn2 train      a short byte-level LM run on the embedded corpus, then a sample
    gdn2 generate   sample from a checkpoint written by ``gdn2 train --save``
"""

import argparse
import sys
import time

from .course.cli import add_parser as add_course_parser

__all__ = ["main"]


def _check(args: argparse.Namespace) -> int:
    from .check import format_table, run_check

    start = time.perf_counter()
    rows, skipped = run_check(args.backend or None, seed=args.seed)
    print(format_table(rows, skipped))
    failed = [r for r in rows if not r.ok]
    print(f"{len(rows) - len(failed)} of {len(rows)} checks passed in {time.perf_counter() - start:.1f} s"
          + (f"; {len(failed)} FAILED" if failed else ""))
    if not rows:
        print("no backend could run")
        return 1
    return 1 if failed else 0


def _train(args: argparse.Namespace) -> int:
    import torch

    from .model import GDN2LMConfig
    from .train import TrainConfig, train

    if args.threads:
        torch.set_num_threads(args.threads)
    model_config = GDN2LMConfig(hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads,
                                head_dim=args.head_dim, swa_layers=tuple(args.swa_layers), backend=args.backend)
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                         seed=args.seed, prompt=args.prompt, sample_tokens=args.sample_tokens)
    model, summary = train(model_config, config, progress=not args.no_progress, device=args.device)
    if args.save:
        torch.save({"model_config": model_config.to_dict(), "state_dict": model.state_dict()}, args.save)
        print(f"saved {args.save}")
    if not summary["final_val_loss"] < summary["initial_val_loss"]:
        print("the validation loss did not drop")
        return 1
    return 0


def _generate(args: argparse.Namespace) -> int:
    import torch

    from .model import GDN2LM, GDN2LMConfig
    from .train import sample_text

    ckpt = torch.load(args.checkpoint, map_location=args.device, weights_only=True)
    config = GDN2LMConfig(**{**ckpt["model_config"], "backend": args.backend})
    model = GDN2LM(config).to(args.device)
    model.load_state_dict(ckpt["state_dict"])
    print(sample_text(model, args.prompt, args.tokens, seed=args.seed, temperature=args.temperature,
                      top_k=args.top_k))
    return 0


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gdn2", description="Gated DeltaNet-2: check the operators, train a small LM.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="compare every available backend with the float64 reference")
    c.add_argument("--backend", action="append", help="only this backend (repeatable; default: all registered)")
    c.add_argument("--seed", type=int, default=0)
    c.set_defaults(func=_check)

    t = sub.add_parser("train", help="train a small byte-level LM on the embedded corpus (CPU: ~2 minutes)")
    t.add_argument("--steps", type=int, default=200)
    t.add_argument("--batch-size", type=int, default=16)
    t.add_argument("--seq-len", type=int, default=64)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--hidden-size", type=int, default=128)
    t.add_argument("--layers", type=int, default=2)
    t.add_argument("--heads", type=int, default=2)
    t.add_argument("--head-dim", type=int, default=32)
    t.add_argument("--swa-layers", type=int, nargs="*", default=[],
                   help="indices of sliding-window attention layers (the paper's hybrid)")
    t.add_argument("--backend", default="auto", help="auto, reference or triton")
    t.add_argument("--device", default="cpu")
    t.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--prompt", default="Anne Elliot")
    t.add_argument("--sample-tokens", type=int, default=240)
    t.add_argument("--save", help="write the trained model to this file")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="sample from a model saved by `gdn2 train --save`")
    g.add_argument("checkpoint")
    g.add_argument("--prompt", default="Anne Elliot")
    g.add_argument("--tokens", type=int, default=400)
    g.add_argument("--temperature", type=float, default=0.8)
    g.add_argument("--top-k", type=int, default=40)
    g.add_argument("--backend", default="auto")
    g.add_argument("--device", default="cpu")
    g.add_argument("--seed", type=int, default=0)
    g.set_defaults(func=_generate)

    add_course_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gdn2`` script; returns the exit status."""
    args = _parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
