"""Draw the figures of the derivation and kernel pages: ``python docs/figures/make_figures.py`` writes
``docs/assets/figures/*.svg``; ``--check`` only compares them with what is committed.

The figures are plain SVG built from the few primitives below, so that they are reproducible byte
for byte (tests/test_docs.py regenerates them and compares) and need nothing beyond Python. Text,
axes and outlines are drawn in ``currentColor``: the site inlines each figure into its page, where
that is the text colour of the light or the dark scheme; the fills are mid-tone colours that read
on both backgrounds. Ids carry the figure's name, so that several figures can share a page.

One colour per kind of quantity, on every figure:
key side (k, q, T, A, Y) indigo; value side (v, z, U, R, O) green; erase (b, e) orange;
decay (g, G, γ) purple; state (S) teal.
"""

import html
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "assets" / "figures"

KEY, VALUE, ERASE, DECAY, STATE = "#5c6bc0", "#43a047", "#f57c00", "#8e24aa", "#00897b"


# ---- primitives ---------------------------------------------------------------------------------------
def _n(x: float) -> str:
    """Coordinates with at most one decimal, no trailing zeros: stable text for the comparison."""
    s = f"{x:.1f}"
    return s[:-2] if s.endswith(".0") else s


def rich(text: str) -> str:
    """Escape text; ``_{..}`` and ``^{..}`` become sub- and superscript tspans."""
    out, i = [], 0
    while i < len(text):
        if text[i] in "_^" and text[i + 1: i + 2] == "{":
            j = text.index("}", i)
            dy = 4 if text[i] == "_" else -6
            out.append(f'<tspan dy="{dy}" font-size="0.72em">{html.escape(text[i + 2: j])}</tspan>'
                       f'<tspan dy="{-dy}">\u200b</tspan>')
            i = j + 1
        else:
            out.append(html.escape(text[i]))
            i += 1
    return "".join(out)


class Figure:
    def __init__(self, name: str, width: int, height: int, title: str):
        self.name, self.width, self.height, self.title = name, width, height, title
        self.body: list[str] = []

    @property
    def arrow(self) -> str:
        return f"url(#{self.name}-arrow)"

    def rect(self, x, y, w, h, fill="none", opacity=1.0, stroke="currentColor", sw=1.2, dash="", rx=0):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' rx="{_n(rx)}"' if rx else ""
        extra += f' fill-opacity="{opacity:g}"' if fill != "none" and opacity != 1 else ""
        self.body.append(f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(w)}" height="{_n(h)}" fill="{fill}" '
                         f'stroke="{stroke}" stroke-width="{sw:g}"{extra}/>')

    def text(self, x, y, s, anchor="middle", size=13, weight="", style="", fill="currentColor", opacity=1.0):
        extra = f' font-weight="{weight}"' if weight else ""
        extra += f' font-style="{style}"' if style else ""
        extra += f' fill="{fill}"' if fill != "currentColor" else ""
        extra += f' fill-opacity="{opacity:g}"' if opacity != 1 else ""
        self.body.append(f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" font-size="{size}"{extra}>'
                         f"{rich(s)}</text>")

    def line(self, x1, y1, x2, y2, stroke="currentColor", sw=1.4, dash="", arrow=False, opacity=1.0):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' marker-end="{self.arrow}"' if arrow else ""
        extra += f' stroke-opacity="{opacity:g}"' if opacity != 1 else ""
        self.body.append(f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" stroke="{stroke}" '
                         f'stroke-width="{sw:g}"{extra}/>')

    def path(self, d, stroke="currentColor", sw=1.4, fill="none", dash="", arrow=False, opacity=1.0):
        extra = f' stroke-dasharray="{dash}"' if dash else ""
        extra += f' marker-end="{self.arrow}"' if arrow else ""
        extra += f' fill-opacity="{opacity:g}"' if fill != "none" and opacity != 1 else ""
        self.body.append(f'<path d="{d}" fill="{fill}" stroke="{stroke}" stroke-width="{sw:g}"{extra}/>')

    def box(self, x, y, w, h, label, colour, sub="", opacity=0.22, size=13):
        """A rounded node: its label centred, an optional smaller second line (a shape, a note)."""
        self.rect(x, y, w, h, fill=colour, opacity=opacity, stroke=colour, sw=1.4, rx=5)
        if sub:
            self.text(x + w / 2, y + h / 2 - 2, label, size=size)
            self.text(x + w / 2, y + h / 2 + 13, sub, size=11, opacity=0.75)
        else:
            self.text(x + w / 2, y + h / 2 + 4.5, label, size=size)

    def svg(self) -> str:
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="gdn2-fig" width="{self.width}" '
                f'height="{self.height}" viewBox="0 0 {self.width} {self.height}" font-family="sans-serif" '
                f'fill="currentColor">')
        defs = (f'<defs><marker id="{self.name}-arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
                f'markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" '
                f'fill="currentColor"/></marker></defs>')
        return "\n".join([head, f"<title>{html.escape(self.title)}</title>", defs, *self.body, "</svg>"]) + "\n"


# ---- 1. notation: one token ----------------------------------------------------------------------------
def token_update() -> Figure:
    f = Figure("token-update", 880, 340, "One token of Gated DeltaNet-2: decay, read along the erase direction, "
               "write the gated value minus the read, read out")
    cw = 12                                                # one cell of the K×V state picture (8×8 cells)

    def state(x, y, label, rows=None):
        f.text(x + 48, y - 12, label, weight="bold")
        for i in range(8):
            for j in range(8):
                f.rect(x + j * cw, y + i * cw, cw, cw, fill=DECAY if rows else STATE,
                       opacity=rows[i] if rows else 0.12, stroke="currentColor", sw=0.3)
        f.rect(x, y, 8 * cw, 8 * cw, stroke=STATE, sw=1.6)

    state(20, 50, "S_{t−1}")
    f.text(68, 166, "K × V, key-major", size=11, opacity=0.75)
    f.line(124, 98, 226, 98, arrow=True)
    f.text(175, 86, "× α_{t} per row", size=12)
    f.text(175, 118, "decay first:", size=11, opacity=0.75)
    f.text(175, 132, "α = exp(g), g ≤ 0", size=11, opacity=0.75)
    state(252, 50, "S̄_{t}", rows=[0.55, 0.15, 0.4, 0.05, 0.3, 0.5, 0.1, 0.25])
    f.rect(236, 50, 10, 96, fill=ERASE, opacity=0.5, stroke=ERASE)
    f.text(241, 166, "e_{t} = b_{t} ⊙ k_{t}", size=12, fill=ERASE)
    f.line(306, 150, 306, 226, arrow=True)
    f.text(312, 196, "read", anchor="start", size=12)
    f.rect(252, 234, 96, 12, fill=ERASE, opacity=0.35, stroke=ERASE)
    f.text(300, 268, "r_{t} = S̄_{t}ᵀ e_{t}", size=12)
    f.text(376, 245, "−", size=20)
    f.rect(404, 234, 96, 12, fill=VALUE, opacity=0.35, stroke=VALUE)
    f.text(452, 268, "z_{t} = w_{t} ⊙ v_{t}", size=12)
    f.text(376, 296, "u_{t} = z_{t} − r_{t}, the residual write (1 × V)", size=12, weight="bold")
    f.line(504, 240, 546, 240, arrow=True)
    f.rect(556, 138, 10, 96, fill=KEY, opacity=0.5, stroke=KEY)
    f.text(561, 130, "k_{t}", size=12, fill=KEY)
    f.rect(572, 234, 96, 12, fill=VALUE, opacity=0.6, stroke=VALUE)
    f.text(620, 268, "k_{t} u_{t}ᵀ: a rank-one write", size=12)
    f.line(620, 228, 620, 152, arrow=True)
    state(572, 50, "S_{t} = S̄_{t} + k_{t} u_{t}ᵀ")
    f.line(672, 98, 742, 98, arrow=True)
    f.text(707, 86, "read out", size=12)
    f.rect(752, 92, 96, 12, fill=VALUE, opacity=0.6, stroke=VALUE)
    f.text(800, 128, "o_{t} = S_{t}ᵀ (scale · q_{t})", size=12)
    f.text(800, 144, "(1 × V)", size=11, opacity=0.75)
    f.text(440, 330, "the decay scales the rows (key channels); the erase reads along b ⊙ k; "
           "the write adds k times the gated value minus that read", size=12, opacity=0.85)
    return f


