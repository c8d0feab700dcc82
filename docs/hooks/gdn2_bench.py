"""Build-time numbers of the performance page: roofline floors, benchmark tables and SVG plots.

No plotting library: the charts are small hand-written SVG (log-scale grouped bars), so the build
needs nothing beyond MkDocs. Every number on the page comes from here or from the committed CSVs.
"""

import csv
import html
import math
from pathlib import Path

# The card of SPEC §8 (H100 80GB): device copy bandwidth and bf16 matrix-product rate.
HBM_BYTES_PER_S = 3.0e12
MATMUL_FLOP_PER_S = 700e12
# The configuration of SPEC §8: bfloat16 q, k, v, b, w, o; float32 g; H = HV = 16, K = V = 128, C = 64.
H, K, V, C = 16, 128, 128, 64
PEER_MS = {  # SPEC §8: flash-linear-attention 0.6.0 chunk_gdn2 and SDPA (causal), median ms
    (8, 2048): (1.26, 6.99, 0.28, 1.34),
    (4, 4096): (1.31, 7.09, 0.52, 2.23),
    (2, 8192): (1.44, 7.47, 0.98, 3.99),
    (1, 16384): (1.71, 8.31, 1.93, 7.23),
    (1, 65536): (6.63, 32.65, 27.8, 116.1),
}


def chunk_macs_per_token(K: int = K, V: int = V, C: int = C) -> float:
    """Multiply-adds per token and head of the chunkwise forward, dense tiles (docs: chunking.md).

    Per chunk: T, A_qk and Y = A Ē are C×C×K products, U = A Z and A_qk R are C×C×V, the forward
    substitution for A is C³/6, and Y S_0, Q_γ S_0 and K_tailᵀ R are C×K×V.
    """
    return 3 * K * V + 3 * C * K + 2 * C * V + C * C / 6


def recurrent_macs_per_token(K: int = K, V: int = V) -> float:
    """Multiply-adds per token and head of the recurrence: decay, read, write, output."""
    return 4 * K * V


def fwd_bytes_per_token(K: int = K, V: int = V) -> int:
    """Compulsory traffic of the forward: q, k, b (bf16), g (fp32), v, w (bf16) read, o (bf16) written."""
    return 3 * 2 * K + 4 * K + 3 * 2 * V


def fwdbwd_bytes_per_token(K: int = K, V: int = V) -> int:
    """Forward traffic, then the backward reads the inputs and dO and writes dq, dk, dg, db, dv, dw."""
    grads = 2 * 2 * K + 4 * K + 2 * K + 2 * 2 * V
    return 2 * fwd_bytes_per_token(K, V) + grads


def floors_markdown() -> str:
    """The floors of the SPEC §8 shapes, next to the peer's measured times: forward, then forward+backward."""
    tables = []
    for title, bytes_per_token, flop_factor, col in (("forward", fwd_bytes_per_token(), 1, 0),
                                                      ("forward+backward", fwdbwd_bytes_per_token(), 3, 1)):
        rows = [f"| B×T | {title}: memory floor | compute floor | peer (SPEC §8) | peer / floor |",
                "|---|---|---|---|---|"]
        for (B, T), peer in PEER_MS.items():
            tokens = B * T * H
            mem = tokens * bytes_per_token / HBM_BYTES_PER_S * 1e3
            cmp = flop_factor * tokens * 2 * chunk_macs_per_token() / MATMUL_FLOP_PER_S * 1e3
            rows.append(f"| {B}×{T} | {mem:.3f} ms | {cmp:.3f} ms | {peer[col]:.2f} ms | "
                        f"{peer[col] / max(mem, cmp):.1f}× |")
        tables.append("\n".join(rows))
    per_tok = (
        f"Per token and head: {fwd_bytes_per_token()} bytes forward, {fwdbwd_bytes_per_token()} bytes "
        f"forward+backward; {chunk_macs_per_token():,.0f} multiply-adds forward in the chunk form "
        f"(the recurrence: {recurrent_macs_per_token():,.0f}), three times that forward+backward. "
        f"Card: {HBM_BYTES_PER_S / 1e12:.1f} TB/s, {MATMUL_FLOP_PER_S / 1e12:.0f} TFLOP/s (SPEC §8); "
        f"H = {H}, K = V = {K}, C = {C}, bfloat16."
    )
    return "\n\n".join(tables) + "\n\n" + per_tok + "\n"


