"""Build-time numbers of the performance page: the cost model, the floors, the tables and the plots.

Every number on the performance page comes from here or from the committed CSVs in
``benchmarks/results/``. Floors are computed for the card that a CSV names in its ``card`` column,
from the constants of :data:`CARDS` (one table, with the source of each number); a CSV of a card
that is not in the table gets its measurements plotted without a floor. CSV files the page does
not place itself are listed, collapsed, under "Other results", so a new benchmark never breaks the
build. No plotting library: the charts are small SVG drawn here, inlined into the page by
``gdn2_docs.py`` so that their text and axes take the theme's colour (``currentColor``).
"""

import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path


# ---- the cards --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Card:
    copy_bytes_per_s: float      # device-to-device copy, bytes read + bytes written, measured
    nominal_bytes_per_s: float   # the vendor's memory bandwidth
    bf16_flop_per_s: float       # dense bfloat16 matrix products, measured
    fp32_flop_per_s: float       # plain float32 arithmetic (no matrix units), the vendor's figure
    sources: str


CARDS = {
    "NVIDIA H200": Card(
        copy_bytes_per_s=4.3e12, nominal_bytes_per_s=4.8e12, bf16_flop_per_s=790e12, fp32_flop_per_s=67e12,
        sources=(
            "copy: torch `y.copy_(x)` of 1 GiB on the H200 machines the benchmarks ran on, about 4.3 TB/s "
            "(the forward CSV's own run measured 4.22 TB/s, `benchmarks/bench.py: copy_bandwidth`); "
            "nominal 4.8 TB/s and float32 67 TFLOP/s: NVIDIA's H200 SXM datasheet; bfloat16: an "
            "8192×8192×8192 `torch.matmul` on random data on those machines, 769–798 TFLOP/s (the "
            "datasheet's dense figure, 989 TFLOP/s, is not reached by any measured product)"
        ),
    ),
}

# The configuration the benchmarks run (benchmarks/bench.py): bfloat16 q, k, v, b, w, o; float32 g;
# H = HV = 16, K = V = 128, chunk size C = 64.
H, K, V, C = 16, 128, 128, 64


# ---- the cost model -----------------------------------------------------------------------------------
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


def decode_state_bytes(batch: int) -> int:
    """Float32 states of a decoding step, all heads: read once and written once."""
    return 2 * batch * H * K * V * 4


#: What the page quotes from the model (``{{ model("name") }}``): derived from the formulas above.
MODEL = {
    "fwd_bytes": fwd_bytes_per_token,
    "fwdbwd_bytes": fwdbwd_bytes_per_token,
    "chunk_macs": chunk_macs_per_token,
    "recurrent_macs": recurrent_macs_per_token,
    "fwd_flop_per_byte": lambda: 2 * chunk_macs_per_token() / fwd_bytes_per_token(),
    "chunk_extra_work_pct": lambda: 100 * (chunk_macs_per_token() / recurrent_macs_per_token() - 1),
    "all_states_gib_64k": lambda: 65536 * H * K * V * 4 / 2**30,
    "state_mib": lambda: H * K * V * 4 / 2**20,
    "kv_kib_per_token": lambda: 2 * H * K * 2 / 2**10,
    "state_equals_kv_tokens": lambda: (H * K * V * 4) / (2 * H * K * 2),
    "h200_balance": lambda: CARDS["NVIDIA H200"].bf16_flop_per_s / CARDS["NVIDIA H200"].copy_bytes_per_s,
}


def floor_ms(card: Card, tokens: int, nbytes_per_token: float, flop_per_token: float) -> float:
    """The larger of the memory floor (bytes over the copy rate) and the FLOP floor (bf16 products)."""
    return max(tokens * nbytes_per_token / card.copy_bytes_per_s,
               tokens * flop_per_token / card.bf16_flop_per_s) * 1e3


def _shape(shape: str) -> tuple[int, int] | None:
    parts = shape.strip().lower().split("x")
    if len(parts) == 2 and all(p.isdigit() for p in parts):
        return int(parts[0]), int(parts[1])
    return None


def mode_floor_ms(card: Card | None, mode: str, shape: str) -> float | None:
    """The floor of a benchmark row: forward, or forward+backward (a train step), at B×T with H heads."""
    bt = _shape(shape)
    if card is None or bt is None:
        return None
    tokens = bt[0] * bt[1] * H
    if mode == "fwd":
        return floor_ms(card, tokens, fwd_bytes_per_token(), 2 * chunk_macs_per_token())
    if mode in ("fwdbwd", "crossover"):
        return floor_ms(card, tokens, fwdbwd_bytes_per_token(), 3 * 2 * chunk_macs_per_token())
    return None


