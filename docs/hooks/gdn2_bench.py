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
    """The floors of the SPEC §8 shapes, next to the peer's measured times."""
    rows = [
        "| B×T | fwd: memory floor | fwd: compute floor | peer fwd | peer / floor "
        "| fwd+bwd: memory floor | fwd+bwd: compute floor | peer fwd+bwd | peer / floor |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for (B, T), (fwd, fb, _, _) in PEER_MS.items():
        tokens = B * T * H
        mem_f = tokens * fwd_bytes_per_token() / HBM_BYTES_PER_S * 1e3
        cmp_f = tokens * 2 * chunk_macs_per_token() / MATMUL_FLOP_PER_S * 1e3
        mem_fb = tokens * fwdbwd_bytes_per_token() / HBM_BYTES_PER_S * 1e3
        cmp_fb = 3 * cmp_f
        rows.append(
            f"| {B}×{T} | {mem_f:.3f} ms | {cmp_f:.3f} ms | {fwd:.2f} ms | {fwd / max(mem_f, cmp_f):.1f}× "
            f"| {mem_fb:.3f} ms | {cmp_fb:.3f} ms | {fb:.2f} ms | {fb / max(mem_fb, cmp_fb):.1f}× |"
        )
    per_tok = (
        f"Per token and head: {fwd_bytes_per_token()} bytes forward, {fwdbwd_bytes_per_token()} bytes "
        f"forward+backward; {chunk_macs_per_token():,.0f} multiply-adds forward in the chunk form "
        f"(the recurrence: {recurrent_macs_per_token():,.0f}). Card: {HBM_BYTES_PER_S / 1e12:.1f} TB/s, "
        f"{MATMUL_FLOP_PER_S / 1e12:.0f} TFLOP/s (SPEC §8); H = {H}, K = V = {K}, C = {C}, bfloat16."
    )
    return "\n".join(rows) + "\n\n" + per_tok + "\n"


def costs_markdown() -> str:
    """Work, sequential depth and memory per token of the three forms (docs: chunking.md)."""
    T = 65536
    rec, chk = recurrent_macs_per_token(), chunk_macs_per_token()
    masked = T * (K + V) / 2  # mean over a sequence of length T of r·(K + V) for row r
    rows = [
        "| per token and head | recurrence | masked-attention form (no erase only) | chunkwise, C = %d |" % C,
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
        "| context length | GDN-2 state (fixed) | attention KV cache | bytes read per step: GDN-2 / attention |",
        "|---|---|---|---|",
    ]
    for T in (128, 2048, 16384, 65536, 524288):
        kv = T * kv_per_token
        rows.append(f"| {T:,} | {state / 2**20:g} MiB | {kv / 2**20:g} MiB | {state / 2**20:g} MiB / {kv / 2**20:g} MiB |")
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


def results_markdown(results: dict[str, list[dict[str, str]]]) -> str:
    if not results:
        return (
            '!!! note "No benchmark results yet"\n'
            "    No `benchmarks/results/*.csv` is committed yet, so this page has no measured numbers "
            "and no plots. They appear here at the next docs build after the benchmark scripts "
            "have written their CSVs.\n"
        )
    parts = []
    charts = plots(results)
    for name, rows in results.items():
        parts.append(f"### `{name}.csv`\n")
        if f"{name}.svg" in charts:
            parts.append(f'<figure class="gdn2-figure" markdown>\n![{name}](plots/{name}.svg)\n</figure>\n')
        parts.append(_table(rows) + "\n")
    return "\n".join(parts)


def _chart_spec(rows: list[dict[str, str]]):
    """Pick (category columns, series column, value column) from a results table, or None.

    The value is the first column whose name says milliseconds or microseconds; the series is the
    first text column naming an implementation; the categories are the remaining shape columns.
    """
    cols = list(rows[0])
    value = next((c for c in cols if any(u in c.lower() for u in ("ms", "_us", "µs", "time"))
                  and all(_number(r[c]) is not None for r in rows)), None)
    if value is None:
        return None
    series = next((c for c in cols if c.lower() in ("impl", "implementation", "backend", "kernel", "name",
                                                     "provider", "method", "op")), None)
    numeric = [c for c in cols if c != value and all(_number(r[c]) is not None for r in rows)]
    text = [c for c in cols if c not in numeric and c not in (value, series)]
    shape = [c for c in numeric if not any(u in c.lower() for u in ("ms", "us", "tflop", "gb", "ratio", "bw"))]
    return shape + text, series, value


def plots(results: dict[str, list[dict[str, str]]]) -> dict[str, str]:
    """name.svg -> SVG text for each results table with a time column."""
    out = {}
    for name, rows in results.items():
        spec = _chart_spec(rows)
        if spec is None:
            continue
        cats, series, value = spec
        labels, groups = [], {}
        for r in rows:
            label = " ".join(f"{c}={r[c]}" for c in cats) or "-"
            if label not in labels:
                labels.append(label)
            groups.setdefault(r[series] if series else value, {})[label] = _number(r[value])
        out[f"{name}.svg"] = bar_chart(name, labels, groups, value)
    return out


_PALETTE = ["#3f51b5", "#e65100", "#2e7d32", "#6a1b9a", "#00838f", "#c62828", "#5d4037", "#455a64"]


def bar_chart(title: str, labels: list[str], groups: dict[str, dict[str, float | None]], ylabel: str) -> str:
    """Grouped bars on a log axis; one group per label, one bar per series."""
    values = [v for g in groups.values() for v in g.values() if v]
    lo = 10 ** math.floor(math.log10(min(values))) if values else 0.1
    hi = 10 ** math.ceil(math.log10(max(values))) if values else 1.0
    hi = hi * 10 if hi <= lo else hi
    n_series = max(1, len(groups))
    left, top, plot_h, group_w = 70, 40, 260, max(60, 22 * n_series + 20)
    width = left + group_w * len(labels) + 20
    height = top + plot_h + 110
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
    bar_w = (group_w - 20) / n_series
    for i, label in enumerate(labels):
        x0 = left + i * group_w + 10
        for j, (name, g) in enumerate(groups.items()):
            v = g.get(label)
            if not v:
                continue
            yy = y(v)
            s.append(f'<rect x="{x0 + j * bar_w:.1f}" y="{yy:.1f}" width="{bar_w - 2:.1f}" '
                     f'height="{top + plot_h - yy:.1f}" fill="{_PALETTE[j % len(_PALETTE)]}">'
                     f'<title>{esc(name)}: {v:g}</title></rect>')
        cx = x0 + (group_w - 20) / 2
        s.append(f'<text transform="translate({cx:.1f} {top + plot_h + 12}) rotate(35)">{esc(label)}</text>')
    s.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#333"/>')
    for j, name in enumerate(groups):
        lx = left + 10 + j * 150
        s.append(f'<rect x="{lx}" y="{height - 18}" width="10" height="10" fill="{_PALETTE[j % len(_PALETTE)]}"/>')
        s.append(f'<text x="{lx + 14}" y="{height - 9}">{esc(name)}</text>')
    s.append("</svg>")
    return "\n".join(s)