def costs_markdown() -> str:
    """Work, sequential depth and memory per token of the three forms (docs: chunking.md)."""
    T = 65536
    rec, chk = recurrent_macs_per_token(), chunk_macs_per_token()
    masked = T * (K + V) / 2  # mean over a sequence of length T of r·(K + V) for row r
    rows = [
        f"| per token and head | recurrence | masked-attention form (no erase only) | chunkwise, C = {C} |",
        "|---|---|---|---|",
        f"| multiply-adds | $4KV$ = {rec:,.0f} | $\\tfrac{{T}}{{2}}(K+V)$ = {masked:,.0f} at T = {T:,} "
        f"| $3KV+3CK+2CV+C^2/6$ = {chk:,.0f} |",
        "| kind of work | matrix-vector | matrix-matrix | matrix-matrix (C×C, C×K, C×V tiles) |",
        "| sequential steps per sequence | T | 1 | T / C |",
        f"| state traffic (float32, read + write) | $8KV$ = {8 * K * V:,} bytes | none "
        f"| $8KV/C$ = {8 * K * V // C:,} bytes |",
        f"| kept for the backward (floats) | every state: $KV$ = {K * V:,} | the T×T×K decays: grows with T "
        f"| one state per chunk: $KV/C$ = {K * V // C:,} |",
    ]
    return "\n".join(rows) + f"\n\nWith K = V = {K}; multiply-adds count dense tiles.\n"


def decode_floor_us(batch: int) -> float:
    """Read and write every float32 state once per step."""
    return 2 * batch * H * K * V * 4 / HBM_BYTES_PER_S * 1e6


PEER_DECODE_US = {1: 102.0, 256: 197.0}  # SPEC §8: flash-linear-attention fused_recurrent_gdn2, per step


def decode_markdown() -> str:
    """Memory per sequence and per step: the recurrent state against an attention KV cache."""
    state = H * K * V * 4                      # float32 state of one sequence, all heads
    kv_per_token = 2 * H * K * 2               # bfloat16 keys and values of one token, all heads
    rows = [
        "| context length | GDN-2 state (fixed) | attention KV cache | cache / state |",
        "|---|---|---|---|",
    ]
    for T in (128, 2048, 16384, 65536, 524288):
        kv = T * kv_per_token
        rows.append(f"| {T:,} | {state / 2**20:g} MiB | {kv / 2**20:g} MiB | {kv / state:g}× |")
    floor = [
        "| batch | states read + written per step | memory floor | peer (SPEC §8) | peer / floor |",
        "|---|---|---|---|---|",
    ]
    for B, peer in PEER_DECODE_US.items():
        f = decode_floor_us(B)
        floor.append(f"| {B} | {2 * B * state / 2**20:g} MiB | {f:.2f} µs | {peer:g} µs | {peer / f:.1f}× |")
    note = (f"H = {H} heads, K = V = {K}: the state is {state / 2**20:g} MiB per sequence and layer; an attention "
            f"layer with the same heads keeps {kv_per_token // 1024} KiB per token, so the two are equal at "
            f"{state // kv_per_token} tokens. Card: {HBM_BYTES_PER_S / 1e12:.1f} TB/s.")
    return "\n".join(rows) + "\n\n" + "\n".join(floor) + "\n\n" + note + "\n"