def decode_floor_us(card: Card, batch: int) -> float:
    """Read and write every float32 state once per step; the arithmetic (8·K·V per head) runs on fp32 units."""
    return max(decode_state_bytes(batch) / card.copy_bytes_per_s,
               8 * batch * H * K * V / card.fp32_flop_per_s) * 1e6


# ---- generated tables of the derivation pages ----------------------------------------------------------
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


def cards_markdown() -> str:
    """The constants every floor is computed from, with their sources."""
    rows = ["| card | copy (measured) | nominal bandwidth | bf16 products (measured) | float32 | sources |",
            "|---|---|---|---|---|---|"]
    for name, c in CARDS.items():
        rows.append(f"| {name} | {c.copy_bytes_per_s / 1e12:.1f} TB/s | {c.nominal_bytes_per_s / 1e12:.1f} TB/s "
                    f"| {c.bf16_flop_per_s / 1e12:.0f} TFLOP/s | {c.fp32_flop_per_s / 1e12:.0f} TFLOP/s "
                    f"| {c.sources} |")
    return "\n".join(rows) + "\n"


def floors_markdown() -> str:
    """Floors of the benchmark shapes on every card of CARDS: forward and forward+backward."""
    rows = ["| card | B×T | forward: memory | forward: FLOPs | train step: memory | train step: FLOPs |",
            "|---|---|---|---|---|---|"]
    for name, c in CARDS.items():
        for B, T in ((8, 2048), (4, 4096), (2, 8192), (1, 16384), (1, 65536)):
            tok = B * T * H
            cells = [tok * fwd_bytes_per_token() / c.copy_bytes_per_s,
                     tok * 2 * chunk_macs_per_token() / c.bf16_flop_per_s,
                     tok * fwdbwd_bytes_per_token() / c.copy_bytes_per_s,
                     tok * 6 * chunk_macs_per_token() / c.bf16_flop_per_s]
            rows.append(f"| {name} | {B}×{T} | " + " | ".join(f"{x * 1e3:.3f} ms" for x in cells) + " |")
    return "\n".join(rows) + "\n"


def decode_markdown() -> str:
    """Memory per sequence: the recurrent state against an attention KV cache."""
    state = H * K * V * 4                      # float32 state of one sequence, all heads
    kv_per_token = 2 * H * K * 2               # bfloat16 keys and values of one token, all heads
    rows = ["| context length | GDN-2 state (fixed) | attention KV cache | cache / state |", "|---|---|---|---|"]
    for T in (128, 2048, 16384, 65536, 524288):
        kv = T * kv_per_token
        rows.append(f"| {T:,} | {state / 2**20:g} MiB | {kv / 2**20:g} MiB | {kv / state:g}× |")
    return "\n".join(rows) + f"\n\nH = {H} heads, K = V = {K}, float32 state, bfloat16 cache.\n"


# ---- committed benchmark results --------------------------------------------------------------------
def load_results(folder: Path) -> dict[str, list[dict[str, str]]]:
    """name -> rows of every benchmarks/results/*.csv (empty when there is none yet)."""
    if not folder.is_dir():
        return {}
    out = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if any((v or "").strip() for v in r.values() if isinstance(v, str))]
        if rows:
            out[path.stem] = rows
    return out


def _number(x: str | None) -> float | None:
    try:
        v = float(x)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _card(rows: list[dict[str, str]]) -> str:
    cards = list(dict.fromkeys((r.get("card") or "").strip() for r in rows))
    return ", ".join(c for c in cards if c) or "an unnamed card"


