"""The retrieval grid: train every model on every cell, several seeds, a learning-rate sweep; write the CSVs
and the plots under ``results/``.

    python examples/evaluation/run.py --config examples/evaluation/configs/cpu.json [--workers N] [--resume]
    python examples/evaluation/run.py --config ... --from-runs     # tables and plots again, no training

A config (JSON, ``configs/``) names the models (mixers), their shared sizes, the grid of task cells
(each sweep varies one knob: number of pairs, context length or vocabulary size), the seeds, the
learning rates of the sweep and how the rate is chosen, and the training budget. Every run is
seeded: the model's initialisation by its seed, the training stream and the validation and test
sets by (cell, seed, split), the same for every model, so that two models with the same seed see
the same data and are compared pairwise. Runs are independent processes' work (``workers``, each
with ``threads_per_worker`` threads) and, on the CPU, deterministic: the same config on the same
machine gives the same CSVs, except their ``seconds`` columns.

Protocol:

- training: AdamW on the cross-entropy of the query positions only, linear warm-up then cosine
  decay to zero, gradient clipping; fresh sequences every step;
- learning rate: the sweep ``tuning.lrs`` is the same for every model. ``tuning.select = "cell"``
  trains every rate with every seed on every cell and keeps, per model and cell, the rate with the
  best mean validation accuracy over the seeds; ``"model"`` does that once per model on the cell
  ``tuning.cell`` and trains the other cells at the chosen rate (the budget of the CPU default).
  Ties go to the lower mean validation loss;
- reported: test accuracy (held-out sequences) at the chosen rate, the mean over seeds and a
  two-sided 95-percent Student-t interval, mean ± t(0.975, n − 1)·s/√n (s the sample standard
  deviation over the n seeds); for GDN2 against each other model the same interval of the paired
  per-seed differences.

Outputs, for a config named NAME: ``NAME-runs.csv`` (every run), ``NAME-grid.csv`` (the grid: one row
per model and cell), ``NAME-contrasts.csv`` (GDN2 minus each other model, per cell), ``NAME-tally.csv`` (how many of
those differences go each way and how many are resolved), ``NAME-models.csv``
(parameters, SwiGLU width, state per layer), ``NAME-meta.csv`` (the run's wall time and machine) and
``NAME-SWEEP.svg`` (accuracy against the swept knob, one line per model).
"""

import argparse
import contextlib
import csv
import hashlib
import json
import math
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
import zlib
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

from models import (  # noqa: E402
    LINEAR_MIXERS,
    MIXERS,
    RetrievalLM,
    build_model,
    matched_mlp_width,
    param_count,
    state_floats,
    swa_window,
)
from svg import error_bar_plot  # noqa: E402
from tasks import IGNORE, TaskSpec, make_batch, mqar_layout, niah_layout  # noqa: E402

__all__ = ["load_config", "cells", "run_job", "main", "t_interval", "cell_name"]

RESULTS = HERE / "results"
KNOBS = ("num_pairs", "seq_len", "vocab_size")
LABELS = {"gdn2": "GDN2", "b_only": "GDN2, b only (w = 1)", "w_only": "GDN2, w only (b = β·1)",
          "kda": "KDA (b = w = β·1)", "gdn": "Gated DeltaNet", "swa": "sliding window", "attention": "full attention"}
# t(0.975, df) for df = 1..30: the two-sided 95-percent Student-t quantile; beyond 30, the normal's
T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042]