# ---- committed benchmark results ----------------------------------------------------------------
def load_results(folder: Path) -> dict[str, list[dict[str, str]]]:
    """name -> rows of every benchmarks/results/*.csv (empty when there is none yet)."""
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if any(v.strip() for v in r.values() if v)]
        if rows:
            out[path.stem] = rows
    return out


def _number(x: str | None) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _table(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(html.escape((r.get(c) or "").strip()) for c in cols) + " |")
    return "\n".join(lines)


_BENCH_COLUMNS = {"mode", "shape", "impl", "ms"}   # the schema of benchmarks/bench.py
_IMPL_NAMES = {"ours": "gdn2 (Triton)", "peer": "flash-linear-attention", "sdpa": "SDPA (causal softmax)"}


def _is_bench(rows: list[dict[str, str]]) -> bool:
    return _BENCH_COLUMNS <= set(rows[0])


def _modes(rows: list[dict[str, str]]) -> list[str]:
    return list(dict.fromkeys(r["mode"] for r in rows))


def _mode_rows(rows, mode):
    return [r for r in rows if r["mode"] == mode and r["shape"] != "launch" and _number(r["ms"]) is not None]


def _fmt(x: float | None, unit: str = "") -> str:
    if x is None:
        return ""
    return f"{x:.3g}{unit}" if x < 100 else f"{x:,.0f}{unit}"


_METRICS = (("ms", "ms"), ("device_ms", "device ms"), ("peak_mib", "peak MiB"))