def _table(rows: list[dict[str, str]]) -> str:
    cols = [c for c in rows[0] if c is not None]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        lines.append("| " + " | ".join(html.escape((r.get(c) or "").strip()).replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)


def _collapsed(title: str, body: str) -> str:
    inner = "\n".join(("    " + line) if line else "" for line in body.splitlines())
    return f'??? note "{title}"\n\n{inner}\n'


_BENCH_COLUMNS = {"mode", "shape", "impl", "ms"}   # the schema of benchmarks/bench.py (and the layer bench)


def _is_bench(rows: list[dict[str, str]]) -> bool:
    return _BENCH_COLUMNS <= set(rows[0])


def _curves(rows: list[dict[str, str]]) -> tuple[list[float], dict[str, list[float | None]]] | None:
    """A table with a "step" column: its numeric columns as curves over the steps (e.g. loss curves)."""
    if "step" not in rows[0]:
        return None
    steps = [_number(r["step"]) for r in rows]
    names = [c for c in rows[0] if c not in ("step", "card", "mode") and all(_number(r[c]) is not None for r in rows)]
    if not names or any(x is None for x in steps):
        return None
    return steps, {n: [_number(r[n]) for r in rows] for n in names}  # type: ignore[misc]


# ---- series: one label, colour and dash per implementation, the same on every plot ------------------------
@dataclass(frozen=True)
class Style:
    label: str
    colour: str
    dash: str = ""


STYLES = {
    "ours": Style("ours (gdn2)", "#5c6bc0"),
    "ours-saved": Style("ours, intermediates kept", "#5c6bc0", "7 4"),
    "peer": Style("peer (flash-linear-attention)", "#f57c00"),
    "sdpa": Style("SDPA (softmax attention)", "#43a047"),
    "floor": Style("floor", "currentColor", "2 4"),
    "ours-kernel": Style("ours, kernel only", "#5c6bc0", "7 4"),
    "peer-kernel": Style("peer, kernel only", "#f57c00", "7 4"),
    "triton-fp32": Style("ours (Triton), float32", "#5c6bc0"),
    "reference-fp32": Style("reference (PyTorch), float32", "#8e8e8e", "7 4"),
    "triton-bf16": Style("ours (Triton), bfloat16 autocast", "#f57c00"),
}
_EXTRA_COLOURS = ["#8e24aa", "#00897b", "#c62828", "#6d4c41", "#546e7a"]


def style(key: str, i: int = 0) -> Style:
    return STYLES.get(key) or Style(key, _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)], "" if i < 5 else "7 4")


# ---- line plots ---------------------------------------------------------------------------------------------
def _nice_ticks(lo: float, hi: float, log: bool) -> list[float]:
    if log:
        out = []
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1):
            for m in (1, 2, 5):
                v = m * 10.0**e
                if lo <= v * 1.0001 and v <= hi * 1.0001:
                    out.append(v)
        return out
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= 6:
            step *= m
            break
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt_tick(v: float) -> str:
    return f"{v:g}" if abs(v) < 1e5 else f"{v:.0e}"


def _svg_head(width: float, height: float, title: str, left: float) -> list[str]:
    """The opening of a plot: the svg element (text in the theme's colour), its title and the heading."""
    esc = html.escape
    return [f'<svg xmlns="http://www.w3.org/2000/svg" class="gdn2-plot" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" fill="currentColor" '
            f'role="img" aria-label="{esc(title)}">',
            f"<title>{esc(title)}</title>",
            f'<text x="{left}" y="18" font-size="14" font-weight="bold">{esc(title)}</text>']


def _y_axis(ticks: list[float], Y, left: float, plot_w: float) -> list[str]:
    out = []
    for v in ticks:
        y = Y(v)
        out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="currentColor" '
                   f'stroke-opacity="0.15"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(v)}</text>')
    return out