# ---- 2. recurrence: the two gates act on the two axes of the state -------------------------------------
def gate_axes() -> Figure:
    f = Figure("gate-axes", 860, 310, "The erase gate b weights key channels (rows of the state), the write "
               "gate w weights value channels (columns)")
    x0, y0, c = 300, 80, 22
    b = [1.0, 0.2, 0.9, 0.0, 0.6, 1.0, 0.3, 0.8]
    w = [0.7, 1.0, 0.1, 0.5, 0.9, 0.0, 0.4, 1.0]
    for i in range(8):
        for j in range(8):
            f.rect(x0 + j * c, y0 + i * c, c, c, fill=STATE, opacity=0.08, stroke="currentColor", sw=0.3)
    f.rect(x0, y0, 8 * c, 8 * c, stroke=STATE, sw=1.6)
    f.text(x0 + 4 * c, y0 - 46, "S̄_{t}: K × V", weight="bold")
    # b bars on the left: one per row (key channel)
    for i, v in enumerate(b):
        f.rect(x0 - 12 - 60 * v, y0 + i * c + 4, 60 * v, c - 8, fill=ERASE, opacity=0.6, stroke=ERASE, sw=0.8)
    f.line(x0 - 12, y0, x0 - 12, y0 + 8 * c, opacity=0.5)
    f.text(x0 - 90, y0 + 4 * c - 10, "b_{t}", anchor="end", size=15, fill=ERASE, weight="bold")
    f.text(x0 - 90, y0 + 4 * c + 8, "erase gate:", anchor="end", size=12)
    f.text(x0 - 90, y0 + 4 * c + 24, "one per key channel", anchor="end", size=12)
    f.text(x0 - 90, y0 + 4 * c + 40, "(rows), in [0, 2]", anchor="end", size=12)
    # w bars on top: one per column (value channel)
    for j, v in enumerate(w):
        f.rect(x0 + j * c + 4, y0 - 8 - 22 * v, c - 8, 22 * v, fill=VALUE, opacity=0.6, stroke=VALUE, sw=0.8)
    f.text(x0 + 8 * c + 16, y0 - 20, "w_{t}: write gate, one per value channel (columns), in [0, 1]",
           anchor="start", size=12, fill=VALUE)
    # what each does
    tx = x0 + 8 * c + 30
    f.text(tx, y0 + 30, "read (and so removed) along the key axis:", anchor="start", size=12)
    f.text(tx, y0 + 50, "r_{t} = S̄_{t}ᵀ (b_{t} ⊙ k_{t})", anchor="start", size=13, fill=ERASE)
    f.text(tx, y0 + 86, "written along the value axis:", anchor="start", size=12)
    f.text(tx, y0 + 106, "z_{t} = w_{t} ⊙ v_{t}", anchor="start", size=13, fill=VALUE)
    f.text(tx, y0 + 142, "one rank-one update, two independent gates:", anchor="start", size=12)
    f.text(tx, y0 + 162, "S_{t} = S̄_{t} + k_{t} (z_{t} − r_{t})ᵀ", anchor="start", size=13, weight="bold")
    f.text(430, 300, "tied gates b = w = β·1 (KDA) move both together; decoupled, the layer can erase "
           "without writing (w = 0) or write without erasing (b = 0)", size=12, opacity=0.85)
    return f


# ---- 3. chunking: the chunk grid ------------------------------------------------------------------------
def chunk_grid() -> Figure:
    f = Figure("chunk-grid", 880, 340, "A sequence split into chunks of C tokens: stages 1-3 and 5 run on all "
               "chunks at once, stage 4 walks the chunks in order")
    x0, cw, n_chunks, C = 166, 138, 5, 8
    tok = cw / C
    rows = {"tok": 40, "stg": 100, "walk": 200, "out": 270}
    f.text(10, rows["tok"] + 17, "tokens", anchor="start", size=12, weight="bold")
    f.text(10, rows["stg"] + 20, "stages 1-3", anchor="start", size=12, weight="bold")
    f.text(10, rows["stg"] + 36, "all chunks at once", anchor="start", size=11, opacity=0.75)
    f.text(10, rows["walk"] + 12, "stage 4", anchor="start", size=12, weight="bold")
    f.text(10, rows["walk"] + 28, "T / C sequential steps", anchor="start", size=11, opacity=0.75)
    f.text(10, rows["out"] + 16, "stage 5", anchor="start", size=12, weight="bold")
    f.text(10, rows["out"] + 32, "all chunks at once", anchor="start", size=11, opacity=0.75)
    for n in range(n_chunks):
        x = x0 + n * cw
        for t in range(C):
            pad = n == n_chunks - 1 and t >= 5
            f.rect(x + t * tok, rows["tok"], tok, 26, fill="currentColor" if pad else KEY,
                   opacity=0.08 if pad else 0.22, stroke="currentColor", sw=0.3, dash="2 2" if pad else "")
        f.rect(x, rows["tok"], cw, 26, stroke=KEY, sw=1.6)
        f.text(x + cw / 2, rows["tok"] - 8, f"chunk {n + 1}" if n < n_chunks - 1 else "last chunk: padded",
               size=12)
        f.box(x + 10, rows["stg"], cw - 20, 44, "G, T, A, Y, U", KEY, sub="from k, b, g, v, w")
        f.line(x + cw / 2, rows["stg"] + 44, x + cw / 2, rows["walk"] + 10, arrow=True, opacity=0.6, dash="3 3")
        f.box(x - 20, rows["walk"], 40, 28, f"S_{{{n}}}", STATE, opacity=0.3)
        f.line(x + 20, rows["walk"] + 14, x + cw - 22, rows["walk"] + 14, arrow=True, stroke=STATE, sw=1.8)
        f.box(x + 10, rows["out"], cw - 20, 40, "O = Q_{γ}S_{n} + A_{qk}R", VALUE, size=12)
        f.line(x, rows["walk"] + 28, x + 24, rows["out"], arrow=True, opacity=0.6, dash="3 3")
    f.box(x0 + n_chunks * cw - 20, rows["walk"], 40, 28, f"S_{{{n_chunks}}}", STATE, opacity=0.3)
    f.text(x0 + 4 * cw + 5 * tok + 26, rows["tok"] + 44, "k = 0, g = 0", size=11, opacity=0.75)
    f.text(440, 334, "each chunk's U, Y feed the walk S_{n+1} = Diag(γ_{C}) S_{n} + K_{tail}ᵀ R; "
           "B · H_{V} sequences run side by side", size=12, opacity=0.85)
    return f


# ---- 4. decay: the 64×64 intra matrix in 16×16 tiles -----------------------------------------------------
def intra_tiles() -> Figure:
    f = Figure("intra-tiles", 860, 420, "The 64×64 matrices T and A_qk of a chunk in 16×16 tiles: the upper "
               "triangle is zero, tiles below the diagonal are one product of bounded factors, diagonal tiles "
               "need care")
    x0, y0, t = 70, 40, 80                                  # a 16×16 tile is 80 px
    for i in range(4):
        for j in range(4):
            x, y = x0 + j * t, y0 + i * t
            if j > i:
                f.rect(x, y, t, t, fill="currentColor", opacity=0.04, stroke="currentColor", sw=0.4)
                f.text(x + t / 2, y + t / 2 + 5, "0", opacity=0.45)
            elif j < i:
                f.rect(x, y, t, t, fill=KEY, opacity=0.3, stroke=KEY, sw=1)
                f.text(x + t / 2, y + t / 2 + 5, f"({i},{j})", size=12)
            else:
                f.rect(x, y, t, t, fill="currentColor", opacity=0.04, stroke=ERASE, sw=1.4)
                f.path(f"M{_n(x)},{_n(y)} L{_n(x)},{_n(y + t)} L{_n(x + t)},{_n(y + t)} Z", fill=ERASE,
                       stroke=ERASE, sw=1, opacity=0.35)
                f.text(x + t / 3, y + 2 * t / 3 + 5, f"({i},{i})", size=12)
    f.rect(x0, y0, 4 * t, 4 * t, sw=1.6)
    for k in range(5):
        f.text(x0 + k * t, y0 - 8, str(16 * k), size=11, opacity=0.75)
        f.text(x0 - 8, y0 + k * t + 4, str(16 * k), anchor="end", size=11, opacity=0.75)
    f.text(x0 + 2 * t, y0 + 4 * t + 24, "column s (earlier token)", size=12)
    f.text(24, y0 + 2 * t, "row r (later token)", size=12)
    f.body[-1] = f.body[-1].replace("<text ", f'<text transform="rotate(-90 24 {_n(y0 + 2 * t)})" ', 1)
    lx = x0 + 4 * t + 50
    f.rect(lx, 60, 22, 22, fill=KEY, opacity=0.3, stroke=KEY)
    f.text(lx + 34, 70, "below the diagonal: every row after every column.", anchor="start", size=12)
    f.text(lx + 34, 87, "The tile's first row a is a causal anchor: one matrix", anchor="start", size=12)
    f.text(lx + 34, 104, "product of e^{G−Gₐ}-scaled rows and e^{Gₐ−G}-scaled", anchor="start", size=12)
    f.text(lx + 34, 121, "columns, both ≤ 1.", anchor="start", size=12)
    f.rect(lx, 160, 22, 22, fill=ERASE, opacity=0.35, stroke=ERASE)
    f.text(lx + 34, 170, "on the diagonal: r ≥ s within one sub-chunk, no", anchor="start", size=12)
    f.text(lx + 34, 187, "anchor between every pair. The first row serves with", anchor="start", size=12)
    f.text(lx + 34, 204, "the column factor clamped at e^{60}; rows past the clamp", anchor="start", size=12)
    f.text(lx + 34, 221, "take the pairwise form on the 16×16 tile. T keeps the", anchor="start", size=12)
    f.text(lx + 34, 238, "strictly lower part, A_{qk} the diagonal too.", anchor="start", size=12)
    f.rect(lx, 270, 22, 22, fill="currentColor", opacity=0.04, stroke="currentColor", sw=0.6)
    f.text(lx + 34, 280, "above the diagonal: not causal, zero, never computed", anchor="start", size=12)
    f.text(lx + 34, 297, "(its exponents Gᵣ − Gₛ > 0 would overflow).", anchor="start", size=12)
    f.text(430, 410, "C = 64 split into four 16-token sub-chunks: 6 off-diagonal tiles, 4 diagonal tiles",
           size=12, opacity=0.85)
    return f