def _bench_table(mrows: list[dict[str, str]]) -> str:
    """One row per (shape, implementation): its numbers, then its time against the peer, SDPA and the floor."""
    t = {(r["shape"], r["impl"]): _number(r["ms"]) for r in mrows}
    metrics = [(c, label) for c, label in _METRICS if any(_number(r.get(c)) is not None for r in mrows)]
    floors = {r["shape"]: [x for x in (_number(r.get("mem_floor_ms")), _number(r.get("flop_floor_ms"))) if x]
              for r in mrows}
    has_floor = any(floors.values())
    refs = [name for name in ("peer", "sdpa") if any(r["impl"] == name for r in mrows)]
    cols = ["shape", "implementation"] + [label for _, label in metrics]
    cols += ["memory floor ms"] if has_floor else []
    cols += [f"{ref} / this" for ref in refs] + (["this / floor"] if has_floor else [])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in mrows:
        sh, ms = r["shape"], _number(r["ms"])
        cells = [sh, _IMPL_NAMES.get(r["impl"], r["impl"])] + [_fmt(_number(r.get(c))) for c, _ in metrics]
        if has_floor:
            cells.append(_fmt(_number(r.get("mem_floor_ms"))))
        for ref in refs:
            tr = t.get((sh, ref))
            cells.append(f"{tr / ms:.2f}×" if tr and ms and r["impl"] != ref else "")
        if has_floor:
            cells.append(f"{ms / max(floors[sh]):.1f}×" if ms and floors[sh] else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _curves(rows: list[dict[str, str]]) -> tuple[list[float], dict[str, list[float | None]]] | None:
    """A table with a "step" column: its numeric columns as curves over the steps (e.g. loss curves)."""
    if "step" not in rows[0]:
        return None
    steps = [_number(r["step"]) for r in rows]
    names = [c for c in rows[0] if c not in ("step", "card", "mode")
             and all(_number(r[c]) is not None for r in rows)]
    if not names or any(x is None for x in steps):
        return None
    return steps, {n: [_number(r[n]) for r in rows] for n in names}  # type: ignore[misc]


def _curves_table(steps, curves) -> str:
    """The curves at a handful of steps (first, every fifth of the run, last)."""
    n = len(steps)
    picks = sorted({0, n - 1, *(round(i * (n - 1) / 5) for i in range(1, 5))})
    lines = ["| step | " + " | ".join(curves) + " |", "|" + "---|" * (len(curves) + 1)]
    for i in picks:
        lines.append(f"| {steps[i]:g} | " + " | ".join(f"{c[i]:.4f}" for c in curves.values()) + " |")
    return "\n".join(lines)


def results_markdown(results: dict[str, list[dict[str, str]]]) -> str:
    if not results:
        return (
            '!!! note "No benchmark results yet"\n'
            "    No `benchmarks/results/*.csv` is committed yet, so this page has no measured numbers "
            "and no plots. They appear here at the next docs build after the benchmark scripts "
            "(`python benchmarks/bench.py`, `python benchmarks/bench_train.py`, on a GPU) have written "
            "their CSVs.\n"
        )
    charts = plots(results)
    parts = []
    for name, rows in results.items():
        card = rows[0].get("card") or "unknown card"
        parts.append(f"### {name}\n\n`benchmarks/results/{name}.csv`, measured on {html.escape(card)}.\n")
        curves = _curves(rows)
        if curves is not None:
            if f"{name}.svg" in charts:
                parts.append(f'<figure class="gdn2-figure" markdown>\n![{name}](plots/{name}.svg)\n</figure>\n')
            parts.append(_curves_table(*curves) + "\n")
            continue
        if not _is_bench(rows):
            parts.append(_table(rows) + "\n")
            continue
        for mode in _modes(rows):
            mrows = _mode_rows(rows, mode)
            if not mrows:
                continue
            parts.append(f"#### {mode}\n")
            if f"{name}-{mode}.svg" in charts:
                parts.append(f'<figure class="gdn2-figure" markdown>\n![{name} {mode}](plots/{name}-{mode}.svg)\n'
                             "</figure>\n")
            parts.append(_bench_table(mrows) + "\n")
        launch = [r for r in rows if r["shape"] == "launch" and _number(r["ms"]) is not None]
        for r in launch:
            parts.append(f"A bare Triton launch ({r['impl']}) costs {_number(r['ms']) * 1e3:.1f} µs per call on this "
                         "card, host included.\n")
    return "\n".join(parts)


def plots(results: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    """NAME-MODE.svg -> SVG text: grouped bars of every implementation's time and the memory floor."""
    out = {}
    for name, rows in results.items():
        curves = _curves(rows)
        if curves is not None:
            mode = rows[0].get("mode") or name
            out[f"{name}.svg"] = line_chart(f"{rows[0].get('card') or name}: {mode} (per step)", *curves)
            continue
        if not _is_bench(rows):
            continue
        for mode in _modes(rows):
            mrows = _mode_rows(rows, mode)
            if not mrows:
                continue
            shapes = list(dict.fromkeys(r["shape"] for r in mrows))
            groups: dict[str, dict[str, float | None]] = {}
            for r in mrows:
                groups.setdefault(_IMPL_NAMES.get(r["impl"], r["impl"]), {})[r["shape"]] = _number(r["ms"])
            floors = {r["shape"]: _number(r.get("mem_floor_ms")) for r in mrows}
            if any(floors.values()):
                groups["memory floor"] = floors
            title = f"{rows[0].get('card') or name}: {mode}, ms (lower is better)"
            out[f"{name}-{mode}.svg"] = bar_chart(title, shapes, groups, "ms")
    return out


_PALETTE = ["#3f51b5", "#e65100", "#2e7d32", "#6a1b9a", "#00838f", "#c62828", "#5d4037", "#455a64"]


def bar_chart(title: str, labels: list[str], groups: dict[str, dict[str, float | None]], ylabel: str) -> str:
    """Grouped bars on a log axis; one group per label, one bar per series."""
    values = [v for g in groups.values() for v in g.values() if v]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 1.0
    hi = hi * 10 if hi <= lo else hi
    n_series = max(1, len(groups))
    left, top, plot_h = 70, 40, 260
    group_w = max(22 * n_series + 20, 540 // max(1, len(labels)))
    width = max(left + group_w * len(labels) + 20, 7 * len(title) + 2 * left)
    # legend entries flow left to right and wrap at the figure's width
    legend, x, row = [], left, 0
    for name in groups:
        w = 24 + 7 * len(name)
        if x + w > width - 10 and x > left:
            x, row = left, row + 1
        legend.append((name, x, row))
        x += w
    height = top + plot_h + 90 + 18 * row
    y = lambda v: top + plot_h * (1 - (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)))
    esc = html.escape
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f'<title>{esc(title)}</title>',
         f'<text x="{left}" y="20" font-size="13" font-weight="bold">{esc(title)}</text>']
    decade = lo
    while decade <= hi * 1.0001:
        yy = y(decade)
        s.append(f'<line x1="{left}" x2="{width - 20}" y1="{yy:.1f}" y2="{yy:.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end">{decade:g}</text>')
        decade *= 10
    s.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
             f'{esc(ylabel)} (log)</text>')
    bar_w = min(40.0, (group_w - 20) / n_series)
    for i, label in enumerate(labels):
        x0 = left + i * group_w + 10 + ((group_w - 20) - bar_w * n_series) / 2
        for j, (name, g) in enumerate(groups.items()):
            v = g.get(label)
            if not v:
                continue
            yy = y(v)
            s.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{yy:.1f}" width="{bar_w - 2:.1f}" '
                     f'height="{top + plot_h - yy:.1f}" fill="{_PALETTE[j % len(_PALETTE)]}">'
                     f'<title>{esc(name)}: {v:g}</title></rect>')
        cx = x0 + bar_w * n_series / 2
        s.append(f'<text transform="translate({cx:.1f} {top + plot_h + 12}) rotate(35)">{esc(label)}</text>')
    s.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>')
    for j, (name, lx, row) in enumerate(legend):
        ly = top + plot_h + 70 + 18 * row
        s.append(f'<rect x="{lx}" y="{ly - 9}" width="10" height="10" fill="{_PALETTE[j % len(_PALETTE)]}"/>')
        s.append(f'<text x="{lx + 14}" y="{ly}">{esc(name)}</text>')
    s.append("</svg>")
    return "\n".join(s)