def line_plot(key: str, title: str, xs: list[float], xlabels: list[str], xlabel: str, ylabel: str,
              series: dict[str, list[float | None]], xlog: bool, ylog: bool, markers: bool = True) -> str:
    """One SVG line plot; series keys pick the label, colour and dash from STYLES."""
    esc = html.escape
    left, right, top, plot_w, plot_h = 64, 16, 34, 800, 300
    ys = [v for s in series.values() for v in s if v is not None and (v > 0 or not ylog)]
    ylo, yhi = min(ys), max(ys)
    if ylog:
        ylo, yhi = ylo / 1.25, yhi * 1.25
    else:
        pad = (yhi - ylo) * 0.08 or abs(yhi) * 0.1 or 1.0
        ylo, yhi = (0.0 if ylo >= 0 and ylo < (yhi - ylo) else ylo - pad), yhi + pad
    xlo, xhi = min(xs), max(xs)
    if xlo == xhi:
        xlo, xhi = xlo - 1, xhi + 1
    tx = (lambda v: math.log(v)) if xlog else (lambda v: v)
    ty = (lambda v: math.log(v)) if ylog else (lambda v: v)
    X = lambda v: left + 18 + (plot_w - 36) * (tx(v) - tx(xlo)) / (tx(xhi) - tx(xlo))
    Y = lambda v: top + plot_h * (1 - (ty(v) - ty(ylo)) / (ty(yhi) - ty(ylo)))
    # legend rows under the plot
    legend, lx, row = [], left, 0
    for i, name in enumerate(series):
        w = 36 + 6.6 * len(style(name, i).label)
        if lx + w > left + plot_w and lx > left:
            lx, row = left, row + 1
        legend.append((name, i, lx, row))
        lx += w
    width, height = left + plot_w + right, top + plot_h + 52 + 20 * (row + 1)
    s = _svg_head(width, height, title, left) + _y_axis(_nice_ticks(ylo, yhi, ylog), Y, left, plot_w)
    for v, lab in zip(xs, xlabels):
        x = X(v)
        s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top}" y2="{top + plot_h}" stroke="currentColor" '
                 f'stroke-opacity="0.08"/>')
        s.append(f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{esc(lab)}</text>')
    s.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="currentColor" '
             f'stroke-opacity="0.5"/>')
    s.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">{esc(xlabel)}</text>')
    s.append(f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
             f'{esc(ylabel)}{" (log scale)" if ylog else ""}</text>')
    for i, (name, vals) in enumerate(series.items()):
        st = style(name, i)
        pts = [(X(x), Y(v)) for x, v in zip(xs, vals) if v is not None and (v > 0 or not ylog)]
        dash = f' stroke-dasharray="{st.dash}"' if st.dash else ""
        width_ = 1.5 if name == "floor" else 2.2
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        s.append(f'<polyline points="{path}" fill="none" stroke="{st.colour}" stroke-width="{width_}"{dash}>'
                 f"<title>{esc(st.label)}</title></polyline>")
        if markers and name != "floor":
            for (x, y), v in zip(pts, [v for v in vals if v is not None and (v > 0 or not ylog)]):
                s.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{st.colour}">'
                         f"<title>{esc(st.label)}: {v:g}</title></circle>")
    for name, i, lx, row in legend:
        st = style(name, i)
        ly = top + plot_h + 56 + 20 * row
        dash = f' stroke-dasharray="{st.dash}"' if st.dash else ""
        s.append(f'<line x1="{lx}" x2="{lx + 26}" y1="{ly - 4}" y2="{ly - 4}" stroke="{st.colour}" '
                 f'stroke-width="2.2"{dash}/>')
        s.append(f'<text x="{lx + 31}" y="{ly}">{esc(st.label)}</text>')
    s.append("</svg>")
    return "\n".join(s)


def _short(n: int) -> str:
    return f"{n // 1024}K" if n % 1024 == 0 and n >= 1024 else str(n)


MODE_TITLES = {"fwd": "forward", "fwdbwd": "training step (forward + backward)",
               "crossover": "training step at B = 1"}


def bench_plot(name: str, rows: list[dict[str, str]], mode: str) -> str | None:
    """Time against sequence length (or batch, or the row order) of one mode of a bench-schema CSV."""
    mrows = [r for r in rows if r.get("mode") == mode and _number(r.get("ms")) is not None]
    shapes = list(dict.fromkeys(r["shape"] for r in mrows))
    if not shapes:
        return None
    parsed = [_shape(s) for s in shapes]
    if all(parsed) and len({p[1] for p in parsed}) == len(parsed):           # type: ignore[index]
        xs = [float(p[1]) for p in parsed]                                   # type: ignore[index]
        labels = [f"{p[0]}×{_short(p[1])}" for p in parsed]                  # type: ignore[index]
        xlabel = "B × T (T on the axis)"
    elif all(parsed) and len({p[0] for p in parsed}) == len(parsed):         # type: ignore[index]
        xs = [float(p[0]) for p in parsed]                                   # type: ignore[index]
        labels = [f"{p[0]}×{_short(p[1])}" for p in parsed]                  # type: ignore[index]
        xlabel = "B × T (B on the axis)"
    else:
        xs, labels, xlabel = [float(i) for i in range(len(shapes))], shapes, "shape"
    order = sorted(range(len(xs)), key=lambda i: xs[i])
    xs, labels, shapes = [xs[i] for i in order], [labels[i] for i in order], [shapes[i] for i in order]
    impls = list(dict.fromkeys(r["impl"] for r in mrows))
    t = {(r["shape"], r["impl"]): _number(r["ms"]) for r in mrows}
    series: dict[str, list[float | None]] = {i: [t.get((s, i)) for s in shapes] for i in impls}
    card = CARDS.get(_card(mrows))
    floors = [mode_floor_ms(card, mode, s) for s in shapes]
    if any(f is not None for f in floors):
        series["floor"] = floors
    measured = [v for k, s in series.items() if k != "floor" for v in s if v]
    ylog = max(measured) / min(measured) > 20
    xlog = xlabel != "shape" and xs[-1] / max(xs[0], 1e-9) > 6
    if xlog:
        xlabel = xlabel.replace(" on the axis)", " on a log axis)")
    return line_plot(f"{name}-{mode}", f"{_card(mrows)}: {MODE_TITLES.get(mode, mode)}, time per call", xs, labels,
                     xlabel, "ms", series, xlog=xlog, ylog=ylog)


