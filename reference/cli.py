"""The ``gdn2`` command line (also ``python -m gdn2``).

    gdn2 check      every available backend's operators against the float64 reference (the tolerance table)
    gdn2 train      a short byte-level LM run on the embedded corpus, then a sample
    gdn2 generate   sample from a checkpoint written by ``gdn2 train --save``
"""

import argparse
import os
import sys
import time

from .course.cli import add_parser as add_course_parser

__all__ = ["main"]


class CLIError(Exception):
    """A mistake on the command line: printed as one line, exit status 2."""


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise CLIError(f"--device: {e}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CLIError(f"--device {device}: no CUDA GPU is visible here (use --device cpu)")


class _Help(argparse.HelpFormatter):
    """Every option's help line shows its default."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if not (default is None or default is False or default is argparse.SUPPRESS or default == []) \
                and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def _positive(kind, zero: bool = False):
    """An argparse type: a positive int or float (or, with ``zero``, a non-negative one)."""
    what = f"{'non-negative' if zero else 'positive'} {kind.__name__}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}") from None
        if not (value >= 0 if zero else value > 0):
            raise argparse.ArgumentTypeError(f"expected a {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


def _check(args: argparse.Namespace) -> int:
    from .backends import BACKENDS
    from .check import format_table, run_check

    unknown = [b for b in args.backend or [] if b not in BACKENDS]
    if unknown:
        raise CLIError(f"--backend: unknown backend(s) {unknown}; registered backends: {', '.join(BACKENDS)}")
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

    from .backends import resolve_backend
    from .model import GDN2LMConfig
    from .train import TrainConfig, train

    if args.save:
        folder = os.path.dirname(os.path.abspath(args.save))
        if not os.path.isdir(folder):
            raise CLIError(f"--save: the folder {folder} does not exist (the model would be lost after training)")
    _check_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        model_config = GDN2LMConfig(hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads,
                                    head_dim=args.head_dim, swa_layers=tuple(args.swa_layers), backend=args.backend)
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, seq_len=args.seq_len, lr=args.lr,
                             seed=args.seed, prompt=args.prompt, sample_tokens=args.sample_tokens)
        resolve_backend(args.backend)
    except (ValueError, TypeError) as e:      # the configs' and the registry's named errors
        raise CLIError(str(e)) from None
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

    if not os.path.isfile(args.checkpoint):
        raise CLIError(f"checkpoint: no file {args.checkpoint} (write one with `gdn2 train --save FILE`)")
    _check_device(args.device)

    from .model import GDN2LM, GDN2LMConfig
    from .train import sample_text

    ckpt = torch.load(args.checkpoint, map_location=args.device, weights_only=True)
    try:
        config = GDN2LMConfig(**{**ckpt["model_config"], "backend": args.backend})
    except (ValueError, TypeError) as e:
        raise CLIError(str(e)) from None
    if not args.prompt:
        raise CLIError("--prompt: give at least one character to continue")
    model = GDN2LM(config).to(args.device)
    model.load_state_dict(ckpt["state_dict"])
    print(sample_text(model, args.prompt, args.tokens, seed=args.seed, temperature=args.temperature,
                      top_k=args.top_k))
    return 0


def _parser() -> argparse.ArgumentParser:
    from .train import TrainConfig

    defaults = TrainConfig()
    fmt = _Help
    p = argparse.ArgumentParser(prog="gdn2", description="Gated DeltaNet-2: check the operators, train a small LM.")
    sub = p.add_subparsers(dest="command", required=True)

    c = sub.add_parser("check", help="compare every available backend with the float64 reference", formatter_class=fmt)
    c.add_argument("--backend", action="append", help="only this backend (repeatable; default: all registered)")
    c.add_argument("--seed", type=int, default=0, help="seed of the random problems")
    c.set_defaults(func=_check)

    t = sub.add_parser("train", help="train a small byte-level LM on the embedded corpus (CPU: ~2 minutes)",
                       formatter_class=fmt)
    t.add_argument("--steps", type=_positive(int), default=defaults.steps, help="optimiser steps")
    t.add_argument("--batch-size", type=_positive(int), default=defaults.batch_size, help="sequences per step")
    t.add_argument("--seq-len", type=_positive(int), default=defaults.seq_len, help="bytes per sequence")
    t.add_argument("--lr", type=_positive(float), default=defaults.lr, help="peak learning rate")
    t.add_argument("--hidden-size", type=_positive(int), default=128, help="model width")
    t.add_argument("--layers", type=_positive(int), default=2, help="blocks")
    t.add_argument("--heads", type=_positive(int), default=2, help="key heads H")
    t.add_argument("--head-dim", type=_positive(int), default=32, help="key head dim K")
    t.add_argument("--swa-layers", type=int, nargs="*", default=[],
                   help="indices of sliding-window attention layers (the paper's hybrid)")
    t.add_argument("--backend", default="auto", help="auto, reference or triton")
    t.add_argument("--device", default="cpu", help="torch device")
    t.add_argument("--threads", type=_positive(int, zero=True), default=0, help="torch CPU threads (0: torch's choice)")
    t.add_argument("--seed", type=int, default=defaults.seed, help="seed of the initialisation and the batches")
    t.add_argument("--prompt", default=defaults.prompt, help="start of the sample printed at the end")
    t.add_argument("--sample-tokens", type=_positive(int, zero=True), default=defaults.sample_tokens,
                   help="bytes to sample")
    t.add_argument("--save", help="write the trained model to this file")
    t.add_argument("--no-progress", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    g = sub.add_parser("generate", help="sample from a model saved by `gdn2 train --save`", formatter_class=fmt)
    g.add_argument("checkpoint", help="a file written by gdn2 train --save")
    g.add_argument("--prompt", default=defaults.prompt, help="text to continue")
    g.add_argument("--tokens", type=_positive(int), default=400, help="bytes to generate")
    g.add_argument("--temperature", type=_positive(float), default=0.8, help="sampling temperature")
    g.add_argument("--top-k", type=_positive(int), default=40, help="sample among the k likeliest bytes")
    g.add_argument("--backend", default="auto", help="auto, reference or triton")
    g.add_argument("--device", default="cpu", help="torch device")
    g.add_argument("--seed", type=int, default=0, help="sampling seed")
    g.set_defaults(func=_generate)

    add_course_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``gdn2`` script; returns the exit status. A mistake in the arguments (an
    unknown backend, a missing GPU or file, a bad model setting) is one line on stderr and status 2."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except CLIError as e:
        parser.exit(2, f"gdn2 {args.command}: error: {e}\n")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