# ---- config and grid --------------------------------------------------------------------------------------
def load_config(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as f:
        config = json.load(f)
    unknown = set(config["mixers"]) - set(MIXERS)
    if unknown:
        raise ValueError(f"unknown mixers {sorted(unknown)}; known: {MIXERS}")
    if len(config["seeds"]) < 3:
        raise ValueError("the protocol needs at least 3 seeds per cell")
    if config["tuning"]["select"] not in ("cell", "model"):
        raise ValueError("tuning.select must be 'cell' or 'model'")
    if config["tuning"]["select"] == "model" and config["tuning"]["cell"] not in [cell_name(c) for c in cells(config)]:
        raise ValueError(f"tuning.cell {config['tuning']['cell']!r} is not a cell of the grid")
    return config


def cell_name(spec: TaskSpec) -> str:
    q = f"-Q{spec.num_queries}" if spec.task == "niah" else ""
    return f"{spec.task}-P{spec.num_pairs}-T{spec.seq_len}-V{spec.vocab_size}{q}"


def sweep_axis(sweep: dict) -> str:
    """The one knob of a grid entry that is a list of values."""
    lists = [k for k in KNOBS if isinstance(sweep[k], list)]
    if len(lists) != 1:
        raise ValueError(f"grid entry {sweep.get('plot')!r} must vary exactly one of {KNOBS}, varies {lists}")
    return lists[0]


def sweep_cells(sweep: dict) -> list[TaskSpec]:
    axis = sweep_axis(sweep)
    return [TaskSpec(sweep["task"], **{k: (v if k == axis else sweep[k]) for k in KNOBS},
                     num_queries=sweep.get("num_queries", 0)) for v in sweep[axis]]


def cells(config: dict) -> list[TaskSpec]:
    """Every distinct cell of the grid, in the order of the config."""
    return list(dict.fromkeys(s for sweep in config["grid"] for s in sweep_cells(sweep)))


def fingerprint(config: dict) -> str:
    """What a run's result depends on besides its own mixer, cell, seed and rate."""
    keys = ("model", "train", "eval", "device", "backend", "autocast", "threads_per_worker")
    text = json.dumps({k: config.get(k) for k in keys}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _seed(*parts: object) -> int:
    return zlib.crc32("|".join(map(str, parts)).encode())


# ---- one run --------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def _torch_settings(threads: int, deterministic: bool):
    prev_threads, prev_det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=torch.cuda.is_available())
    try:
        yield
    finally:
        torch.set_num_threads(prev_threads)
        torch.use_deterministic_algorithms(prev_det)


def _lr_factor(step: int, steps: int, warmup: int) -> float:
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))