# ---- 5. decay: where the anchor sits -----------------------------------------------------------------------
def decay_anchor() -> Figure:
    f = Figure("decay-anchor", 880, 330, "A causal anchor: the first row a of the row sub-chunk lies between every "
               "column s and every row r, so both factors are at most 1")
    x0, w = 40, 11.0                                          # token t at x0 + t*w, 64 tokens

    def axis(y, label):
        for blk in range(4):
            f.rect(x0 + blk * 16 * w, y - 9, 16 * w, 18, fill="currentColor", opacity=0.05, sw=0.6)
        for t in range(0, 65, 16):
            f.text(x0 + t * w, y + 26, str(t), size=11, opacity=0.75)
        f.text(x0 + 64 * w + 12, y + 5, label, anchor="start", size=12)

    def tick(t, y, name, colour):
        x = x0 + (t + 0.5) * w
        f.line(x, y - 14, x, y + 14, stroke=colour, sw=2.4)
        f.text(x, y - 20, name, size=13, fill=colour, weight="bold")

    def arc(t1, t2, y, colour, label, up=True, dash=""):
        x1, x2 = x0 + (t1 + 0.5) * w, x0 + (t2 + 0.5) * w
        h = -46 if up else 46
        f.path(f"M{_n(x1)},{_n(y)} C{_n(x1)},{_n(y + h)} {_n(x2)},{_n(y + h)} {_n(x2)},{_n(y)}", stroke=colour,
               sw=1.8, dash=dash)
        f.text((x1 + x2) / 2, y + (h * 0.75 - 6 if up else h * 0.75 + 14), label, size=12, fill=colour)

    y1 = 110
    axis(y1, "one chunk")
    f.rect(x0 + 16 * w, y1 - 9, 16 * w, 18, fill=KEY, opacity=0.25, stroke=KEY)
    f.rect(x0 + 48 * w, y1 - 9, 16 * w, 18, fill=VALUE, opacity=0.25, stroke=VALUE)
    f.text(x0 + 24 * w, y1 + 46, "columns: sub-chunk 1", size=12, fill=KEY)
    f.text(x0 + 56 * w, y1 + 46, "rows: sub-chunk 3", size=12, fill=VALUE)
    tick(22, y1, "s", KEY)
    tick(48, y1, "a", ERASE)
    tick(57, y1, "r", VALUE)
    arc(22, 48, y1 - 12, KEY, "e^{Gₐ − Gₛ} = exp Σ_{s<t≤a} g_{t} ≤ 1")
    arc(48, 57, y1 - 12, VALUE, "e^{Gᵣ − Gₐ} ≤ 1", up=True)

    y2 = 250
    axis(y2, "mid-block anchor")
    tick(20, y2, "r", VALUE)
    tick(32, y2, "a", "#c62828")
    arc(20, 32, y2 + 12, "#c62828", "e^{Gᵣ − Gₐ} = exp Σ_{r<t≤a} (−g_{t}) ≥ 1: grows with later decays",
        up=False, dash="5 3")
    f.text(x0, 20, "A tile below the diagonal splits e^{Gᵣ − Gₛ} = e^{Gᵣ − Gₐ} · e^{Gₐ − Gₛ} at its first "
           "row a, which lies between every s and every r.", anchor="start", size=12)
    f.text(x0, 196, "An anchor after a row r instead makes row r depend on the tokens after it:", anchor="start",
           size=12)
    return f


# ---- 6. WY: the data flow of one chunk ---------------------------------------------------------------------
def wy_flow() -> Figure:
    f = Figure("wy-flow", 880, 380, "The five stages of one chunk: T and A from keys, erase gate and decay; "
               "Y and U share A; R, the end state and the outputs need the start state")
    col = [20, 170, 340, 520, 700]
    for i, name in enumerate(["1. cumulative decay", "2. T and A", "3. WY auxiliaries", "4. state passing",
                              "5. output"]):
        f.text(col[i] + 75, 24, name, size=12, weight="bold")
        if i:
            f.line(col[i] - 12, 12, col[i] - 12, 368, opacity=0.2, dash="3 3")
    f.box(col[0], 50, 130, 40, "g", DECAY, sub="C × K")
    f.box(col[0], 120, 130, 40, "G = cumsum(g)", DECAY, sub="C × K, γ = e^{G}")
    f.box(col[0], 200, 130, 40, "k, b", KEY, sub="C × K")
    f.box(col[0], 280, 130, 40, "v, w", VALUE, sub="C × V")
    f.line(85, 90, 85, 118, arrow=True)
    f.box(col[1], 120, 150, 44, "T (strictly lower)", KEY, sub="C × C, pairwise decays")
    f.box(col[1], 200, 150, 44, "A = (I + T)^{−1}", KEY, sub="forward substitution")
    f.line(150, 140, 168, 140, arrow=True)
    f.line(150, 220, 168, 150, arrow=True)
    f.line(245, 164, 245, 198, arrow=True)
    f.box(col[2], 60, 160, 44, "Ē = Γ ⊙ B ⊙ K", ERASE, sub="C × K, erase side")
    f.box(col[2], 140, 160, 44, "Y = A Ē", KEY, sub="C × K")
    f.box(col[2], 220, 160, 44, "Z = W ⊙ V", VALUE, sub="C × V, write side")
    f.box(col[2], 300, 160, 44, "U = A Z", VALUE, sub="C × V")
    f.line(420, 104, 420, 138, arrow=True)
    f.line(420, 264, 420, 298, arrow=True)
    f.line(320, 222, 338, 168, arrow=True)
    f.line(320, 230, 338, 318, arrow=True)
    f.box(col[3], 50, 160, 44, "S_{0}", STATE, sub="K × V, from the last chunk")
    f.box(col[3], 200, 160, 44, "R = U − Y S_{0}", VALUE, sub="C × V, residual writes")
    f.box(col[3], 300, 160, 44, "S_{C} = Diag(γ_{C}) S_{0} + K_{tail}ᵀ R", STATE, sub="K × V", size=11)
    f.line(500, 162, 518, 215, arrow=True)
    f.line(500, 322, 518, 228, arrow=True)
    f.line(600, 94, 600, 198, arrow=True)
    f.line(600, 244, 600, 298, arrow=True)
    f.path("M680,330 C872,350 872,60 682,66", dash="5 3", arrow=True, stroke=STATE, sw=1.6)
    f.text(790, 366, "to the next chunk's S_{0}", size=11, fill=STATE)
    f.box(col[4] + 4, 190, 150, 44, "O = Q_{γ} S_{0} + A_{qk} R", VALUE, sub="C × V", size=12)
    f.line(680, 222, 702, 215, arrow=True)
    f.line(680, 80, 720, 188, arrow=True)
    return f