def line_chart(title: str, steps: list[float], curves: dict[str, list[float | None]]) -> str:
    """Curves over steps on linear axes (loss curves)."""
    values = [v for c in curves.values() for v in c if v is not None]
    lo, hi = min(values), max(values)
    hi = hi if hi > lo else lo + 1.0
    left, top, plot_w, plot_h = 70, 40, 560, 260
    width, height = left + plot_w + 30, top + plot_h + 70
    x = lambda st: left + plot_w * (st - steps[0]) / max(steps[-1] - steps[0], 1)
    y = lambda v: top + plot_h * (1 - (v - lo) / (hi - lo))
    esc = html.escape
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
         f"<title>{esc(title)}</title>",
         f'<text x="{left}" y="20" font-size="13" font-weight="bold">{esc(title)}</text>']
    for i in range(5):
        v = lo + (hi - lo) * i / 4
        s.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#ddd"/>')
        s.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    s.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" text-anchor="middle">step</text>')
    s.append(f'<text x="{left}" y="{top + plot_h + 16}" text-anchor="middle">{steps[0]:g}</text>')
    s.append(f'<text x="{left + plot_w}" y="{top + plot_h + 16}" text-anchor="middle">{steps[-1]:g}</text>')
    for j, (name, c) in enumerate(curves.items()):
        color = _PALETTE[j % len(_PALETTE)]
        pts = " ".join(f"{x(st):.1f},{y(v):.1f}" for st, v in zip(steps, c) if v is not None)
        s.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="1.5"/>')
        lx = left + 10 + j * 170
        s.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" fill="{color}"/>')
        s.append(f'<text x="{lx + 14}" y="{height - 9}">{esc(name)}</text>')
    s.append("</svg>")
    return "\n".join(s)