@torch.no_grad()
def evaluate(model, inputs, targets, batch: int, device, autocast) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) over the query positions of the given sequences."""
    model.eval()
    correct, total, loss = 0, 0, 0.0
    for i in range(0, inputs.shape[0], batch):
        x, y = inputs[i:i + batch].to(device), targets[i:i + batch].to(device)
        with autocast:
            logits = model(x).float()
        mask = y != IGNORE
        correct += int((logits.argmax(-1)[mask] == y[mask]).sum())
        total += int(mask.sum())
        loss += float(F.cross_entropy(logits[mask], y[mask], reduction="sum"))
    model.train()
    return correct / total, loss / total


def run_job(config: dict, mixer: str, spec: TaskSpec, seed: int, lr: float, progress=None) -> dict:
    """Train one model on one cell with one seed and one learning rate; the row of the runs CSV."""
    tr, ev, name = config["train"], config["eval"], cell_name(spec)
    device = torch.device(config.get("device", "cpu"))
    amp = config.get("autocast")
    autocast = (torch.autocast(device.type, dtype=getattr(torch, amp)) if amp
                else contextlib.nullcontext())
    with _torch_settings(config.get("threads_per_worker", 1), config.get("deterministic", True)):
        start = time.perf_counter()
        torch.manual_seed(_seed("init", seed))
        model = build_model(mixer, config["model"], spec.vocab_size, spec.seq_len,
                            backend=config.get("backend", "auto")).to(device)
        decay = [p for p in model.parameters() if p.dim() >= 2 and not getattr(p, "_no_weight_decay", False)]
        rest = [p for p in model.parameters() if p.dim() < 2 or getattr(p, "_no_weight_decay", False)]
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": tr["weight_decay"]},
                                 {"params": rest, "weight_decay": 0.0}], lr=lr, betas=tuple(tr["betas"]))
        steps, warmup = tr["steps"], max(1, round(tr["warmup"] * tr["steps"]))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(s, steps, warmup))
        gen = torch.Generator().manual_seed(_seed(name, seed, "train"))
        val = make_batch(spec, ev["val_sequences"], torch.Generator().manual_seed(_seed(name, seed, "val")))
        test = make_batch(spec, ev["test_sequences"], torch.Generator().manual_seed(_seed(name, seed, "test")))
        losses = []
        for _ in range(steps):
            x, y = (t.to(device) for t in make_batch(spec, tr["batch_size"], gen))
            with autocast:
                logits = model(x)
            loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tr["grad_clip"])
            opt.step()
            sched.step()
            losses.append(loss.detach())
            if progress is not None:
                progress()
        val_acc, val_loss = evaluate(model, *val, ev["batch"], device, autocast)
        test_acc, test_loss = evaluate(model, *test, ev["batch"], device, autocast)
        tail = torch.stack(losses[-max(1, steps // 10):]).float().cpu().tolist()
        return {
            "config": config["name"], "fingerprint": fingerprint(config), "mixer": mixer, "cell": name,
            "task": spec.task, "num_pairs": spec.num_pairs, "seq_len": spec.seq_len, "vocab_size": spec.vocab_size,
            "num_queries": spec.queries, "seed": seed, "lr": lr, "steps": steps, "batch_size": tr["batch_size"],
            "params": param_count(model), "mlp_inner": model.mlp_inner,
            "state_floats": state_floats(mixer, config["model"], spec.seq_len),
            "train_loss": round(statistics.fmean(tail), 6), "val_loss": round(val_loss, 6),
            "val_acc": round(val_acc, 6), "test_loss": round(test_loss, 6), "test_acc": round(test_acc, 6),
            "seconds": round(time.perf_counter() - start, 2),
        }


def _init_worker(threads: int, counter, device: str) -> None:
    """A pool process: its thread count and, on GPUs, one device per process in turn."""
    torch.set_num_threads(threads)
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")   # cuBLAS's deterministic mode
        with counter.get_lock():
            index, counter.value = counter.value, counter.value + 1
        torch.cuda.set_device(index % torch.cuda.device_count())


def _work(args: tuple) -> dict:
    return run_job(*args)


# ---- statistics ---------------------------------------------------------------------------------------------
def t_interval(values: list[float]) -> tuple[float, float, float, float]:
    """(mean, low, high, sample standard deviation): the two-sided 95-percent Student-t interval of the mean."""
    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, float("nan"), float("nan"), float("nan")
    sd = statistics.stdev(values)
    half = (T975[n - 2] if n - 1 <= len(T975) else 1.96) * sd / math.sqrt(n)
    return mean, mean - half, mean + half, sd


def choose_lr(rows: list[dict]) -> float:
    """The rate with the best mean validation accuracy over the seeds (ties: lower mean validation loss)."""
    by_lr: dict[float, list[dict]] = {}
    for r in rows:
        by_lr.setdefault(float(r["lr"]), []).append(r)
    return max(by_lr, key=lambda lr: (statistics.fmean(float(r["val_acc"]) for r in by_lr[lr]),
                                      -statistics.fmean(float(r["val_loss"]) for r in by_lr[lr]), -lr))


def summarise(config: dict, runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """(grid rows, contrast rows) from the runs."""
    select, chosen = config["tuning"]["select"], {}
    for mixer in config["mixers"]:
        for spec in cells(config):
            name = cell_name(spec)
            pool_cell = config["tuning"]["cell"] if select == "model" else name
            chosen[mixer, name] = choose_lr([r for r in runs if r["mixer"] == mixer and r["cell"] == pool_cell])
    grid, at = [], {}
    for spec in cells(config):
        name = cell_name(spec)
        for mixer in config["mixers"]:
            lr = chosen[mixer, name]
            rows = sorted((r for r in runs if r["mixer"] == mixer and r["cell"] == name and float(r["lr"]) == lr),
                          key=lambda r: int(r["seed"]))
            at[mixer, name] = {int(r["seed"]): float(r["test_acc"]) for r in rows}
            mean, lo, hi, sd = t_interval([float(r["test_acc"]) for r in rows])
            grid.append({
                "config": config["name"], "mixer": mixer, "label": LABELS[mixer], "cell": name, "task": spec.task,
                "num_pairs": spec.num_pairs, "seq_len": spec.seq_len, "vocab_size": spec.vocab_size,
                "num_queries": spec.queries, "lr": lr, "lr_select": select, "seeds": len(rows),
                "test_acc": round(mean, 4), "ci_lo": round(lo, 4), "ci_hi": round(hi, 4),
                "ci_half": round((hi - lo) / 2, 4), "sd": round(sd, 4),
                "min_acc": round(min(float(r["test_acc"]) for r in rows), 4),
                "max_acc": round(max(float(r["test_acc"]) for r in rows), 4),
                "val_acc": round(statistics.fmean(float(r["val_acc"]) for r in rows), 4),
                "chance": round(1 / _values(spec), 4), "guess_in_context": round(1 / spec.num_pairs, 4),
                "params": rows[0]["params"],
                "state_floats": rows[0]["state_floats"], "steps": rows[0]["steps"],
            })
    contrasts = []
    for spec in cells(config):
        name = cell_name(spec)
        if "gdn2" not in config["mixers"]:
            break
        for other in config["mixers"]:
            if other == "gdn2":
                continue
            seeds = sorted(set(at["gdn2", name]) & set(at[other, name]))
            diffs = [at["gdn2", name][s] - at[other, name][s] for s in seeds]
            mean, lo, hi, _ = t_interval(diffs)
            verdict = "GDN2 higher" if lo > 0 else "GDN2 lower" if hi < 0 else "not resolved"
            contrasts.append({"config": config["name"], "cell": name, "task": spec.task, "num_pairs": spec.num_pairs,
                              "seq_len": spec.seq_len, "vocab_size": spec.vocab_size, "other": other,
                              "diff": round(mean, 4), "ci_lo": round(lo, 4), "ci_hi": round(hi, 4),
                              "ci_half": round((hi - lo) / 2, 4), "seeds": len(seeds), "verdict": verdict})
    return grid, contrasts


def tally(config: dict, contrasts: list[dict]) -> list[dict]:
    """Per other model (and over all): on how many cells GDN2's mean is above and below, and how many of
    those differences are resolved (their interval excludes zero)."""
    out = []
    for other in [*dict.fromkeys(c["other"] for c in contrasts), "all"]:
        rows = [c for c in contrasts if other in ("all", c["other"])]
        out.append({"config": config["name"], "other": other, "comparisons": len(rows),
                    "above": sum(float(c["diff"]) > 0 for c in rows), "below": sum(float(c["diff"]) < 0 for c in rows),
                    "resolved_higher": sum(c["verdict"] == "GDN2 higher" for c in rows),
                    "resolved_lower": sum(c["verdict"] == "GDN2 lower" for c in rows)})
    return out


def _values(spec: TaskSpec) -> int:
    """How many value tokens a query's answer is drawn from (1 / chance accuracy of a blind guess)."""
    return len(mqar_layout(spec)[1] if spec.task == "mqar" else niah_layout(spec)[1])