# ---- 7. chunk equations: the shapes of the two products -----------------------------------------------------
def chunk_products() -> Figure:
    f = Figure("chunk-products", 880, 420, "The chunk's outputs and end state as matrix products, drawn to "
               "scale for C = 64, K = V = 128")

    def mat(x, y, rows, cols, label, colour, kind="full", base=128):
        w, h = cols, rows
        if kind == "lower":
            f.path(f"M{_n(x)},{_n(y)} L{_n(x)},{_n(y + h)} L{_n(x + w)},{_n(y + h)} Z", fill=colour,
                   stroke=colour, opacity=0.3)
            f.rect(x, y, w, h, sw=1)
        elif kind == "diag":
            f.rect(x, y, w, h, sw=1)
            f.line(x + 2, y + 2, x + w - 2, y + h - 2, stroke=colour, sw=4)
        else:
            f.rect(x, y, w, h, fill=colour, opacity=0.25, stroke=colour, sw=1.2)
        f.text(x + w / 2, y + base + 20, label, size=12)
        return x + w

    def op(x, y, s):
        f.text(x + 15, y + 36, s, size=20)
        return x + 30

    y = 40
    f.text(10, y - 16, "stage 5: outputs", anchor="start", size=12, weight="bold")
    x = mat(40, y, 64, 128, "O", VALUE)
    x = mat(op(x, y, "="), y, 64, 128, "Q_{γ}", KEY)
    x = mat(x + 8, y, 128, 128, "S_{0}", STATE)
    x = mat(op(x, y, "+"), y, 64, 64, "A_{qk}", KEY, kind="lower")
    mat(x + 8, y, 64, 128, "R", VALUE)
    f.text(740, y + 20, "C × V = (C × K)(K × V)", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 36, "+ (C × C)(C × V)", anchor="start", size=11, opacity=0.8)
    y = 230
    f.text(10, y - 16, "stage 4: end state", anchor="start", size=12, weight="bold")
    x = mat(40, y, 128, 128, "S_{C}", STATE)
    x = mat(op(x, y, "="), y, 128, 128, "Diag(γ_{C})", DECAY, kind="diag")
    x = mat(x + 8, y, 128, 128, "S_{0}", STATE)
    x = mat(op(x, y, "+"), y, 128, 64, "K_{tail}ᵀ", KEY)
    mat(x + 8, y, 64, 128, "R", VALUE)
    f.text(740, y + 20, "K × V = (K × K)(K × V)", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 36, "+ (K × C)(C × V)", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 70, "A_{qk}: lower triangle", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 86, "with the diagonal", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 102, "Diag(γ_{C}): one decay", anchor="start", size=11, opacity=0.8)
    f.text(740, y + 118, "per key channel", anchor="start", size=11, opacity=0.8)
    return f


# ---- 8. backward: the dependency graph -----------------------------------------------------------------------
def backward_graph() -> Figure:
    f = Figure("backward-graph", 880, 520, "The backward's dependency graph: the reverse walk over chunks, then "
               "every local gradient; the erase gate b reaches the loss through Ē and through T")
    W, Hh = 160, 40
    nodes = {
        "dO": (40, 20, "dO, dS_{N}", "currentColor", ""),
        "walk": (240, 20, "reverse walk over chunks", STATE, "dR, dS per chunk; dh_{0}"),
        "out": (40, 110, "dQ_{γ}, dA_{qk}", KEY, "output path"),
        "tail": (230, 110, "dK_{tail}, dγ_{C}", STATE, "state path"),
        "wy": (430, 110, "dU = dR, dY = −dR S_{0}ᵀ", VALUE, "R = U − Y S_{0}"),
        "dA": (430, 200, "dA = dU Zᵀ + dY Ēᵀ", KEY, "gates inside the products"),
        "dZE": (660, 200, "dZ = Aᵀ dU, dĒ = Aᵀ dY", VALUE, ""),
        "dT": (430, 290, "dT = −strict_lower(Aᵀ dA Aᵀ)", KEY, ""),
        "pairT": (430, 380, "pairs of T: dE_{T}, dK, dG", ERASE, "E = B ⊙ K enters T"),
        "pairQ": (40, 290, "pairs of A_{qk}: dQ, dK, dG", KEY, ""),
        "elem": (660, 290, "dE = Γ ⊙ dĒ + dE_{T}", ERASE, "dB = dE ⊙ K, dK += dE ⊙ B"),
        "vw": (660, 110, "dV = W ⊙ dZ, dW = V ⊙ dZ", VALUE, ""),
        "dG": (210, 470, "dG → dg: reverse cumsum", DECAY, "inside each chunk"),
    }
    wide = ("dT", "dZE", "elem", "vw", "pairT", "wy", "dA", "pairQ", "dG")
    for key, (x, y, label, colour, sub) in nodes.items():
        f.box(x, y, 190 if key in wide else W, Hh, label, colour, sub=sub, size=12)

    def edge(a, b, colour="currentColor", sw=1.4):
        xa, ya, *_ = nodes[a]
        xb, yb, *_ = nodes[b]
        wa = 190 if a in wide else W
        wb = 190 if b in wide else W
        ca, cb = (xa + wa / 2, ya + Hh / 2), (xb + wb / 2, yb + Hh / 2)
        # leave and enter through the box sides facing each other
        if abs(cb[1] - ca[1]) > abs(cb[0] - ca[0]) * 0.25:
            p = (ca[0], ya + Hh if cb[1] > ca[1] else ya)
            q = (cb[0], yb if cb[1] > ca[1] else yb + Hh)
        else:
            p = (xa + wa if cb[0] > ca[0] else xa, ca[1])
            q = (xb if cb[0] > ca[0] else xb + wb, cb[1])
        f.line(p[0], p[1], q[0], q[1], stroke=colour, sw=sw, arrow=True)

    edge("dO", "walk")
    edge("walk", "out")
    edge("walk", "tail")
    edge("walk", "wy")
    edge("wy", "dA")
    edge("wy", "dZE")
    edge("dZE", "vw")
    edge("dA", "dT")
    edge("dT", "pairT", ERASE, 2.2)
    edge("pairT", "elem", ERASE, 2.2)
    edge("dZE", "elem", ERASE, 2.2)
    edge("out", "pairQ")
    edge("pairQ", "dG")
    edge("pairT", "dG")
    edge("tail", "dG")
    f.text(660, 360, "b reaches the loss twice (thick):", anchor="start", size=12, fill=ERASE)
    f.text(660, 376, "through Ē = Γ ⊙ B ⊙ K, and", anchor="start", size=12, fill=ERASE)
    f.text(660, 392, "through the rows E = B ⊙ K of T", anchor="start", size=12, fill=ERASE)
    f.text(660, 430, "leaves: dq, dk, dv, dg, db, dw, dh_{0};", anchor="start", size=12)
    f.text(660, 446, "their totals: the tables below", anchor="start", size=12, opacity=0.75)
    return f


# ---- 9. kernels: a grid of programs (the Triton primer) -------------------------------------------------------
def triton_grid() -> Figure:
    f = Figure("triton-grid", 880, 320, "A kernel launched on a grid of programs: each program takes one block of "
               "the tensor through tl.arange offsets, and a mask drops the lanes past the tensor's edge")
    x0, y0, c = 70, 64, 18                     # one element is c px; a 10 × 14 tensor in 4 × 4 blocks
    M, N, BR, BC = 10, 14, 4, 4
    for r in range(12):
        for j in range(16):
            inside = r < M and j < N
            mine = r // BR == 1 and j // BC == 2
            edge = r // BR == 2 and j // BC == 3
            if inside:
                f.rect(x0 + j * c, y0 + r * c, c, c, fill=KEY, opacity=0.45 if mine else (0.2 if edge else 0.07),
                       stroke="currentColor", sw=0.3)
            else:
                f.rect(x0 + j * c, y0 + r * c, c, c, stroke="currentColor", sw=0.5, dash="2 2",
                       fill="currentColor" if edge else "none", opacity=0.12)
    f.rect(x0, y0, N * c, M * c, stroke=KEY, sw=1.8)
    for i in range(3):
        for j in range(4):
            f.rect(x0 + j * BC * c, y0 + i * BR * c, BC * c, BR * c, sw=1.2, opacity=1)
        f.text(x0 - 10, y0 + (i * BR + 2) * c + 4, f"{i}", anchor="end", size=12)
    for j in range(4):
        f.text(x0 + (j * BC + 2) * c, y0 - 8, f"{j}", size=12)
    f.text(x0 + 8 * c, y0 - 28, "program_id(1)", size=12, weight="bold")
    f.text(24, y0 + 6 * c, "program_id(0)", size=12, weight="bold")
    f.body[-1] = f.body[-1].replace("<text ", f'<text transform="rotate(-90 24 {_n(y0 + 6 * c)})" ', 1)
    f.text(x0 + 7 * c, y0 + 12 * c + 22, "a 10 × 14 tensor in 4 × 4 blocks: a grid of 3 × 4 programs", size=11,
           opacity=0.8)
    tx = x0 + 16 * c + 40
    lines = [
        ("grid = (cdiv(M, BR), cdiv(N, BC)) = (3, 4): twelve programs, one", "", 12),
        ("kernel body each, run in any order and in parallel.", "", 12),
        ("", "", 12),
        ("program (1, 2), the dark block:", "bold", 12),
        ("o_r = 1 · BR + tl.arange(0, BR)  →  rows 4 … 7", "", 12),
        ("o_c = 2 · BC + tl.arange(0, BC)  →  columns 8 … 11", "", 12),
        ("x = tl.load(p + o_r[:, None] * N + o_c[None, :])", "", 12),
        ("a BR × BC block of the tensor, in registers", "", 11),
        ("", "", 12),
        ("program (2, 3), the corner block:", "bold", 12),
        ("rows 8 … 11 and columns 12 … 15 reach past the edge;", "", 12),
        ("mask = (o_r < M)[:, None] & (o_c < N)[None, :]", "", 12),
        ("masked lanes load other= (0.0 here) and store nothing", "", 12),
    ]
    for i, (s, w, size) in enumerate(lines):
        if s:
            f.text(tx, y0 + 2 + i * 17, s, anchor="start", size=size, weight=w, opacity=0.8 if size == 11 else 1)
    return f