def decode_plot(rows: list[dict[str, str]]) -> str | None:
    """Decoding step time against the batch: whole call and kernel only, ours and the peer, with the floor."""
    main = [r for r in rows if r.get("impl") in ("ours", "peer") and _number(r.get("B")) is not None]
    batches = sorted({int(_number(r["B"])) for r in main})                   # type: ignore[arg-type]
    if not batches:
        return None
    get = {(int(_number(r["B"])), r["impl"]): r for r in main}               # type: ignore[arg-type]
    series: dict[str, list[float | None]] = {}
    for impl in ("ours", "peer"):
        series[impl] = [_number(get[(b, impl)].get("wall_us")) if (b, impl) in get else None for b in batches]
    for impl in ("ours", "peer"):
        series[f"{impl}-kernel"] = [_number(get[(b, impl)].get("device_us")) if (b, impl) in get else None
                                    for b in batches]
    card = CARDS.get(_card(main))
    if card is not None:
        series["floor"] = [decode_floor_us(card, b) for b in batches]
    return line_plot("decode", f"{_card(main)}: one decoding step", [float(b) for b in batches],
                     [str(b) for b in batches], "batch B (H = 16, K = V = 128)", "µs", series, xlog=True, ylog=True)


def curves_plot(name: str, rows: list[dict[str, str]]) -> str | None:
    got = _curves(rows)
    if got is None:
        return None
    steps, curves = got
    n = len(steps)
    picks = sorted({0, n - 1, *(round(i * (n - 1) / 4) for i in range(1, 4))})
    return line_plot(name, f"{_card(rows)}: {rows[0].get('mode') or name} per step", steps,
                     [f"{steps[i]:g}" if i in picks else "" for i in range(n)], "step", "loss", curves,
                     xlog=False, ylog=False, markers=False)


# ---- bar plots of the layer benchmark ------------------------------------------------------------------
#: the layers of ``bench_layer.py`` drawn as bars (its operator rows, ``ours-op`` and ``peer-op``, are in the
#: layer page's table)
#: ``ours`` is the layer's default; a row ``ours[recompute=...]`` is our layer in another ``recompute`` mode,
#: and the rows measured while "partial" was the default carry its name
PARTIAL = "ours[recompute=partial]"
LAYER_IMPLS = ("ours", PARTIAL, "peer", "sdpa", "ours-compiled", "ours-compiled[recompute=partial]")
LAYER_STYLES = {"ours-compiled": Style("ours, torch.compile", "#9fa8da"),
                PARTIAL: Style('ours, recompute="partial"', "#3949ab"),
                "ours-compiled[recompute=partial]": Style('ours, recompute="partial", torch.compile', "#9fa8da")}
LAYER_TITLES = {"fwd": "forward", "train": "train step (forward + backward)"}
#: the profile's categories, bottom of the stack first, and their colours
PROFILE_PARTS = {"mixing kernels": "#5c6bc0", "GEMMs": "#9e9e9e", "short convolution": "#00897b",
                 "gated norm": "#8e24aa", "gates": "#c62828", "other": "#f9a825"}


def _is_layer(rows: list[dict[str, str]]) -> bool:
    """The schema of ``benchmarks/bench_layer.py``: the bench columns and the profile's ``share``."""
    return bool(rows) and (_BENCH_COLUMNS | {"share"}) <= set(rows[0])


def _shape_label(shape: str) -> str:
    return "packed, 16K tokens" if shape == "varlen" else _label(shape)


def _legend(entries: list[tuple[str, str]], left: float, y: float, max_w: float) -> tuple[list[str], float]:
    """Coloured squares with labels in rows from y; returns the SVG lines and the y under the last row."""
    out, lx, row = [], left, 0
    for label, colour in entries:
        w = 30 + 7.2 * len(label)
        if lx + w > left + max_w and lx > left:
            lx, row = left, row + 1
        ly = y + 20 * row
        out.append(f'<rect x="{lx}" y="{ly - 10}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 17}" y="{ly}">{html.escape(label)}</text>')
        lx += w
    return out, y + 20 * row + 8