# ---- output ---------------------------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def model_rows(config: dict) -> list[dict]:
    """Parameters, SwiGLU width and decoding state per layer of every model, at every vocabulary of the grid."""
    out, m = [], config["model"]
    vocabs = sorted({s.vocab_size for s in cells(config)})
    max_len = max(s.seq_len for s in cells(config))
    for mixer in config["mixers"]:
        for vocab in vocabs:
            with torch.device("meta"):
                inner = matched_mlp_width(mixer, m, vocab, max_len)
                params = param_count(RetrievalLM(mixer, m, vocab, max_len, inner, backend="reference"))
            window = swa_window(m) if mixer == "swa" else ("context" if mixer == "attention" else "")
            out.append({"config": config["name"], "mixer": mixer, "label": LABELS[mixer], "vocab_size": vocab,
                        "params": params, "mlp_inner": inner, "window": window,
                        "state_floats_per_layer": state_floats(mixer, m, max_len) if mixer != "attention" else
                        f"{state_floats(mixer, m, 1)} per token",
                        "linear_state": mixer in LINEAR_MIXERS})
    return out


def plots(config: dict, grid: list[dict]) -> dict[str, str]:
    out = {}
    names = {"num_pairs": "key-value pairs", "seq_len": "context length (tokens)", "vocab_size": "vocabulary size"}
    for sweep in config["grid"]:
        axis = sweep_axis(sweep)
        specs = sweep_cells(sweep)
        series = {}
        for mixer in config["mixers"]:
            pts = []
            for spec in specs:
                row = next(r for r in grid if r["mixer"] == mixer and r["cell"] == cell_name(spec))
                pts.append((row["test_acc"], row["ci_lo"], row["ci_hi"]))
            series[mixer] = pts
        chances = {round(1 / _values(s), 6) for s in specs}
        title = f"{'MQAR' if sweep['task'] == 'mqar' else 'Multi-key needle'}: test accuracy against {names[axis]}"
        subtitle = (f"config {config['name']}; mean and 95% t-interval over {len(config['seeds'])} seeds; "
                    "dotted: chance")
        out[f"{config['name']}-{sweep['plot']}.svg"] = error_bar_plot(
            title, names[axis], "accuracy on the query positions", [float(getattr(s, axis)) for s in specs], series,
            labels=LABELS, chance=chances.pop() if len(chances) == 1 else None, subtitle=subtitle)
    return out