# ---- 10. kernels: the forward pipeline and what passes between the kernels ---------------------------------------
def kernel_pipeline() -> Figure:
    f = Figure("kernel-pipeline", 880, 470, "The kernels of the forward and the backward, in launch order, and the "
               "intermediates that pass between them through memory (bytes per token and head)")
    W, Hh = 204, 50

    def kernel(x, y, name, sub, colour, w=W):
        f.box(x, y, w, Hh, name, colour, sub=sub, opacity=0.18, size=12)

    def chip(x, y, w, label, sub, colour):
        f.box(x, y, w, 40, label, colour, sub=sub, opacity=0.1, size=12)

    f.text(10, 22, "forward", anchor="start", size=13, weight="bold")
    xs = [10, 230, 450, 668]
    y1, m1 = 40, 140
    kernel(xs[0], y1, "chunk_intra_diag_kernel", "4 programs per chunk", ERASE)
    kernel(xs[1], y1, "chunk_intra_offdiag_kernel", "1 program per chunk", KEY)
    kernel(xs[2], y1, "chunk_wy_fwd_kernel", "1 program per chunk", KEY)
    kernel(xs[3], y1, "chunk_state_output_fwd_kernel", "walks the chunks in order", STATE)
    f.rect(4, m1 - 12, 872, 64, fill="currentColor", opacity=0.04, sw=0.6, dash="4 3", rx=6)
    f.text(866, m1 + 60, "memory", anchor="end", size=11, opacity=0.75)
    chip(xs[0], m1, W, "A_{ii}, (A_{qk})_{ii}, norms", "(4 + 2)·5C/8 + 8", ERASE)
    chip(xs[1], m1, W, "A_{ij}, (A_{qk})_{ij}, j < i", "(4 + 2)·3C/8", KEY)
    chip(xs[2], m1, W, "Y, Q_{γ}, K_{tail}, U, γ_{C}", "6K + 2V + 4K/C", KEY)
    chip(xs[3], m1, W, "o", "2V", VALUE)
    for x in xs:
        f.line(x + W / 2, y1 + Hh, x + W / 2, m1 - 2, arrow=True)
    for a, b in ((0, 1), (0, 2), (1, 2), (1, 3), (2, 3)):
        xa, xb_ = xs[a] + W - 14 - 10 * (b - a), xs[b] + 14 + 22 * (b - a)
        f.path(f"M{_n(xa)},{m1} C{_n(xa)},{m1 - 34} {_n(xb_)},{y1 + Hh + 30} {_n(xb_)},{y1 + Hh + 2}",
               arrow=True, dash="4 3", opacity=0.7)
    f.text(20, 214, "bytes per token and head: A float32, the rest 16-bit; the diagonal kernel writes 5/8 of a row "
           "(its tile and the zeros right of it)", anchor="start", size=11, opacity=0.8)
    f.text(20, 230, "q, k, b, g are read by all three intra kernels, v and w by the WY kernel; dashed: a kernel "
           "reads an earlier kernel's output", anchor="start", size=11, opacity=0.8)

    f.text(10, 262, "backward", anchor="start", size=13, weight="bold")
    xb, W2 = [10, 330, 650], 220
    y2, m2 = 280, 380
    kernel(xb[0], y2, "chunk_bwd_state_kernel", "walks the chunks in reverse", STATE, W2)
    kernel(xb[1], y2, "chunk_bwd_local_wy_kernel", "1 program per chunk", VALUE, W2)
    kernel(xb[2], y2, "chunk_bwd_local_pairwise_kernel", "1 program per chunk", ERASE, W2)
    f.rect(4, m2 - 12, 872, 64, fill="currentColor", opacity=0.04, sw=0.6, dash="4 3", rx=6)
    f.text(866, m2 + 60, "memory", anchor="end", size=11, opacity=0.75)
    chip(xb[0], m2, W2, "dS_{C} per chunk, dR", "2KV/C + 2V", STATE)
    chip(xb[1] - 40, m2, 130, "dv, dw (final)", "2V + 2V", VALUE)
    chip(xb[1] + 100, m2, 170, "dA_{qk}, dT, 4 partials", "4C + 4C + 16K", KEY)
    chip(xb[2], m2, W2, "dq, dk, db, dg", "6K + 4K", ERASE)
    f.line(xb[0] + W2 / 2, y2 + Hh, xb[0] + W2 / 2, m2 - 2, arrow=True)
    f.line(xb[1] + 40, y2 + Hh, xb[1] + 25, m2 - 2, arrow=True)
    f.line(xb[1] + 150, y2 + Hh, xb[1] + 185, m2 - 2, arrow=True)
    f.line(xb[2] + W2 / 2, y2 + Hh, xb[2] + W2 / 2, m2 - 2, arrow=True)
    f.line(xb[0] + W2 - 20, m2, xb[1] + 10, y2 + Hh + 2, arrow=True, dash="4 3", opacity=0.7)
    f.line(xb[1] + 250, m2, xb[2] + 20, y2 + Hh + 2, arrow=True, dash="4 3", opacity=0.7)
    f.text(20, 452, "the backward reads the forward's intermediates (saved, or recomputed by the forward kernels) "
           "and dO; the pairwise kernel adds its share to the partials", anchor="start", size=11, opacity=0.8)
    return f


# ---- 11. kernels: which intra kernel fills which tile -------------------------------------------------------------
def intra_kernels() -> Figure:
    f = Figure("intra-kernels", 880, 330, "The three intra kernels on a chunk's 64×64 matrices: the diagonal "
               "kernel fills the diagonal tiles, the off-diagonal kernel the six tiles below them, the WY kernel "
               "multiplies whole rows of A")
    t, y0 = 38, 80                                          # one 16×16 tile

    def grid(x0, tile_fill, tile_text):
        for i in range(4):
            for j in range(4):
                fill, opacity, stroke = tile_fill(i, j)
                f.rect(x0 + j * t, y0 + i * t, t, t, fill=fill, opacity=opacity, stroke=stroke, sw=0.8)
                label, dim = tile_text(i, j)
                if label:
                    f.text(x0 + j * t + t / 2, y0 + i * t + t / 2 + 4, label, size=11, opacity=0.5 if dim else 1)
        f.rect(x0, y0, 4 * t, 4 * t, sw=1.4)

    def head(x, title, lines):
        f.text(x, 22, title, anchor="start", size=13, weight="bold")
        for k, line in enumerate(lines):
            f.text(x, 40 + 15 * k, line, anchor="start", size=11, opacity=0.8)

    def foot(xc, lines):
        for k, line in enumerate(lines):
            f.text(xc, y0 + 4 * t + 22 + 18 * k, line, size=11)

    # 1. diagonal kernel
    x0 = 74
    head(14, "1. chunk_intra_diag_kernel", ["4 programs per chunk:", "program i owns the rows of sub-chunk i"])
    grid(x0, lambda i, j: (ERASE, 0.4, ERASE) if i == j else ("currentColor", 0.05, "currentColor"),
         lambda i, j: (f"({i},{i})", False) if i == j else (("0", True) if j > i else ("", False)))
    for i in range(4):
        f.text(x0 - 6, y0 + i * t + t / 2 + 4, f"program {i}", anchor="end", size=10, opacity=0.8)
    foot(x0 + 2 * t, ["T_{ii}, (A_{qk})_{ii}, A_{ii} = (I + T_{ii})^{−1};", "zeros right of the diagonal;",
                      "1/‖q‖, 1/‖k‖ of the rows"])

    # 2. off-diagonal kernel
    x1 = 362
    head(300, "2. chunk_intra_offdiag_kernel", ["1 program per chunk:", "the six tiles below the diagonal"])
    step = {(1, 0): "①", (2, 1): "①", (3, 2): "①", (2, 0): "②", (3, 1): "②", (3, 0): "③"}
    grid(x1, lambda i, j: (KEY, 0.35, KEY) if j < i else ((ERASE, 0.12, ERASE) if i == j else
                                                       ("currentColor", 0.05, "currentColor")),
         lambda i, j: (step.get((i, j), ""), False))
    foot(x1 + 2 * t, ["T_{ij}, (A_{qk})_{ij}: a product per key tile;", "A_{ij} = −A_{ii} Σ_{j≤m<i} T_{im} A_{mj},",
                      "① then ② then ③"])

    # 3. WY kernel
    x2, s = 604, 4 * t
    head(590, "3. chunk_wy_fwd_kernel", ["1 program per chunk:", "whole rows of A, a key or value tile"])
    f.path(f"M{_n(x2)},{_n(y0)} L{_n(x2)},{_n(y0 + s)} L{_n(x2 + s)},{_n(y0 + s)} Z", fill=KEY, stroke=KEY, sw=1,
           opacity=0.35)
    f.rect(x2, y0, s, s, sw=1.4)
    f.text(x2 + s / 2, y0 + s / 2 - 10, "A", size=14)
    f.text(x2 + s + 11, y0 + s / 2 + 5, "·", size=20)
    f.rect(x2 + s + 22, y0, 30, s, fill=ERASE, opacity=0.3, stroke=ERASE)
    f.text(x2 + s + 37, y0 - 8, "Ē", size=12, fill=ERASE)
    f.text(x2 + s + 60, y0 + s / 2 + 5, "=", size=16)
    f.rect(x2 + s + 72, y0, 30, s, fill=KEY, opacity=0.3, stroke=KEY)
    f.text(x2 + s + 87, y0 - 8, "Y", size=12)
    foot(x2 + 130, ["Y = A Ē per key tile (C × B_{K}),", "U = A (W ⊙ V) per value tile,",
                    "Q_{γ}, K_{tail}, γ_{C} from a scan of g"])
    f.line(290, 20, 290, 310, opacity=0.2, dash="3 3")
    f.line(580, 20, 580, 310, opacity=0.2, dash="3 3")
    f.text(440, 324, "between the kernels, A (float32) and the norms go through memory", size=11, opacity=0.8)
    return f