def layer_plot(name: str, rows: list[dict[str, str]], mode: str) -> str | None:
    """Grouped bars, one group per shape and one bar per layer (ours, the peer's, SDPA's attention layer,
    ours compiled): the time of one call, each bar labelled with it, and over each group how many times
    faster ours is than the peer's layer."""
    esc = html.escape
    t = {(r["shape"], r["impl"]): _number(r.get("ms")) for r in rows if r.get("mode") == mode}
    shapes = list(dict.fromkeys(s for s, i in t if i in LAYER_IMPLS and t[(s, i)]))
    impls = [i for i in LAYER_IMPLS if any(t.get((s, i)) for s in shapes)]
    if not shapes:
        return None
    left, right, top, plot_w, plot_h = 64, 16, 52, 800, 300
    yhi = max(t[(s, i)] for s in shapes for i in impls if t.get((s, i))) * 1.12
    ticks = _nice_ticks(0.0, yhi, False)
    yhi = max(yhi, ticks[-1])
    Y = lambda v: top + plot_h * (1 - v / yhi)
    group_w = plot_w / len(shapes)
    bar_w = group_w * 0.8 / len(impls)
    styles = [LAYER_STYLES.get(i) or style(i) for i in impls]
    legend, bottom = _legend([(st.label, st.colour) for st in styles], left, top + plot_h + 52, plot_w)
    title = f"{_card(rows)}: the layer's {LAYER_TITLES.get(mode, mode)}, time per call"
    s = _svg_head(left + plot_w + right, bottom + 4, title, left)
    s += _y_axis(ticks, Y, left, plot_w)
    for g, shape in enumerate(shapes):
        x0 = left + g * group_w + group_w * 0.1
        for b, (impl, st) in enumerate(zip(impls, styles)):
            v = t.get((shape, impl))
            if not v:
                continue
            x, y = x0 + b * bar_w, Y(v)
            s.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar_w * 0.92:.1f}" height="{top + plot_h - y:.1f}" '
                     f'fill="{st.colour}"><title>{esc(st.label)}, {esc(_shape_label(shape))}: {v:g} ms</title></rect>')
            s.append(f'<text x="{x + bar_w * 0.46:.1f}" y="{y - 4:.1f}" text-anchor="middle" font-size="10">'
                     f'{v:.2f}</text>')
        s.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top + plot_h + 16}" text-anchor="middle">'
                 f'{esc(_shape_label(shape))}</text>')
        mine = "ours" if t.get((shape, "ours")) else PARTIAL
        ours, peer = t.get((shape, mine)), t.get((shape, "peer"))
        if ours and peer:
            s.append(f'<text x="{left + (g + 0.5) * group_w:.1f}" y="{top - 8}" text-anchor="middle" '
                     f'font-weight="bold">{peer / ours:.2f}× the peer{"" if mine == "ours" else " (partial)"}'
                     '</text>')
    s.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" '
             f'stroke="currentColor" stroke-opacity="0.5"/>')
    s.append(f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">ms</text>')
    s += legend
    s.append("</svg>")
    return "\n".join(s)


def profile_plot(name: str, rows: list[dict[str, str]]) -> str | None:
    """One stacked bar per layer (ours, the peer's): the train step's device time by kind of kernel, in
    the order of :data:`PROFILE_PARTS`, each bar ending in its total."""
    esc = html.escape
    parts: dict[str, dict[str, float]] = {}
    for r in rows:
        impl, _, part = (r.get("impl") or "").partition(":")
        v = _number(r.get("ms"))
        if r.get("mode") == "profile" and part and v is not None:
            parts.setdefault(impl, {})[part] = v
    if not parts:
        return None
    order = [p for p in PROFILE_PARTS if any(p in d for d in parts.values())]
    order += [p for d in parts.values() for p in d if p not in order]
    colour = {p: PROFILE_PARTS.get(p) or _EXTRA_COLOURS[i % len(_EXTRA_COLOURS)] for i, p in enumerate(order)}
    left, right, top, plot_w, bar_h = 200, 16, 34, 664, 34
    xhi = max(sum(d.values()) for d in parts.values()) * 1.15
    ticks = _nice_ticks(0.0, xhi, False)
    xhi = max(xhi, ticks[-1])
    X = lambda v: left + plot_w * v / xhi
    plot_h = len(parts) * (bar_h + 16) + 8
    legend, bottom = _legend([(p, colour[p]) for p in order], 20, top + plot_h + 52, left + plot_w - 20)
    shape = next((_shape_label(r["shape"]) for r in rows if r.get("mode") == "profile"), "")
    s = _svg_head(left + plot_w + right, bottom + 4, f"{_card(rows)}: where the layer's train step goes, {shape}", 20)
    for v in ticks:
        s.append(f'<line x1="{X(v):.1f}" x2="{X(v):.1f}" y1="{top}" y2="{top + plot_h}" stroke="currentColor" '
                 f'stroke-opacity="0.15"/>')
        s.append(f'<text x="{X(v):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{_fmt_tick(v)}</text>')
    s.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">ms of device time '
             "per train step</text>")
    for b, (impl, d) in enumerate(parts.items()):
        y, acc = top + 8 + b * (bar_h + 16), 0.0
        label = (LAYER_STYLES.get(impl) or style(impl)).label
        s.append(f'<text x="{left - 8}" y="{y + bar_h / 2 + 4:.1f}" text-anchor="end">{esc(label)}</text>')
        for p in order:
            v = d.get(p)
            if not v:
                continue
            s.append(f'<rect x="{X(acc):.1f}" y="{y}" width="{X(acc + v) - X(acc):.1f}" height="{bar_h}" '
                     f'fill="{colour[p]}"><title>{esc(label)}, {esc(p)}: {v:g} ms</title></rect>')
            acc += v
        s.append(f'<text x="{X(acc) + 6:.1f}" y="{y + bar_h / 2 + 4:.1f}">{acc:.2f} ms</text>')
    s += legend
    s.append("</svg>")
    return "\n".join(s)