# ---- the whole grid -------------------------------------------------------------------------------------------
def _key(r: dict) -> tuple:
    return (r["mixer"], r["cell"], int(r["seed"]), float(r["lr"]))


def _cost(config: dict, job: tuple) -> float:
    """A rough relative cost to start the longest runs first (the linear mixers' reference op dominates)."""
    mixer, spec = job[1], job[2]
    return spec.seq_len * (6.0 if mixer in LINEAR_MIXERS else 1.0)


def _run_all(config: dict, jobs: list[tuple], done: dict, workers: int, bar) -> list[dict]:
    todo = sorted((j for j in jobs if (j[1], cell_name(j[2]), j[3], j[4]) not in done),
                  key=lambda j: -_cost(config, j))
    bar.update(config["train"]["steps"] * (len(jobs) - len(todo)))
    rows = [done[j[1], cell_name(j[2]), j[3], j[4]] for j in jobs if (j[1], cell_name(j[2]), j[3], j[4]) in done]
    if workers <= 1:
        for job in todo:
            rows.append(run_job(*job, progress=lambda: bar.update(1)))
        return rows
    ctx = mp.get_context("spawn")
    init = (config.get("threads_per_worker", 1), ctx.Value("i", 0), config.get("device", "cpu"))
    with ctx.Pool(workers, initializer=_init_worker, initargs=init) as pool:
        for row in pool.imap_unordered(_work, todo):
            bar.update(config["train"]["steps"])
            rows.append(row)
    return rows