# ---- 12. kernels: one program of a sequential state kernel ----------------------------------------------------------
def _state_walk(name: str, title: str, chunks: list[str], loads: list[tuple[str, str, str]], regs: list[tuple],
                writes: list[tuple[str, str, str]], carry: str, note: str) -> Figure:
    f = Figure(name, 880, 380, title)
    # the grid: value blocks × (sequence, value head) pairs
    gx, gy, cw, ch = 56, 92, 34, 24
    f.text(20, 24, "the grid", anchor="start", size=13, weight="bold")
    for i in range(6):
        for j in range(4):
            mine = (i, j) == (2, 1)
            f.rect(gx + j * cw, gy + i * ch, cw, ch, fill=STATE, opacity=0.5 if mine else 0.08, stroke=STATE, sw=0.6)
    f.rect(gx, gy, 4 * cw, 6 * ch, stroke=STATE, sw=1.4)
    f.text(gx + 2 * cw, gy - 26, "program_id(0): V / B_{V}", size=11)
    f.text(gx + 2 * cw, gy - 11, "value blocks", size=11)
    f.text(40, gy + 3 * ch, "program_id(1): N·H_{V} pairs", size=11)
    f.body[-1] = f.body[-1].replace("<text ", f'<text transform="rotate(-90 40 {_n(gy + 3 * ch)})" ', 1)
    f.text(gx + 2 * cw, gy + 6 * ch + 22, "one program: one sequence,", size=11)
    f.text(gx + 2 * cw, gy + 6 * ch + 37, "one value head, B_{V} columns", size=11)
    f.text(gx + 2 * cw, gy + 6 * ch + 52, "of its K × V state", size=11)
    f.line(gx + 2 * cw, gy + 2.5 * ch, 250, 230, opacity=0.5, dash="3 3")
    # one program over three chunks
    x0, w = 262, 190
    f.rect(252, 44, 622, 102, fill="currentColor", opacity=0.04, sw=0.6, dash="4 3", rx=6)
    f.text(870, 140, "memory", anchor="end", size=10, opacity=0.75)
    f.rect(252, 164, 622, 126, fill=STATE, opacity=0.05, stroke=STATE, sw=0.8, dash="4 3", rx=6)
    f.text(870, 284, "registers", anchor="end", size=10, opacity=0.9, fill=STATE)
    f.rect(252, 304, 622, 50, fill="currentColor", opacity=0.04, sw=0.6, dash="4 3", rx=6)
    f.text(870, 348, "memory", anchor="end", size=10, opacity=0.75)
    for n, label in enumerate(chunks):
        x = x0 + n * w
        f.text(x + 90, 34, label, size=12, weight="bold" if n == 1 else "")
        row = [(54, loads[:2]), (100, loads[2:])]
        for y, items in row:
            cw_ = (180 - 6 * (len(items) - 1)) / len(items)
            for i, (lab, shape, colour) in enumerate(items):
                f.box(x + i * (cw_ + 6), y, cw_, 36, lab, colour, sub=shape, opacity=0.14, size=12)
        f.line(x + 90, 146, x + 90, 172, arrow=True)
        rx = x + 6
        for k, (lab, shape, colour, bw, bh) in enumerate(regs):
            f.box(rx, 176 if k == 0 else 184, bw, bh, lab, colour, sub=shape, opacity=0.22, size=12)
            rx += bw + 12
        wx = x + 6
        for lab, shape, colour in writes:
            f.box(wx, 310, 82, 36, lab, colour, sub=shape, opacity=0.14, size=12)
            wx += 90
        f.line(x + 90, 282, x + 90, 308, arrow=True)
        if n < 2:
            f.line(x + 6 + regs[0][3], 262, x + w + 4, 262, arrow=True, stroke=STATE, sw=2)
            f.text(x + 6 + regs[0][3] + 62, 256, carry, size=10, fill=STATE)
    f.text(440, 374, note, size=11, opacity=0.8)
    return f


def state_walk() -> Figure:
    return _state_walk(
        "state-walk", "One program of chunk_state_output_fwd_kernel: the state block stays in registers while the "
        "program walks its sequence's chunks in order",
        ["chunk c − 1", "chunk c", "chunk c + 1"],
        [("Y, Q_{γ}", "C × K", KEY), ("K_{tail}ᵀ", "K × C", KEY), ("A_{qk}", "C × C", KEY), ("U", "C × B_{V}", VALUE),
         ("γ_{C}", "K", DECAY)],
        [("S", "K × B_{V}", STATE, 70, 100), ("R", "C × B_{V}", VALUE, 80, 56)],
        [("O", "C × B_{V}", VALUE)],
        "S_{C} → S_{0}",
        "per chunk: R = U − Y S_{0}, O = Q_{γ} S_{0} + A_{qk} R, S_{C} = Diag(γ_{C}) S_{0} + K_{tail}ᵀ R")


def state_walk_bwd() -> Figure:
    return _state_walk(
        "state-walk-bwd", "One program of chunk_bwd_state_kernel: the state gradient stays in registers while the "
        "program walks its sequence's chunks from last to first",
        ["chunk c + 1", "chunk c", "chunk c − 1"],
        [("Q_{γ}, Y", "C × K", KEY), ("K_{tail}", "C × K", KEY), ("A_{qk}ᵀ", "C × C", KEY), ("dO", "C × B_{V}", VALUE),
         ("G_{C}", "K", DECAY)],
        [("dS", "K × B_{V}", STATE, 70, 100), ("dR", "C × B_{V}", VALUE, 80, 56)],
        [("dS_{C}", "K × B_{V}", STATE), ("dR", "C × B_{V}", VALUE)],
        "dS_{0} → dS_{C}",
        "per chunk: dR = A_{qk}ᵀ dO + K_{tail} dS, then dS ← Diag(γ_{C}) dS + Q_{γ}ᵀ dO − Yᵀ dR")