def plots(results: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    """NAME.svg (or NAME-MODE.svg) -> SVG text for every CSV that can be drawn."""
    out = {}
    for name, rows in results.items():
        if _is_layer(rows):
            for mode in dict.fromkeys(r["mode"] for r in rows):
                svg = profile_plot(name, rows) if mode == "profile" else layer_plot(name, rows, mode)
                if svg:
                    out[f"{name}-{mode}.svg"] = svg
        elif _curves(rows) is not None:
            out[f"{name}.svg"] = curves_plot(name, rows)  # type: ignore[assignment]
        elif _is_bench(rows):
            for mode in dict.fromkeys(r["mode"] for r in rows):
                svg = bench_plot(name, rows, mode)
                if svg:
                    out[f"{name}-{mode}.svg"] = svg
        elif {"B", "impl", "wall_us"} <= set(rows[0]):
            svg = decode_plot(rows)
            if svg:
                out[f"{name}.svg"] = svg
    return out


# ---- the summary -----------------------------------------------------------------------------------------
_SUMMARY_SHAPES = ("8x2048", "4x4096", "2x8192", "1x16384", "1x65536")


def _ms(rows, shape, impl, col="ms"):
    for r in rows:
        if r.get("shape") == shape and r.get("impl") == impl:
            return _number(r.get(col))
    return None


def _cell(x: float | None, fmt: str = ".2f", unit: str = "×") -> str:
    return "" if x is None else f"{x:{fmt}}{unit}"


def summary_markdown(results: dict[str, list[dict[str, str]]]) -> str:
    """One table per card: peer / ours at every benchmark shape, forward and train step; then decoding."""
    parts = [_card_summary(results, name[len("fwd-"):]) for name, rows in results.items()
             if name.startswith("fwd-") and _is_bench(rows)]
    if not parts:
        return "No forward benchmark (`benchmarks/results/fwd-*.csv`) is committed yet.\n"
    return "\n\n".join(parts) + "\n"


def _card_summary(results: dict[str, list[dict[str, str]]], suffix: str) -> str:
    """The summary of the CSVs ``*-SUFFIX.csv`` (SUFFIX names the card, e.g. NVIDIA_H200)."""
    fwd = results[f"fwd-{suffix}"]
    card_name = _card(fwd)
    card = CARDS.get(card_name)
    train = results.get(f"train-fwdbwd-{suffix}", [])
    retuned = results.get(f"train-fwdbwd-peer-retuned-{suffix}", [])
    shapes = [s for s in _SUMMARY_SHAPES if _ms(fwd, s, "ours") is not None]
    trains = {s: retuned if _ms(retuned, s, "ours") is not None else train for s in shapes}
    lines = ["| | " + " | ".join(_label(s) for s in shapes) + " |", "|---" * (len(shapes) + 1) + "|"]
    table = [("forward: peer / ours", [_cell(_ratio(fwd, s, "peer", "ours")) for s in shapes])]
    if card is not None:
        table.append(("forward: ours / floor", [_cell(_over_floor(fwd, card, "fwd", s), ".1f") for s in shapes]))
    if train:
        table += [
            ("train step, recompute: peer / ours", [_cell(_ratio(trains[s], s, "peer", "ours")) for s in shapes]),
            ("train step, keep intermediates: peer / ours",
             [_cell(_ratio(trains[s], s, "peer", "ours-saved")) for s in shapes]),
            ("train step: peak memory, ours / peer",
             [_cell(_ratio(trains[s], s, "ours", "peer", "peak_mib")) for s in shapes]),
        ]
    lines += [f"| {label} | " + " | ".join(cells) + " |" for label, cells in table]
    parts = [f"**{card_name}**. Above 1 in a peer / ours row, gdn2 is faster:\n\n" + "\n".join(lines)]
    if train:
        parts.append(f"Train-step cells come from `train-fwdbwd-peer-retuned-{suffix}.csv` where it has the "
                     f"shape (the peer tuned at that shape), else from `train-fwdbwd-{suffix}.csv`.")
    decode = results.get(f"decode-{suffix}", [])
    if decode:
        parts.append(_decode_summary(decode, card))
    return "\n\n".join(parts)


def _label(shape: str) -> str:
    bt = _shape(shape)
    return f"{bt[0]}×{_short(bt[1])}" if bt else shape


def _ratio(rows, shape, num, den, col="ms"):
    a, b = _ms(rows, shape, num, col), _ms(rows, shape, den, col)
    return a / b if a and b else None


def _over_floor(rows, card, mode, shape):
    t, f = _ms(rows, shape, "ours"), mode_floor_ms(card, mode, shape)
    return t / f if t and f else None


def _decode_summary(rows, card) -> str:
    get = {(r.get("B"), r.get("impl")): r for r in rows}
    batches = sorted({r["B"] for r in rows if r.get("impl") == "ours" and r.get("B")}, key=int)
    lines = ["| decoding step, batch B | " + " | ".join(batches) + " |", "|---" * (len(batches) + 1) + "|"]

    def rat(b, col):
        o, p = get.get((b, "ours")), get.get((b, "peer"))
        a, c = (_number(p.get(col)) if p else None), (_number(o.get(col)) if o else None)
        return _cell(a / c if a and c else None)

    lines.append("| whole call: peer / ours | " + " | ".join(rat(b, "wall_us") for b in batches) + " |")
    lines.append("| kernel only: peer / ours | " + " | ".join(rat(b, "device_us") for b in batches) + " |")
    if card is not None:
        cells = []
        for b in batches:
            d = _number(get[(b, "ours")].get("device_us"))
            cells.append(_cell(d / decode_floor_us(card, int(b)) if d else None, ".1f"))
        lines.append("| kernel only: ours / floor | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# ---- raw rows and the files the page does not place -------------------------------------------------------
def raw_markdown(results: dict[str, list[dict[str, str]]], name: str) -> str:
    if name not in results:
        raise KeyError(name)
    rows = results[name]
    return _collapsed(f"Raw rows: benchmarks/results/{name}.csv ({len(rows)} rows, {_card(rows)})", _table(rows))


def other_markdown(results: dict[str, list[dict[str, str]]], placed: set[str]) -> str:
    """Every CSV that no placeholder of the page shows: its plots (if it has a known schema) and rows, collapsed."""
    rest = [n for n in results if n not in placed]
    if not rest:
        return "Every committed CSV is shown above.\n"
    charts = plots({n: results[n] for n in rest})
    body = []
    for n in rest:
        rows = results[n]
        body.append(f"**`benchmarks/results/{n}.csv`** ({len(rows)} rows, {_card(rows)})\n")
        body += [f"![{c[:-4]}](plots/{c})\n" for c in charts if c == f"{n}.svg" or c.startswith(f"{n}-")]
        # a column with one value in every row is said once, above the table, so that the table stays narrow
        same = {c: (rows[0].get(c) or "").strip() for c in rows[0] if c is not None and len(rows) > 1
                and all((r.get(c) or "").strip() == (rows[0].get(c) or "").strip() for r in rows)}
        if same:
            body.append("In every row: " + ", ".join(f"{c} = {html.escape(v) or '(empty)'}" for c, v in same.items())
                        + ".\n")
        body.append(_table([{c: v for c, v in r.items() if c not in same} for r in rows]) + "\n")
    return _collapsed(f"Other results ({len(rest)} files)", "\n".join(body))