def _write_tables(config: dict, out: Path, runs: list[dict]) -> list[dict]:
    """The grid, the contrasts, the models and the plots of the runs; returns the grid."""
    name = config["name"]
    grid, contrasts = summarise(config, runs)
    write_csv(out / f"{name}-grid.csv", grid)
    if contrasts:
        write_csv(out / f"{name}-contrasts.csv", contrasts)
        write_csv(out / f"{name}-tally.csv", tally(config, contrasts))
    write_csv(out / f"{name}-models.csv", model_rows(config))
    for fname, svg in plots(config, grid).items():
        (out / fname).write_text(svg, encoding="utf-8")
    return grid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="a JSON file of configs/")
    parser.add_argument("--workers", type=int, default=None, help="processes (default: the config's)")
    parser.add_argument("--out", default=str(RESULTS), help="folder of the CSVs and plots")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the rows of an existing NAME-runs.csv made with the same settings")
    parser.add_argument("--from-runs", action="store_true",
                        help="train nothing: rewrite the tables and plots from an existing NAME-runs.csv")
    args = parser.parse_args(argv)
    from tqdm.auto import tqdm

    config = load_config(args.config)
    out, name = Path(args.out), config["name"]
    workers = args.workers or config.get("workers", 1)
    if config.get("device", "cpu") == "cuda" and not torch.cuda.is_available():
        parser.error(f"config {name!r} needs a CUDA GPU")
    fp = fingerprint(config)
    if args.from_runs:
        runs = [r for r in read_csv(out / f"{name}-runs.csv") if r.get("fingerprint") == fp]
        if not runs:
            parser.error(f"no runs of these settings in {out / (name + '-runs.csv')}")
        _write_tables(config, out, runs)
        return 0
    done = {_key(r): r for r in read_csv(out / f"{name}-runs.csv") if r.get("fingerprint") == fp} if args.resume else {}
    mixers, seeds, lrs, tune = config["mixers"], config["seeds"], config["tuning"]["lrs"], config["tuning"]
    specs = cells(config)
    steps = config["train"]["steps"]
    if tune["select"] == "cell":
        first = [(config, m, s, seed, lr) for m in mixers for s in specs for seed in seeds for lr in lrs]
        total = len(first)
    else:
        tune_spec = next(s for s in specs if cell_name(s) == tune["cell"])
        first = [(config, m, tune_spec, seed, lr) for m in mixers for seed in seeds for lr in lrs]
        total = len(first) + len(mixers) * (len(specs) - 1) * len(seeds)
    print(f"config {name}: {len(mixers)} models × {len(specs)} cells × {len(seeds)} seeds, learning rates {lrs} "
          f"chosen per {tune['select']}; {total} runs of {steps} steps on {config.get('device', 'cpu')}, "
          f"{workers} worker(s) × {config.get('threads_per_worker', 1)} thread(s)")
    start = time.perf_counter()
    with tqdm(total=total * steps, unit="step", dynamic_ncols=True, smoothing=0.05) as bar:
        runs = _run_all(config, first, done, workers, bar)
        if tune["select"] == "model":
            rates = {m: choose_lr([r for r in runs if r["mixer"] == m]) for m in mixers}
            bar.write("chosen learning rates: " + ", ".join(f"{m} {lr:g}" for m, lr in rates.items()))
            second = [(config, m, s, seed, rates[m]) for m in mixers for s in specs if s != tune_spec for seed in seeds]
            runs += _run_all(config, second, done, workers, bar)
    wall = time.perf_counter() - start
    order = {m: i for i, m in enumerate(mixers)}, {cell_name(s): i for i, s in enumerate(specs)}
    runs.sort(key=lambda r: (order[0][r["mixer"]], order[1][r["cell"]], int(r["seed"]), float(r["lr"])))
    write_csv(out / f"{name}-runs.csv", runs)
    write_csv(out / f"{name}-meta.csv", [{
        "config": name, "runs": len(runs), "steps_per_run": steps, "workers": workers,
        "threads_per_worker": config.get("threads_per_worker", 1), "wall_minutes": round(wall / 60, 2),
        "run_minutes": round(sum(float(r["seconds"]) for r in runs) / 60, 2), "device": config.get("device", "cpu"),
        "machine": platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "python": platform.python_version(), "resumed_runs": len(done),
    }])
    grid = _write_tables(config, out, runs)
    print(f"wrote {name}-*.csv and {len(config['grid'])} plots to {out} in {wall / 60:.1f} min")
    for r in grid:
        print(f"  {r['cell']:<22} {r['mixer']:<10} lr {r['lr']:<7g} acc {r['test_acc']:.3f} "
              f"[{r['ci_lo']:.3f}, {r['ci_hi']:.3f}]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