# ---- 13. kernels: the local backward kernel of the WY paths ---------------------------------------------------------
def local_wy_tiles() -> Figure:
    f = Figure("local-wy-tiles", 880, 400, "One program of chunk_bwd_local_wy_kernel: the chunk's C×C accumulators "
               "stay on chip while the program loops over key blocks, the value heads of its group and value blocks")
    f.rect(10, 30, 860, 360, sw=1, rx=8, opacity=1)
    f.text(24, 22, "one program: one chunk (C rows) of one key head", anchor="start", size=13, weight="bold")
    # for the whole program
    f.text(80, 60, "on chip", size=11, opacity=0.8)
    f.path("M40,70 L40,150 L120,150 Z", fill=KEY, stroke=KEY, sw=1, opacity=0.35)
    f.rect(40, 70, 80, 80, sw=1.2)
    f.text(80, 166, "A  (C × C)", size=11)
    f.rect(40, 184, 80, 80, fill=KEY, opacity=0.12, stroke=KEY)
    f.text(80, 228, "dA", size=13)
    f.text(80, 280, "accumulator", size=10, opacity=0.8)
    f.rect(40, 292, 80, 80, fill=KEY, opacity=0.12, stroke=KEY)
    f.text(80, 336, "dA_{qk}", size=13)
    # the key-block loop
    f.rect(150, 46, 470, 334, fill="currentColor", opacity=0.03, sw=0.8, dash="5 3", rx=6)
    f.text(164, 64, "for each key block (B_{K} columns):", anchor="start", size=12, weight="bold")
    for i, lab in enumerate(["dQ_{γ}", "dK_{tail}", "dY"]):
        f.box(166 + i * 58, 76, 50, 74, lab, KEY, sub="C×B_{K}", opacity=0.14, size=12)
    f.text(350, 96, "accumulated over the", anchor="start", size=11, opacity=0.8)
    f.text(350, 111, "value loop, then:", anchor="start", size=11, opacity=0.8)
    f.text(350, 130, "dA += dY Ēᵀ,  dĒ = Aᵀ dY", anchor="start", size=12)
    f.text(350, 147, "→ partial dq, dk, db, dG", anchor="start", size=12)
    # the value loop
    f.rect(166, 166, 440, 204, fill=VALUE, opacity=0.04, stroke=VALUE, sw=0.8, dash="5 3", rx=6)
    f.text(180, 184, "for each value head of the group, each value block (B_{V}):", anchor="start", size=12,
           weight="bold")
    f.box(180, 196, 66, 58, "S_{0}", STATE, sub="B_{K}×B_{V}", opacity=0.2, size=12)
    f.box(254, 196, 66, 58, "dS_{C}", STATE, sub="B_{K}×B_{V}", opacity=0.2, size=12)
    for i, lab in enumerate(["R", "dR", "dO"]):
        f.box(336 + i * 56, 196, 50, 58, lab, VALUE, sub="C×B_{V}", opacity=0.2, size=12)
    f.text(180, 276, "dQ_{γ} += dO S_{0}ᵀ,  dK_{tail} += R dS_{C}ᵀ,  dY −= dR S_{0}ᵀ", anchor="start", size=12)
    f.text(180, 300, "first key block only:", anchor="start", size=11, opacity=0.8)
    f.text(180, 318, "dA += dR (W ⊙ V)ᵀ,  dA_{qk} += dO Rᵀ", anchor="start", size=12)
    f.text(180, 338, "dZ = Aᵀ dR  →  dv, dw", anchor="start", size=12)
    # to memory
    f.text(745, 56, "to memory", size=11, opacity=0.8)
    f.box(650, 76, 200, 44, "dq, dk, db, dG: partials", KEY, sub="float32, per key block", opacity=0.14, size=12)
    f.box(650, 136, 200, 44, "dv, dw (final)", VALUE, sub="per value head", opacity=0.14, size=12)
    f.box(650, 262, 200, 44, "dT = −strict_lower(Aᵀ dA Aᵀ)", KEY, sub="after the loops, float32", opacity=0.14,
          size=11)
    f.box(650, 322, 200, 44, "dA_{qk}", KEY, sub="after the loops, float32", opacity=0.14, size=12)
    f.line(630, 98, 648, 98, arrow=True)
    f.line(616, 200, 648, 162, arrow=True)
    f.text(750, 246, "from dA and dA_{qk}:", size=11, opacity=0.8)
    return f


# ---- 14. kernels: the three sides of a sub-chunk in the pairwise backward -------------------------------------------
def pairwise_tiles() -> Figure:
    f = Figure("pairwise-tiles", 880, 400, "One program of chunk_bwd_local_pairwise_kernel at sub-chunk i = 1: "
               "the rows side, the columns side and the diagonal tile, each with its anchor; sub-chunks are "
               "walked from last to first")
    x0, y0, t = 80, 56, 70
    i_sub = 1
    for i in range(4):
        for j in range(4):
            x, y = x0 + j * t, y0 + i * t
            if j > i:
                f.rect(x, y, t, t, fill="currentColor", opacity=0.03, stroke="currentColor", sw=0.4)
            elif i == i_sub and j < i:
                f.rect(x, y, t, t, fill=KEY, opacity=0.4, stroke=KEY, sw=1.2)
                f.text(x + t / 2, y + t / 2 + 4, "rows", size=12)
            elif j == i_sub and i > i_sub:
                f.rect(x, y, t, t, fill=VALUE, opacity=0.4, stroke=VALUE, sw=1.2)
                f.text(x + t / 2, y + t / 2 + 4, "columns", size=12)
            elif i == j == i_sub:
                f.rect(x, y, t, t, fill=ERASE, opacity=0.4, stroke=ERASE, sw=1.4)
                f.text(x + t / 2, y + t / 2 + 4, "diagonal", size=12)
            else:
                f.rect(x, y, t, t, fill="currentColor", opacity=0.08, stroke="currentColor", sw=0.4)
    f.rect(x0, y0, 4 * t, 4 * t, sw=1.6)
    for k in range(5):
        f.text(x0 + k * t, y0 - 8, str(16 * k), size=11, opacity=0.75)
    f.text(x0 + 2 * t, y0 + 4 * t + 24, "column s (earlier token)", size=12)
    for k in range(4):
        f.text(x0 - 8, y0 + k * t + t / 2 + 4, f"i = {k}", anchor="end", size=11, opacity=0.75)
    # anchors on the right edge of sub-chunk 1's rows
    ya, yb = y0 + i_sub * t, y0 + (i_sub + 1) * t
    f.line(x0 - 4, ya + 1, x0 + 2 * t, ya + 1, stroke=KEY, sw=2.4)
    f.text(x0 + 2 * t + 6, ya + 10, "a", anchor="start", size=13, weight="bold", fill=KEY)
    f.line(x0 + t, yb - 1, x0 + 2 * t, yb - 1, stroke=VALUE, sw=2.4)
    f.text(x0 + 2 * t + 6, yb + 2, "a′", anchor="start", size=13, weight="bold", fill=VALUE)
    f.text(20, 20, "dA_{qk} and dT of one chunk (C × C), in 16 × 16 tiles; rows i = sub-chunks", anchor="start",
           size=12, weight="bold")
    # explanations
    tx = 420
    rows = [
        (KEY, "rows side: row r in i, column s earlier", "anchor a = first row of i, s < a ≤ r: e^{Gᵣ−Gₐ} · e^{Gₐ−Gₛ}"),
        (VALUE, "columns side: column s in i, row r later", "anchor a′ = last row of i, s ≤ a′ < r"),
        (ERASE, "diagonal: r and s both in i", "anchor a, the factor κₛ = e^{min(Gₐ−Gₛ, 60)} clamped"),
    ]
    for k, (colour, head, sub) in enumerate(rows):
        y = 76 + k * 60
        f.rect(tx, y - 12, 18, 18, fill=colour, opacity=0.4, stroke=colour)
        f.text(tx + 28, y + 2, head, anchor="start", size=12, weight="bold")
        f.text(tx + 28, y + 20, sub, anchor="start", size=12)
    f.text(tx, 272, "the walk: i = 3, 2, 1, 0", anchor="start", size=12, weight="bold")
    for k in range(4):
        f.box(tx + k * 96, 286, 70, 30, f"i = {3 - k}", DECAY, opacity=0.15 if k != 2 else 0.4, size=12)
        if k < 3:
            f.line(tx + k * 96 + 72, 301, tx + k * 96 + 94, 301, arrow=True)
    f.text(tx, 338, "a running sum carries dG of the rows already walked:", anchor="start", size=12)
    f.text(tx, 356, "dg_{t} = Σ_{r≥t} dG_{r}, the reverse cumulative sum, without", anchor="start", size=12)
    f.text(tx, 374, "a second pass over the chunk", anchor="start", size=12)
    return f


