"""A line plot with error bars as plain SVG (no plotting library): axes and text in ``currentColor``, so a
page that inlines the file shows it in the theme's text colour; one colour and one dash pattern per series."""

import html
import math

__all__ = ["COLOURS", "error_bar_plot"]

COLOURS = {"gdn2": "#3949ab", "b_only": "#00897b", "w_only": "#8e24aa", "kda": "#f57c00", "gdn": "#c62828",
           "swa": "#6d4c41", "attention": "#546e7a"}
DASHES = {"swa": "6 3", "attention": "2 3"}


def _ticks(lo: float, hi: float) -> list[float]:
    step = 10 ** math.floor(math.log10((hi - lo) / 4 or 1))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (m * step) <= 6:
            step *= m
            break
    first = math.ceil(lo / step - 1e-9) * step
    return [round(first + i * step, 10) for i in range(int((hi - first) / step + 1e-9) + 1)]


def error_bar_plot(title: str, xlabel: str, ylabel: str, xs: list[float], series: dict[str, list[tuple]],
                   labels: dict[str, str] | None = None, ylim: tuple[float, float] = (0.0, 1.0),
                   chance: float | None = None, subtitle: str = "") -> str:
    """``series``: name → one (mean, lo, hi) per x, or None where there is no value. The x axis is
    logarithmic (the knobs double), the points of the series are spread a little sideways so that their
    error bars do not hide each other; ``chance`` draws a dotted line at that accuracy."""
    esc, labels = html.escape, labels or {}
    left, right, top, plot_w, plot_h = 64, 16, 52, 640, 280
    names = list(series)
    cols = 3
    rows = math.ceil(len(names) / cols)
    width, height = left + plot_w + right, top + plot_h + 52 + 20 * rows
    lx = [math.log2(x) for x in xs]
    xlo, xhi = (min(lx) - 0.5, max(lx) + 0.5) if len(xs) > 1 else (lx[0] - 1, lx[0] + 1)
    X = lambda v: left + plot_w * (v - xlo) / (xhi - xlo)
    Y = lambda v: top + plot_h * (1 - (v - ylim[0]) / (ylim[1] - ylim[0]))
    s = [f'<svg xmlns="http://www.w3.org/2000/svg" class="gdn2-plot" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12" fill="currentColor" '
         f'role="img" aria-label="{esc(title)}">',
         f"<title>{esc(title)}</title>",
         f'<text x="{left}" y="18" font-size="14" font-weight="bold">{esc(title)}</text>',
         f'<text x="{left}" y="38" fill-opacity="0.8">{esc(subtitle)}</text>']
    for v in _ticks(*ylim):
        s.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{Y(v):.1f}" y2="{Y(v):.1f}" stroke="currentColor" '
                 f'stroke-opacity="0.15"/>')
        s.append(f'<text x="{left - 6}" y="{Y(v) + 4:.1f}" text-anchor="end">{v:g}</text>')
    for x, v in zip(xs, lx):
        s.append(f'<text x="{X(v):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x:g}</text>')
    s.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="currentColor" '
             f'stroke-opacity="0.5"/>')
    s.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 34}" text-anchor="middle">{esc(xlabel)}</text>')
    s.append(f'<text transform="translate(14 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
             f"{esc(ylabel)}</text>")
    if chance is not None:
        s.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{Y(chance):.1f}" y2="{Y(chance):.1f}" '
                 f'stroke="currentColor" stroke-opacity="0.6" stroke-dasharray="1 3"><title>chance</title></line>')
        s.append(f'<text x="{left + plot_w - 4}" y="{Y(chance) - 4:.1f}" text-anchor="end" fill-opacity="0.8">'
                 f"chance</text>")
    spread = 0.28 / max(1, len(names) - 1) if len(names) > 1 else 0.0
    for i, name in enumerate(names):
        colour, dash = COLOURS.get(name, "#888888"), DASHES.get(name)
        label = labels.get(name, name)
        shift = (i - (len(names) - 1) / 2) * spread
        pts = [(X(v + shift), p) for v, p in zip(lx, series[name]) if p is not None]
        if len(pts) > 1:
            path = " ".join(f"{x:.1f},{Y(p[0]):.1f}" for x, p in pts)
            extra = f' stroke-dasharray="{dash}"' if dash else ""
            s.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{extra}>'
                     f"<title>{esc(label)}</title></polyline>")
        for x, (mean, lo, hi) in pts:
            lo_, hi_ = max(lo, ylim[0]), min(hi, ylim[1])
            s.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{Y(lo_):.1f}" y2="{Y(hi_):.1f}" stroke="{colour}" '
                     f'stroke-width="1.5"/>')
            s.append(f'<circle cx="{x:.1f}" cy="{Y(mean):.1f}" r="3.5" fill="{colour}">'
                     f"<title>{esc(label)}: {mean:.3f} [{lo:.3f}, {hi:.3f}]</title></circle>")
    for i, name in enumerate(names):
        colour, dash = COLOURS.get(name, "#888888"), DASHES.get(name)
        col, row = i % cols, i // cols
        x0, y0 = left + col * (plot_w / cols), top + plot_h + 56 + 20 * row
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        s.append(f'<line x1="{x0:.1f}" x2="{x0 + 24:.1f}" y1="{y0 - 4}" y2="{y0 - 4}" stroke="{colour}" '
                 f'stroke-width="2"{extra}/>')
        s.append(f'<text x="{x0 + 30:.1f}" y="{y0}">{esc(labels.get(name, name))}</text>')
    s.append("</svg>")
    return "\n".join(s) + "\n"