# ---- 15. kernels: the decoding kernel's blocks and programs ----------------------------------------------------------
def decode_tiles() -> Figure:
    f = Figure("decode-tiles", 880, 360, "The decoding kernel: a state block stays in registers for every token of "
               "the call; one program per block, or a fixed number of programs each taking blocks in turn")
    x0, y0, sw_, sh = 90, 74, 256, 150                    # one (sequence, value head) state, V in 8 blocks
    f.text(20, 24, "one (sequence, value head): its K × V state", anchor="start", size=13, weight="bold")
    for j in range(8):
        mine = j == 2
        f.rect(x0 + j * 32, y0, 32, sh, fill=STATE, opacity=0.45 if mine else 0.1, stroke=STATE, sw=0.8)
    f.rect(x0, y0, sw_, sh, stroke=STATE, sw=1.6)
    f.text(x0 + 2.5 * 32, y0 + sh + 16, "B_{V}", size=11)
    # key-side column and value-side rows
    f.rect(x0 - 36, y0, 14, sh, fill=ERASE, opacity=0.4, stroke=ERASE)
    f.text(x0 - 29, y0 - 10, "k_{t}, b_{t}, g_{t}, q_{t}", size=11)
    f.text(x0 - 29, y0 + sh + 16, "K", size=11)
    f.rect(x0 + 64, y0 - 30, 32, 12, fill=VALUE, opacity=0.4, stroke=VALUE)
    f.line(x0 + 80, y0 - 18, x0 + 80, y0 - 2, arrow=True)
    f.text(x0 + 104, y0 - 20, "v_{t}, w_{t}: B_{V} values", anchor="start", size=11)
    f.line(x0 + 80, y0 + sh + 20, x0 + 80, y0 + sh + 40, arrow=True)
    f.rect(x0 + 64, y0 + sh + 42, 32, 12, fill=VALUE, opacity=0.7, stroke=VALUE)
    f.text(x0 + 104, y0 + sh + 52, "o_{t}: B_{V} values per token", anchor="start", size=11)
    f.text(x0 + sw_ / 2 - 20, y0 + sh + 84, "V / B_{V} blocks; one program's block stays in registers", size=11)
    f.text(x0 + sw_ / 2 - 20, y0 + sh + 100, "from the call's first token to its last", size=11)
    # launch modes
    tx = 430
    f.text(tx, 24, "the grid", anchor="start", size=13, weight="bold")
    f.text(tx, 56, "fewer than 256 (sequence, head) pairs: one program per block", anchor="start", size=12)
    for j in range(12):
        f.box(tx + j * 36, 68, 32, 30, str(j), STATE, opacity=0.15, size=11)
    f.text(tx, 122, "the card's scheduler starts a program per block as earlier ones end", anchor="start", size=11,
           opacity=0.8)
    f.text(tx, 166, "256 or more pairs: P programs (8 per SM), blocks taken in turn", anchor="start", size=12)
    shades = [0.5, 0.3, 0.16, 0.06]
    for j in range(12):
        f.box(tx + j * 36, 178, 32, 30, str(j % 4), STATE, opacity=shades[j % 4], size=11)
    f.text(tx, 232, "program p takes blocks p, p + P, p + 2P, … (here P = 4);", anchor="start", size=11,
           opacity=0.8)
    f.text(tx, 248, "the programs stay resident: no new program per block", anchor="start", size=11, opacity=0.8)
    f.text(tx, 296, "per token, on the register block S:", anchor="start", size=12, weight="bold")
    f.text(tx, 316, "S ← Diag(e^{g}) S;  r = Sᵀ(b ⊙ k);  S ← S + k (w ⊙ v − r)ᵀ", anchor="start", size=12)
    f.text(tx, 334, "o = Sᵀ(scale · q)", anchor="start", size=12)
    return f


def conv_tiles() -> Figure:
    f = Figure("conv-tiles", 880, 330, "The short convolution: a program takes B_T tokens by B_D channels and "
               "reads the W − 1 tokens before them too; a tap never reaches before its token's sequence start")
    x0, y0, cw, rh = 120, 60, 22, 16
    f.text(20, 24, "one program: B_T tokens × B_D channels of x (and y)", anchor="start", size=13, weight="bold")
    for i in range(11):                                      # 3 halo rows, then 8 rows of the tile
        halo = i < 3
        for j in range(8):
            f.rect(x0 + j * cw, y0 + i * rh, cw, rh, fill=KEY, opacity=0.1 if halo else 0.3, stroke=KEY, sw=0.6)
    f.rect(x0, y0 + 3 * rh, 8 * cw, 8 * rh, stroke=KEY, sw=1.6)
    f.text(x0 - 8, y0 + 1.5 * rh + 4, "W − 1 earlier tokens", anchor="end", size=11)
    f.text(x0 - 8, y0 + 7 * rh + 4, "B_{T} tokens", anchor="end", size=11)
    f.text(x0 + 4 * cw, y0 + 11 * rh + 16, "B_{D} channels (contiguous)", size=11)
    sb = y0 + 8 * rh                                       # a sequence boundary inside the tile
    f.line(x0 - 4, sb, x0 + 8 * cw + 4, sb, stroke=ERASE, sw=2, dash="5 3")
    f.text(x0 + 8 * cw + 10, sb + 4, "a new sequence starts", anchor="start", size=11, fill=ERASE)
    tx = 470
    f.text(tx, 24, "per token t and channel", anchor="start", size=13, weight="bold")
    for s_, lab in enumerate(["x_{t−3}", "x_{t−2}", "x_{t−1}", "x_{t}"]):
        f.box(tx + s_ * 78, 44, 70, 28, lab, KEY, opacity=0.2, size=12)
        f.line(tx + s_ * 78 + 35, 72, tx + 136, 108, arrow=True, opacity=0.7)
    f.box(tx + 78, 110, 116, 30, "Σ_{s} w_{W−1−s} x_{t−s}", VALUE, opacity=0.22, size=12)
    f.line(tx + 136, 140, tx + 136, 162, arrow=True)
    f.box(tx + 96, 164, 80, 28, "SiLU → y_{t}", VALUE, opacity=0.35, size=12)
    f.text(tx, 222, "a tap before the sequence start reads 0, or the cached", anchor="start", size=11)
    f.text(tx, 238, "conv state (the sequence's last W − 1 inputs)", anchor="start", size=11)
    f.text(tx, 270, "backward: dx_{t} = Σ_{s} w_{s} · (dy ⊙ SiLU′)_{t+s} inside the sequence;", anchor="start",
           size=11)
    f.text(tx, 286, "dw: one partial sum per program, then one small sum", anchor="start", size=11)
    return f


def norm_rows() -> Figure:
    f = Figure("norm-rows", 880, 250, "The gated norm: a program takes B_R rows of one value head's V outputs; "
               "each row is normalised by its own root mean square and gated by SiLU of z")
    x0, y0, cw, rh = 60, 60, 20, 18
    f.text(20, 24, "one program: B_R rows (tokens × heads) × V", anchor="start", size=13, weight="bold")
    for name, dx, colour in (("o", 0, STATE), ("z", 230, DECAY)):
        for i in range(6):
            for j in range(8):
                f.rect(x0 + dx + j * cw, y0 + i * rh, cw, rh, fill=colour, opacity=0.25, stroke=colour, sw=0.6)
        f.rect(x0 + dx, y0, 8 * cw, 6 * rh, stroke=colour, sw=1.6)
        f.text(x0 + dx + 4 * cw, y0 + 6 * rh + 18, name, size=13)
    f.text(x0 + 8 * cw + 35, y0 + 3 * rh + 4, "and", size=12)
    tx = 520
    f.text(tx, 24, "per row, in float32 registers", anchor="start", size=13, weight="bold")
    f.text(tx, 56, "r = (mean(o²) + ε)^{−1/2}", anchor="start", size=12)
    f.text(tx, 80, "y = (r·o) ⊙ w ⊙ SiLU(z)", anchor="start", size=12)
    f.text(tx, 112, "z may be a column slice of a wider", anchor="start", size=11)
    f.text(tx, 128, "projection: read through its strides", anchor="start", size=11)
    f.text(tx, 160, "backward: do, dz per row; dw as one", anchor="start", size=11)
    f.text(tx, 176, "partial row per program, then one sum", anchor="start", size=11)
    return f



FIGURES = [token_update, gate_axes, chunk_grid, intra_tiles, decay_anchor, wy_flow, chunk_products, backward_graph,
           triton_grid, kernel_pipeline, intra_kernels, state_walk, state_walk_bwd, local_wy_tiles, pairwise_tiles,
           decode_tiles, conv_tiles, norm_rows]


def figures() -> dict[str, str]:
    """name.svg -> SVG text of every figure."""
    out = {}
    for make in FIGURES:
        fig = make()
        out[f"{fig.name}.svg"] = fig.svg()
    return out


def main(argv: list[str]) -> int:
    check = "--check" in argv
    stale = []
    for name, svg in figures().items():
        path = OUT / name
        if check:
            if not path.is_file() or path.read_text(encoding="utf-8") != svg:
                stale.append(name)
        else:
            path.write_text(svg, encoding="utf-8")
    if stale:
        print("out of date (run python docs/figures/make_figures.py):", ", ".join(stale))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
