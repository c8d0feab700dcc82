"""The documentation site: it builds strictly, renders its math offline, fetches nothing from
outside the machine, and every page is reachable from the navigation.

The site is built here (``mkdocs build --strict``, the docs extra) and opened in Debian's headless
Chromium (tests/docs_browser.py). Without chromium or mkdocs these tests skip, except in CI
(``CI`` set), where .ci/run installs both and their absence is a failure.
"""

import html.parser
import importlib.util
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path

import pytest
import torch
from docs_browser import Chromium, SiteServer, failures, is_local, request_urls

from gdn2.ops import recurrent_gdn2
from gdn2.ops.chunk import (
    chunk_intra_t,
    chunk_local_cumsum,
    chunk_state_passing,
    chunk_wy,
    pairwise_decay,
    solve_unit_lower,
)
from gdn2.ops.chunk_bwd import chunk_bwd_state
from gdn2.ops.recurrent import recurrent_step

from gdn2_testing import make_inputs, rel_rms

ROOT = Path(__file__).resolve().parents[1]
IN_CI = bool(os.environ.get("CI"))
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


def _need(ok: bool, what: str) -> None:
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is missing in CI (.ci/run installs it)")
        pytest.skip(f"{what} is not installed")


def _mkdocs(*args: str, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture(scope="module")
def site():
    try:
        import material  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError:
        _need(False, 'the docs extra (pip install -e ".[docs]")')
    out = Path(tempfile.mkdtemp(prefix="gdn2-site-"))
    try:
        build = _mkdocs("build", "--strict", "--site-dir", str(out))
        assert build.returncode == 0, f"mkdocs build --strict failed:\n{build.stdout}\n{build.stderr}"
        yield out
    finally:
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def browser(site):
    _need(CHROMIUM is not None, "chromium")
    server = SiteServer(str(site))
    profile = tempfile.mkdtemp(prefix="gdn2-chromium-")
    chromium = Chromium(CHROMIUM, profile, proxy=server.origin)
    try:
        yield chromium, server
    finally:
        chromium.close()
        server.close()
        shutil.rmtree(profile, ignore_errors=True)


def _pages(site: Path) -> set[str]:
    """Site-relative URL paths of every built page ("" is the home page)."""
    return {"" if p.parent == site else p.parent.relative_to(site).as_posix() + "/" for p in site.rglob("index.html")}


# ---- static: every URL the site would fetch is local and exists -----------------------------------
_FETCHING = {  # tag -> attributes whose URL the browser loads without a click
    "script": ("src",), "img": ("src", "srcset"), "source": ("src", "srcset"), "iframe": ("src",),
    "embed": ("src",), "object": ("data",), "video": ("src", "poster"), "audio": ("src",), "input": ("src",),
    "image": ("href", "xlink:href"), "use": ("href", "xlink:href"), "track": ("src",),
}
_LINK_RELS = {"stylesheet", "icon", "preload", "modulepreload", "prefetch", "manifest", "apple-touch-icon"}
_CSS_URL = re.compile(r"""url\(\s*['"]?([^'")]+?)['"]?\s*\)|@import\s+['"]([^'"]+)['"]""")


class _FetchedURLs(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.urls: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        names = _FETCHING.get(tag, ())
        if tag == "link" and _LINK_RELS & set((a.get("rel") or "").lower().split()):
            names = ("href",)
        for name in names:
            value = a.get(name)
            if value:
                self.urls += [part.split()[0] for part in value.split(",")] if "srcset" in name else [value]
        if a.get("style"):
            self.urls += [m.group(1) or m.group(2) for m in _CSS_URL.finditer(a["style"])]
        self._in_style = tag == "style"

    def handle_data(self, data):
        if self._in_style:
            self.urls += [m.group(1) or m.group(2) for m in _CSS_URL.finditer(data)]


def _fetched_urls(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8", errors="replace")
    if path.suffix == ".css":
        return [m.group(1) or m.group(2) for m in _CSS_URL.finditer(text)]
    parser = _FetchedURLs()
    parser.feed(text)
    return parser.urls


def test_every_fetched_url_is_local_and_exists(site):
    problems = []
    files = [p for p in site.rglob("*") if p.suffix in (".html", ".css", ".svg")]
    assert any(p.name == "katex.min.css" for p in files), "KaTeX's stylesheet is not in the site"
    for path in files:
        for url in _fetched_urls(path):
            parts = urllib.parse.urlsplit(url)
            if parts.scheme == "data":
                continue
            if parts.scheme or parts.netloc:
                problems.append(f"{path.relative_to(site)} fetches {url}")
                continue
            target = (site / parts.path.lstrip("/")) if parts.path.startswith("/") else (path.parent / parts.path)
            if target.is_dir():
                target = target / "index.html"
            if parts.path and not target.exists():
                problems.append(f"{path.relative_to(site)} fetches {url}, which is not in the site")
    assert not problems, "\n".join(problems[:20])


# ---- in the browser ------------------------------------------------------------------------------
_PROBE = r"""(() => {
  const content = document.querySelector('.md-content') || document.body;
  const walker = document.createTreeWalker(content, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest('pre, code, .katex') ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
  let text = '';
  while (walker.nextNode()) text += walker.currentNode.nodeValue;
  const math = [...content.querySelectorAll('.arithmatex')];
  return {
    title: document.title,
    arithmatex: math.length,
    unrendered: math.filter(e => !e.querySelector('.katex')).map(e => e.textContent.slice(0, 80)),
    katex: content.querySelectorAll('.katex').length,
    errors: [...content.querySelectorAll('.katex-error')].map(e => e.textContent.slice(0, 120)),
    raw: ['\\(', '\\)', '\\[', '\\]', '$$'].filter(d => text.includes(d)),
    nav: [...document.querySelectorAll('nav.md-nav--primary a.md-nav__link[href]')].map(a => a.href),
  };
})()"""


def test_pages_render_math_offline_and_are_reachable(site, browser):
    chromium, server = browser
    origin = server.origin
    to_visit, seen, problems = [origin + "/"], set(), []
    math_pages = 0
    while to_visit:
        url = to_visit.pop(0)
        if url in seen:
            continue
        seen.add(url)
        probe, events = chromium.open(url, _PROBE)
        page = url[len(origin) + 1:] or "(home)"
        outside = [u for u in request_urls(events) if not is_local(u, origin)]
        problems += [f"{page}: requested {u}" for u in outside]
        problems += [f"{page}: {f}" for f in failures(events)]
        if probe["arithmatex"]:
            math_pages += 1
            if not probe["katex"]:
                problems.append(f"{page}: {probe['arithmatex']} formulas, none rendered by KaTeX")
        problems += [f"{page}: formula not rendered: {t!r}" for t in probe["unrendered"]]
        problems += [f"{page}: KaTeX error: {t!r}" for t in probe["errors"]]
        problems += [f"{page}: raw math delimiter {d!r} left in the text" for d in probe["raw"]]
        for href in probe["nav"]:
            link = href.split("#")[0]
            if link.startswith(origin + "/") and link not in seen:
                to_visit.append(link)
    assert not problems, "\n".join(problems[:30])
    unreachable = {origin + "/" + p for p in _pages(site)} - seen
    assert not unreachable, f"pages not reachable from the navigation: {sorted(unreachable)}"
    assert math_pages >= 7, f"only {math_pages} pages have math; the derivation pages should"
    # server.refused may list the browser's own background requests (Debian's launcher gives it API
    # keys); they were refused locally, and the page's requests are the ones checked above.


# ---- layout: nothing overflows at 1280 px, no control bytes; a screenshot of every page -------------
WIDTH = 1280
SCREENSHOTS = Path(os.environ.get("GDN2_DOCS_SCREENSHOTS") or Path(tempfile.gettempdir()) / "gdn2-docs-screenshots")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\r]")   # a CR is folded into a newline by the HTML parser,
                                                                # so the bytes are checked before the browser sees them
_LAYOUT = r"""(() => {
  const px = 1;   // sub-pixel rounding
  const wide = (el) => el.scrollWidth > el.clientWidth + px;
  const what = (el) => (el.textContent || '').replace(/\s+/g, ' ').trim().slice(0, 70);
  const closed = [...document.querySelectorAll('details:not([open])')];
  closed.forEach(d => d.open = true);           // collapsed blocks are measured open, then closed again
  const out = [];
  const page = document.scrollingElement;
  if (wide(page)) out.push(`the page is ${page.scrollWidth} px wide in a ${page.clientWidth} px window`);
  const content = document.querySelector('.md-content') || document.body;
  const column = content.querySelector('.md-typeset') || content;
  for (const el of content.querySelectorAll('.katex-display'))
    if (wide(el)) out.push(`display math overflows by ${el.scrollWidth - el.clientWidth} px: ${what(el)}`);
  for (const el of content.querySelectorAll('pre, pre > code'))
    if (wide(el)) out.push(`listing clipped by ${el.scrollWidth - el.clientWidth} px: ${what(el)}`);
  for (const el of content.querySelectorAll('table')) {   // in a scroll wrapper or not: no hidden columns
    const box = (el.closest('.md-typeset__scrollwrap') || el.parentElement).getBoundingClientRect();
    if (el.getBoundingClientRect().width > box.width + px || wide(el)) out.push(`table overflows: ${what(el)}`);
  }
  for (const el of content.querySelectorAll('svg, img'))
    if (el.getBoundingClientRect().right > column.getBoundingClientRect().right + px)
      out.push(`figure overflows: ${el.getAttribute('aria-label') || el.getAttribute('alt') || el.tagName}`);
  closed.forEach(d => d.open = false);
  return out;
})()"""


def _page_sources() -> list[str]:
    """Every page of docs/ (mkdocs.yml excludes hooks/ and /figures/, which hold no .md)."""
    return sorted(p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").rglob("*.md")
                  if "hooks" not in p.parts and "figures" not in p.relative_to(ROOT / "docs").parts[:1])


def _url(source: str) -> str:
    """docs/x/y.md -> x/y/ and x/index.md -> x/ (use_directory_urls)."""
    stem = source[: -len(".md")]
    return "" if stem == "index" else (stem[: -len("index")] if stem.endswith("/index") else stem + "/")


@pytest.fixture(scope="module")
def screenshots():
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    return SCREENSHOTS


@pytest.mark.parametrize("source", _page_sources())
def test_page_fits_1280px_without_control_bytes(site, browser, screenshots, source):
    """At 1280 px no display formula, listing, table or figure of the page (collapsed blocks opened) is
    wider than its box and the page does not scroll sideways; neither the page's source nor its HTML holds a control
    byte (a stray CR once turned \\rceil into "ceil"). The page is saved as a PNG in SCREENSHOTS."""
    chromium, server = browser
    page = _url(source)
    problems = []
    for path in (ROOT / "docs" / source, site / page / "index.html"):
        bad = _CONTROL.findall(path.read_bytes().decode("utf-8"))   # bytes: read_text would fold a CR into \\n
        if bad:
            problems.append(f"{path.relative_to(ROOT if path.is_relative_to(ROOT) else site)}: "
                            f"control bytes {sorted(set(map(repr, bad)))}")
    chromium.set_viewport(WIDTH, 900)
    layout, _ = chromium.open(f"{server.origin}/{page}", _LAYOUT)
    problems += layout
    chromium.screenshot(str(screenshots / ((page.strip("/").replace("/", "_") or "index") + ".png")))
    assert not problems, f"{source} at {WIDTH} px (screenshot in {screenshots}):\n" + "\n".join(problems)


# ---- snippets: a missing file or section fails the build ---------------------------------------------
def _snippet_site(tmp_path: Path, include: str) -> Path:
    """A one-page site with the markdown extensions of mkdocs.yml, including `include`."""
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f'# t\n\n```python\n--8<-- "{include}"\n```\n', encoding="utf-8")
    cfg = {"site_name": "t", "docs_dir": str(tmp_path / "docs"), "site_dir": str(tmp_path / "site"),
           "markdown_extensions": config["markdown_extensions"], "strict": True}
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


@pytest.mark.parametrize("include, ok", [
    pytest.param("reference/ops/recurrent.py:recurrent_step", True, id="present-section"),
    pytest.param("reference/ops/recurrent.py:no_such_section", False, id="missing-section"),
    pytest.param("reference/ops/no_such_file.py", False, id="missing-file"),
])
def test_snippet_includes_are_checked(tmp_path, include, ok):
    _need(_has_mkdocs(), 'the docs extra (pip install -e ".[docs]")')
    config = _snippet_site(tmp_path, include)
    build = _mkdocs("build", "-f", str(config), timeout=120)
    assert (build.returncode == 0) == ok, build.stdout + build.stderr
    if ok:
        page = (tmp_path / "site" / "index.html").read_text(encoding="utf-8")
        assert "recurrent_step" in page and "S_bar" in page


def _has_mkdocs() -> bool:
    try:
        import mkdocs  # noqa: F401
    except ImportError:
        return False
    return True


# ---- checks of the derivation pages (each page includes its check from here) -------------------------
# These run on the CPU in float64 unless the point is float32 overflow; they need no docs extra.
def _f64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


def _u64(*shape):
    return torch.rand(*shape, dtype=torch.float64)


# --8<-- [start:test_state_orientation_and_order]
def test_state_orientation_and_order():
    """The state is key-major (o = Sᵀ(scale·q)) and the decay acts before the erase."""
    K, V, scale = 5, 3, 0.7
    q, k, v, S0 = _f64(K), torch.nn.functional.normalize(_f64(K), dim=0), _f64(V), _f64(K, V)
    g, b, w = -_u64(K), _u64(K), _u64(V)
    lift = lambda x: x[None, None, None]                                   # one token: [1, 1, 1, dim]
    o, S1 = recurrent_gdn2(lift(q), lift(k), lift(v), lift(g), lift(b), lift(w), scale=scale,
                           initial_state=S0[None, None], output_final_state=True)
    decay = torch.diag(g.exp())                                            # Diag(α)
    erase = torch.eye(K, dtype=torch.float64) - torch.outer(k, b * k)      # I − k eᵀ
    write = torch.outer(k, w * v)                                          # k zᵀ
    assert torch.allclose(S1[0, 0], erase @ decay @ S0 + write, rtol=1e-12, atol=1e-12)     # decay, then erase
    assert not torch.allclose(S1[0, 0], decay @ erase @ S0 + write, rtol=1e-6, atol=1e-6)   # not the reverse
    assert torch.allclose(o[0, 0, 0], S1[0, 0].T @ (scale * q), rtol=1e-12, atol=1e-12)   # o = Sᵀ(scale·q)
# --8<-- [end:test_state_orientation_and_order]


# --8<-- [start:test_fast_weight_minimiser]
def test_fast_weight_minimiser():
    """S_t minimises ‖S − S̄‖² − 2⟨Sᵀk, z − S̄ᵀe⟩: the loss is ‖S − S_t‖² plus a constant."""
    K, V = 6, 5
    S_prev, q, k, v = _f64(K, V), _f64(K), _f64(K), _f64(V)
    g = -_u64(K)
    b, w = _u64(K), _u64(V)
    _, S_t = recurrent_step(S_prev[None, None], q[None, None], k[None, None], v[None, None], g[None, None],
                            b[None, None], w[None, None], scale=1.0)
    S_t = S_t[0, 0]
    S_bar, e, z = g.exp()[:, None] * S_prev, b * k, w * v

    def loss(S):
        return (S - S_bar).pow(2).sum() - 2 * (S.T @ k) @ (z - S_bar.T @ e)

    for _ in range(3):
        delta = _f64(K, V)
        assert torch.allclose(loss(S_t + delta), loss(S_t) + delta.pow(2).sum(), rtol=1e-12, atol=1e-12)
# --8<-- [end:test_fast_weight_minimiser]


# --8<-- [start:test_mamba2_is_erase_free_scalar_decay]
def test_mamba2_is_erase_free_scalar_decay():
    """b = 0, w = 1 and one decay per head give Mamba-2's SSD, whose masked-attention form is exact."""
    T, K, V = 20, 4, 3
    C_, B_, X = _f64(T, K), _f64(T, K), _f64(T, V)     # SSD's C, B and Δ·x
    a = -_u64(T)                        # log-decay Δ·A per token
    lift = lambda x: x[None, :, None]
    o, _ = recurrent_gdn2(lift(C_), lift(B_), lift(X), lift(a[:, None].expand(T, K)), lift(torch.zeros(T, K,
                          dtype=torch.float64)), lift(torch.ones(T, V, dtype=torch.float64)), scale=1.0)
    L = a.cumsum(0)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    decay = torch.where(mask, (L[:, None] - L[None, :]).clamp_max(0), float("-inf")).exp()  # [T, T]
    assert torch.allclose(o[0, :, 0], (decay * (C_ @ B_.T)) @ X, rtol=1e-12, atol=1e-12)
# --8<-- [end:test_mamba2_is_erase_free_scalar_decay]


# --8<-- [start:test_gated_delta_has_no_masked_attention_form]
def test_gated_delta_has_no_masked_attention_form():
    """With an erase (b ≠ 0) the output is no longer Σ_s (decayed qᵀk_s) z_s: the erase couples tokens."""
    T, K, V = 12, 4, 3
    q, k, v = _f64(T, K), torch.nn.functional.normalize(_f64(T, K), dim=-1), _f64(T, V)
    g = -_u64(T, K)
    w = _u64(T, V)
    G = g.cumsum(0)
    decay = torch.where(torch.ones(T, T, dtype=torch.bool).tril()[..., None],
                        (G[:, None] - G[None, :]).clamp_max(0), float("-inf")).exp()       # [T, T, K]
    linear_attention = torch.einsum("rd,sd,rsd->rs", q, k, decay) @ (w * v)
    lift = lambda x: x[None, :, None]
    for b_scale, equal in ((0.0, True), (0.5, False)):
        b = b_scale * torch.ones(T, K, dtype=torch.float64)
        o, _ = recurrent_gdn2(lift(q), lift(k), lift(v), lift(g), lift(b), lift(w), scale=1.0)
        assert torch.allclose(o[0, :, 0], linear_attention, rtol=1e-10, atol=1e-10) == equal
# --8<-- [end:test_gated_delta_has_no_masked_attention_form]


# --8<-- [start:test_factorised_decay_overflows]
def test_factorised_decay_overflows():
    """exp(G_r)·exp(−G_s) is exp(G_r − G_s) on paper; in float32 one chunk of g = −1.5 makes it inf·0."""
    C, K = 64, 8
    k = torch.nn.functional.normalize(torch.randn(C, K), dim=-1)
    b = torch.rand(C, K)
    G = chunk_local_cumsum(torch.full((1, C, K), -1.5))[0].float()           # G_C = −96 < −88.7
    assert torch.isinf(torch.exp(-G)).any()                                  # exp(−G) overflows float32
    naive = ((b * k * torch.exp(G)) @ (k * torch.exp(-G)).T).tril(-1)
    assert not torch.isfinite(naive).all()                                   # inf and inf·0 = nan appear
    pairwise = chunk_intra_t(k, b, G)                                        # exp(G_r − G_s), masked first
    exact = chunk_intra_t(k.double(), b.double(), G.double())
    assert torch.isfinite(pairwise).all()
    assert torch.allclose(pairwise.double(), exact, rtol=1e-5, atol=1e-6)
# --8<-- [end:test_factorised_decay_overflows]


def _anchored_t(k, b, G, anchor):
    """T with every pairwise exponent split at one anchor row a: exp(G_r − G_a)·exp(G_a − G_s)."""
    left = b * k * torch.exp(G - G[anchor])
    right = k * torch.exp(G[anchor] - G)
    return (left @ right.T).tril(-1)


# --8<-- [start:test_anchor_must_be_causal]
def test_anchor_must_be_causal():
    """Split at an anchor a, row r of T reads g of tokens up to a. A causal anchor (a ≤ every row it
    serves, ≥ every column) keeps both factors ≤ 1; a mid-block anchor makes early rows depend on later
    tokens, which a later g = −1e4 turns into inf·0 = nan."""
    C, K, n_valid, cut = 64, 8, 40, 20                  # a partly filled block: tokens 40..63 are padding
    k = torch.nn.functional.normalize(_f64(C, K), dim=-1)
    b = _u64(C, K)
    g = -_u64(C, K)
    g[n_valid:] = 0.0                                   # padding: no decay, k = 0 below
    k[n_valid:] = 0.0
    g_later = g.clone()
    g_later[cut:n_valid] = -1e4                         # change only tokens at and after the cut
    mid = C // 2
    for gg in (g, g_later):
        G = chunk_local_cumsum(gg[None])[0]
        # the off-diagonal tile rows [cut, C) x columns [0, cut): anchor at the tile's first row
        tile = _anchored_t(k, b, G, anchor=cut)[cut:, :cut]
        assert torch.isfinite(tile).all()
        assert torch.allclose(tile, chunk_intra_t(k, b, G)[cut:, :cut], rtol=1e-12, atol=1e-12)
    early_mid = [_anchored_t(k, b, chunk_local_cumsum(gg[None])[0], anchor=mid)[:cut] for gg in (g, g_later)]
    early_exact = [chunk_intra_t(k, b, chunk_local_cumsum(gg[None])[0])[:cut] for gg in (g, g_later)]
    assert torch.equal(early_exact[0], early_exact[1])  # the exact rows before the cut do not move
    assert not torch.isfinite(early_mid[1]).all()       # the mid-block anchor's rows do
# --8<-- [end:test_anchor_must_be_causal]


# --8<-- [start:test_wy_residual_is_the_recurrent_write]
def test_wy_residual_is_the_recurrent_write():
    """Row r of R = U − Y S_0 is u_r = z_r − S̄_rᵀ(b_r⊙k_r), the write the recurrence makes at token r."""
    C, K, V = 16, 6, 5
    k, v = torch.nn.functional.normalize(_f64(C, K), dim=-1), _f64(C, V)
    g = -_u64(C, K)
    b, w = 2 * _u64(C, K), _u64(C, V)
    S0 = _f64(K, V)
    u, S = [], S0                                       # the recurrence, token by token
    for r in range(C):
        S_bar = g[r].exp()[:, None] * S
        u.append(w[r] * v[r] - S_bar.T @ (b[r] * k[r]))
        S = S_bar + torch.outer(k[r], u[-1])
    key = lambda x: x[None, None, None]                 # [N, H, NC, C, K] with N = H = NC = 1
    val = lambda x: x[None, None, None, None]           # [N, H, Gr, NC, C, V]
    G = chunk_local_cumsum(key(g))
    A = solve_unit_lower(chunk_intra_t(key(k), key(b), G))
    Y, U = chunk_wy(A, key(k), key(b), G, val(v), val(w))
    _, R, S_C = chunk_state_passing(key(k), G, Y, U, S0[None, None, None])
    assert torch.allclose(R[0, 0, 0, 0], torch.stack(u), rtol=1e-12, atol=1e-12)
    assert torch.allclose(S_C[0, 0, 0], S, rtol=1e-12, atol=1e-12)
# --8<-- [end:test_wy_residual_is_the_recurrent_write]


# --8<-- [start:test_scalar_post_scale_needs_tied_gates]
@pytest.mark.parametrize("tied", [pytest.param(True, id="tied-kda"), pytest.param(False, id="untied-gdn2")])
def test_scalar_post_scale_needs_tied_gates(tied):
    """dA = dU Zᵀ + dY Ēᵀ. KDA computes it from ungated V and γ⊙K and scales column s by β_s afterwards;
    with channel-wise b ≠ w no per-column scalar c_s (not even the least-squares best) reproduces dA."""
    C, K, V = 16, 8, 8
    k, v, G = _f64(C, K), _f64(C, V), (-torch.rand(C, K)).double().cumsum(0)
    dU, dY = _f64(C, V), _f64(C, K)
    if tied:
        beta = _u64(C, 1)
        b, w = beta.expand(C, K), beta.expand(C, V)
    else:
        b, w = _u64(C, K), _u64(C, V)
    gamma = G.exp()
    dA = dU @ (w * v).T + dY @ (gamma * b * k).T                 # gate-aware: each side with its gates
    ungated = dU @ v.T + dY @ (gamma * k).T                      # what a post-scaled kernel accumulates
    c = (dA * ungated).sum(0) / ungated.pow(2).sum(0)            # best scalar per column s
    err = rel_rms(ungated * c, dA)
    assert (err < 1e-12) if tied else (err > 1e-2), err
# --8<-- [end:test_scalar_post_scale_needs_tied_gates]


# --8<-- [start:test_gla_is_erase_free_with_unit_write]
def test_gla_is_erase_free_with_unit_write():
    """Gated linear attention, S_t = Diag(α_t) S_{t-1} + k_t v_tᵀ, is GDN-2 with b = 0 (no erase, so no
    delta rule) and w = 1 (the value written as it is); any other w is GLA on the values w ⊙ v."""
    T, K, V = 20, 4, 3
    q, k, v, S = _f64(T, K), _f64(T, K), _f64(T, V), _f64(K, V)
    g = -_u64(T, K)
    outs, S_gla = [], S                                  # GLA, written independently
    for t in range(T):
        S_gla = g[t].exp()[:, None] * S_gla + torch.outer(k[t], v[t])
        outs.append(S_gla.T @ q[t])
    lift = lambda x: x[None, :, None]
    for w, values in ((torch.ones(T, V, dtype=torch.float64), v), (_u64(T, V), None)):
        o, S_T = recurrent_gdn2(lift(q), lift(k), lift(v), lift(g), lift(torch.zeros(T, K, dtype=torch.float64)),
                                lift(w), scale=1.0, initial_state=S[None, None], output_final_state=True)
        if values is None:                               # w ≠ 1: GLA of the gated values w ⊙ v
            S_w, outs_w = S, []
            for t in range(T):
                S_w = g[t].exp()[:, None] * S_w + torch.outer(k[t], w[t] * v[t])
                outs_w.append(S_w.T @ q[t])
            assert not torch.allclose(o[0, :, 0], torch.stack(outs), rtol=1e-6, atol=1e-6)
            assert torch.allclose(o[0, :, 0], torch.stack(outs_w), rtol=1e-12, atol=1e-12)
        else:
            assert torch.allclose(o[0, :, 0], torch.stack(outs), rtol=1e-12, atol=1e-12)
            assert torch.allclose(S_T[0, 0], S_gla, rtol=1e-12, atol=1e-12)
# --8<-- [end:test_gla_is_erase_free_with_unit_write]


# --8<-- [start:test_erase_transition_is_not_normal]
def test_erase_transition_is_not_normal():
    """I − k(b⊙k)ᵀ has eigenvalues 1 and 1 − kᵀ(b⊙k), all in [0, 1] for b ∈ [0, 1]; but it is not
    symmetric, so its norm can exceed 1, and a product of two such transitions can have an eigenvalue
    above 1: without decay, alternating two tokens grows the state geometrically."""
    def transition(degrees, b):
        k = torch.tensor([math.cos(math.radians(degrees)), math.sin(math.radians(degrees))], dtype=torch.float64)
        return torch.eye(2, dtype=torch.float64) - torch.outer(k, torch.tensor(b, dtype=torch.float64) * k), k

    M, _ = transition(45, [1.0, 0.0])
    assert torch.allclose(torch.linalg.eigvals(M).real.sort().values, torch.tensor([0.5, 1.0], dtype=torch.float64))
    assert abs(torch.linalg.matrix_norm(M, 2).item() - 1.1441) < 1e-4            # ‖M‖₂ = 1.144 > 1
    tied, _ = transition(45, [0.7, 0.7])                                           # b = β·1: symmetric, ‖·‖ ≤ 1
    assert torch.linalg.matrix_norm(tied, 2).item() <= 1 + 1e-12
    (M1, k1), (M2, k2) = transition(30, [0.0, 1.0]), transition(60, [1.0, 0.0])
    eigenvalues, eigenvectors = torch.linalg.eig(M2 @ M1)
    top = eigenvalues.abs().argmax()
    rho = eigenvalues.abs()[top].item()
    assert abs(rho - 1.2303) < 1e-4                                                # a pair grows by 1.23
    pairs = 20                                                                     # the recurrence itself:
    k = torch.stack([k1, k2] * pairs)                                              # g = 0, w = 0
    b = torch.tensor([[0.0, 1.0], [1.0, 0.0]] * pairs, dtype=torch.float64)
    zeros = lambda *s: torch.zeros(*s, dtype=torch.float64)
    S0 = eigenvectors[:, top].real[:, None]                                        # [K, V = 1]
    lift = lambda x: x[None, :, None]
    _, S = recurrent_gdn2(lift(zeros(2 * pairs, 2)), lift(k), lift(zeros(2 * pairs, 1)), lift(zeros(2 * pairs, 2)),
                          lift(b), lift(zeros(2 * pairs, 1)), initial_state=S0[None, None], output_final_state=True)
    assert torch.allclose(S[0, 0].norm() / S0.norm(), torch.tensor(rho, dtype=torch.float64) ** pairs, rtol=1e-9)
# --8<-- [end:test_erase_transition_is_not_normal]


# --8<-- [start:test_decoupled_gates_do_what_tied_gates_cannot]
def test_decoupled_gates_do_what_tied_gates_cannot():
    """A memory S holds m = Sᵀk along a unit key k. Decoupled gates can forget it without writing the
    token's value (b = 1, w = 0: Sᵀk becomes 0) or add the value without forgetting (b = 0, w = 1:
    Sᵀk becomes m + v). A tied gate b = w = β·1 gives Sᵀk = (1 − β)m + βv, a point on the line through
    m and v: no β in [0, 2], not even the best one, reaches either target."""
    K, V = 6, 4
    gen = torch.Generator().manual_seed(5)
    k = torch.nn.functional.normalize(torch.randn(K, generator=gen, dtype=torch.float64), dim=0)
    S0, v = torch.randn(K, V, generator=gen, dtype=torch.float64), torch.randn(V, generator=gen, dtype=torch.float64)
    m = S0.T @ k                                                         # what the memory returns for k
    other = torch.nn.functional.normalize(torch.randn(K, generator=gen, dtype=torch.float64), dim=0)
    other = other - (other @ k) * k                                      # a key orthogonal to k

    def step(b, w):                                                      # one token, no decay
        _, S = recurrent_step(S0[None, None], k[None, None], k[None, None], v[None, None],
                              torch.zeros(1, 1, K, dtype=torch.float64), b * torch.ones(1, 1, K, dtype=torch.float64),
                              w * torch.ones(1, 1, V, dtype=torch.float64), scale=1.0)
        return S[0, 0]

    for (b, w), target in (((1.0, 0.0), torch.zeros(V, dtype=torch.float64)), ((0.0, 1.0), m + v)):
        S = step(b, w)
        assert torch.allclose(S.T @ k, target, atol=1e-12)               # decoupled: exactly the target
        assert torch.allclose(S.T @ other, S0.T @ other, atol=1e-12)     # and nothing else moves
        beta = ((target - m) @ (v - m) / (v - m).pow(2).sum()).clamp(0, 2)   # the best tied gate
        assert torch.allclose(step(beta.item(), beta.item()).T @ k, (1 - beta) * m + beta * v, atol=1e-12)
        miss = ((1 - beta) * m + beta * v - target).norm() / m.norm()
        assert miss > 0.1, miss                                          # tied: short of it
# --8<-- [end:test_decoupled_gates_do_what_tied_gates_cannot]


# --8<-- [start:test_masking_after_exp_breaks_the_backward]
def test_masking_after_exp_breaks_the_backward():
    """One float32 chunk with g = −1.5: above the diagonal G_r − G_s reaches +94 > 88.7, so exp gives inf
    there. Multiplying by a 0/1 mask makes the forward nan (inf·0). Selecting after exp (torch.where,
    masked_fill, tril) keeps the forward finite, but the backward of exp multiplies the zero gradient of
    the dropped entries by exp(diff) = inf: 0·inf = nan in dg. Masking the exponent with −inf before exp
    (pairwise_decay) keeps forward and backward finite."""
    C, K = 64, 8
    gen = torch.Generator().manual_seed(0)
    k = torch.nn.functional.normalize(torch.randn(C, K, generator=gen), dim=-1)
    b = torch.rand(C, K, generator=gen)
    causal = torch.ones(C, C, dtype=torch.bool).tril(-1)[..., None]
    masks = {
        "multiply": lambda diff: diff.exp() * causal,
        "select after exp": lambda diff: torch.where(causal, diff.exp(), 0.0),
        "select before exp": lambda diff: torch.where(causal, diff, -torch.inf).exp(),
    }
    finite = {}
    for name, mask in masks.items():
        g = torch.full((C, K), -1.5, requires_grad=True)
        G = g.cumsum(0)
        T = torch.einsum("rd,sd,rsd->rs", b * k, k, mask(G[:, None] - G[None]))
        (grad,) = torch.autograd.grad(T.sum(), g)
        finite[name] = (bool(torch.isfinite(T).all()), bool(torch.isfinite(grad).all()))
    assert finite == {"multiply": (False, False), "select after exp": (True, False),
                      "select before exp": (True, True)}
# --8<-- [end:test_masking_after_exp_breaks_the_backward]


# ---- the backward page's formulas, read from the page, against autograd ---------------------------------
_TOTALS = re.compile(r'```python title="The total gradients[^"]*"\n(.*?)```', re.S)


def _backward_page_listing() -> str:
    blocks = _TOTALS.findall((ROOT / "docs" / "backward.md").read_text(encoding="utf-8"))
    assert len(blocks) == 1, f"docs/backward.md has {len(blocks)} 'The total gradients' listings, expected one"
    return blocks[0]


def test_backward_page_formulas():
    """The total gradients as the backward page writes them (its listing, executed as it is on the page)
    equal autograd through the float64 recurrence for every input; db without the path through the
    rows E = B ⊙ K of T (the erase direction inside T) is wrong by most of its size."""
    NC, C, K, V, scale = 3, 8, 5, 4, 0.6
    x = make_inputs(1, NC * C, 1, 1, K, V, seed=3)
    do = torch.randn(1, NC * C, 1, V, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    dht = torch.randn(1, 1, K, V, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    leaves = {n: t.clone().requires_grad_() for n, t in x.items()}
    o, ht = recurrent_gdn2(**leaves, scale=scale, output_final_state=True)
    grads = dict(zip(leaves, torch.autograd.grad((o * do).sum() + (ht * dht).sum(), list(leaves.values()))))
    chunked = lambda t: t[0, :, 0].reshape(NC, C, -1)
    ns = {"torch": torch, "NC": NC, "C": C, "scale": scale, "h0": x["initial_state"][0, 0], "dO": chunked(do),
          "dSN": dht[0, 0], **{n: chunked(x[n]) for n in "qkvgbw"}}
    exec(compile(_backward_page_listing(), "docs/backward.md", "exec"), ns)
    for name, ref in grads.items():
        page = ns["dh0" if name == "initial_state" else "d" + name].reshape(ref.shape)
        assert rel_rms(page, ref) < 1e-12, (name, rel_rms(page, ref))
    without_T = (ns["k"] * ns["Gam"] * ns["dEbar"]).reshape(grads["b"].shape)   # dB = dĒ ⊙ Γ ⊙ K alone
    assert rel_rms(without_T, grads["b"]) > 0.5


# ---- GDN2 in 60 lines ------------------------------------------------------------------------------------
# --8<-- [start:test_minimal_listing_is_the_recurrence]
@pytest.mark.parametrize("C", [8, 16, 64])
def test_minimal_listing_is_the_recurrence(C):
    """examples/gdn2_minimal.py equals the float64 recurrence: T = 37 is no multiple of C (and below 64),
    K ≠ V, two heads, two sequences, an initial state, b up to 2."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from gdn2_minimal import gdn2_chunked
    finally:
        sys.path.remove(str(ROOT / "examples"))
    x = make_inputs(2, 37, 2, 2, 5, 3, seed=11)
    o_ref, S_ref = recurrent_gdn2(**x, output_final_state=True)
    o, S = gdn2_chunked(x["q"], x["k"], x["v"], x["g"], x["b"], x["w"], chunk_size=C,
                        initial_state=x["initial_state"])
    assert rel_rms(o, o_ref) < 1e-10 and rel_rms(S, S_ref) < 1e-10
# --8<-- [end:test_minimal_listing_is_the_recurrence]


def test_minimal_listing_fits_60_lines():
    lines = (ROOT / "examples" / "gdn2_minimal.py").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 60, len(lines)


# ---- figures, macros, citations ---------------------------------------------------------------------------
def test_figures_are_generated_by_their_script():
    """docs/assets/figures/*.svg are exactly what docs/figures/make_figures.py draws (no hand edits, no drift)."""
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "figures" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    drawn = module.figures()
    committed = {p.name: p.read_text(encoding="utf-8") for p in (ROOT / "docs" / "assets" / "figures").glob("*.svg")}
    assert set(committed) == set(drawn), "figures without a generator, or generated figures not committed"
    stale = [name for name in drawn if committed[name] != drawn[name]]
    assert not stale, f"run python docs/figures/make_figures.py: {stale}"


DERIVATION_PAGES = ["notation.md", "recurrence.md", "chunking.md", "decay.md", "wy.md", "chunk-equations.md",
                    "backward.md"]


@pytest.mark.parametrize("page", DERIVATION_PAGES)
def test_derivation_page_has_a_figure(page):
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    assert re.search(r"!\[[^\]]*\]\(assets/figures/[\w-]+\.svg\)", text), f"{page} shows no figure"


def _macros():
    """docs/hooks/gdn2_macros.py as a module (it imports mkdocs: the docs extra)."""
    _need(_has_mkdocs(), 'the docs extra (pip install -e ".[docs]")')
    spec = importlib.util.spec_from_file_location("gdn2_macros", ROOT / "docs" / "hooks" / "gdn2_macros.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_macros_read_the_csvs():
    m = _macros()
    page = ('{{ csv("fwd-NVIDIA_H200", "shape=8x2048,impl=ours", "ms", ".4f") }} / '
            '{{ ratio("benchmarks/results/fwd-NVIDIA_H200.csv", "impl=peer", "impl=ours", where="shape=8x2048") }} / '
            '{{ card("fwd-NVIDIA_H200") }} / $x^{{2}}$')
    assert m.expand(page) == "0.9247 / 1.11 / NVIDIA H200 / $x^{{2}}$"


@pytest.mark.parametrize("macro, error", [
    ('{{ csv("fwd-NVIDIA_H200", "shape=9x9,impl=ours", "ms") }}', "0 rows match"),
    ('{{ csv("fwd-NVIDIA_H200", "shape=8x2048", "ms") }}', "3 rows match"),
    ('{{ csv("fwd-NVIDIA_H200", "shape=8x2048,impl=ours", "no_such_col") }}', "no column"),
    ('{{ csv("fwd-NVIDIA_H200", "nope=1", "ms") }}', "no column"),
    ('{{ csv("no-such-file", "impl=ours", "ms") }}', "no file"),
    ('{{ ratio("fwd-NVIDIA_H200", "impl=peer", "impl=nobody", where="shape=8x2048") }}', "0 rows match"),
])
def test_a_missing_row_fails_the_build(tmp_path, macro, error):
    """A page citing a row, column or file that is not there does not build (strict or not)."""
    _need(_has_mkdocs(), 'the docs extra (pip install -e ".[docs]")')
    yaml = pytest.importorskip("yaml")
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "index.md").write_text(f"# t\n\nThe forward takes {macro} ms.\n", encoding="utf-8")
    cfg = {"site_name": "t", "docs_dir": str(tmp_path / "docs"), "site_dir": str(tmp_path / "site"),
           "hooks": [str(ROOT / "docs" / "hooks" / "gdn2_macros.py")]}
    (tmp_path / "mkdocs.yml").write_text(yaml.safe_dump(cfg), encoding="utf-8")
    build = _mkdocs("build", "-f", str(tmp_path / "mkdocs.yml"), timeout=120)
    assert build.returncode != 0 and error in build.stdout + build.stderr, build.stdout + build.stderr


def test_typed_numbers_are_found():
    m = _macros()
    assert m.typed_numbers("took 1.23 ms, 4.5× faster, 2306 MiB") == ["1.23 ms", "4.5×", "2306 MiB"]
    assert m.typed_numbers("a 16×16 tile, $x = 3 ms$, `9 ms`, {{ csv(a) }} µs, 8×2K") == []


def test_pages_cite_no_outside_documents():
    """No page, hook, setting or included test refers the reader to a document that is not on the site."""
    pages = [p for p in (ROOT / "docs").rglob("*") if p.suffix in (".md", ".py", ".yml")]
    files = [*pages, ROOT / "mkdocs.yml", ROOT / "tests" / "test_docs.py", ROOT / "tests" / "docs_browser.py"]
    outside = re.compile("SPEC" + r"\s*§\s*\d+|[Hh]ouse" + " style")
    hits = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in files for m in outside.finditer(p.read_text("utf-8"))]
    assert not hits, "\n".join(hits)


def _bench_hook():
    spec = importlib.util.spec_from_file_location("gdn2_bench", ROOT / "docs" / "hooks" / "gdn2_bench.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_new_csvs_are_listed_not_fatal(tmp_path):
    """A CSV the performance page does not know (a layer benchmark, another card, another schema) is
    plotted when it has the benchmark columns and listed, collapsed, under "Other results"."""
    bench = _bench_hook()
    for p in (ROOT / "benchmarks" / "results").glob("*.csv"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "layer-NVIDIA_H200.csv").write_text(
        "mode,shape,impl,ms,peak_mib,card\n" + "".join(
            f"layer,{b}x{t},{impl},{ms},100,NVIDIA H200\n"
            for b, t in ((8, 2048), (1, 16384)) for impl, ms in (("ours", 1.5), ("peer", 1.7))), encoding="utf-8")
    (tmp_path / "notes-NVIDIA_B200.csv").write_text("what,value\nsomething,1\n", encoding="utf-8")
    results = bench.load_results(tmp_path)
    plots = bench.plots(results)
    assert "layer-NVIDIA_H200-layer.svg" in plots and plots["layer-NVIDIA_H200-layer.svg"].startswith("<svg")
    placed = {n for n in results if n not in ("layer-NVIDIA_H200", "notes-NVIDIA_B200")}   # the two above
    other = bench.other_markdown(results, placed)
    assert other.startswith('??? note "Other results (2 files)"')
    assert "layer-NVIDIA_H200.csv" in other and "notes-NVIDIA_B200.csv" in other
    # a column with one value in every row is said once, not repeated in the table
    assert "In every row: mode = layer, peak_mib = 100, card = NVIDIA H200." in other and "| card" not in other
    assert "plots/layer-NVIDIA_H200-layer.svg" in other
    assert "NVIDIA H200" in bench.summary_markdown(results)


def _bars(svg: str, attr: str) -> dict[str, tuple[float, float]]:
    """title of each bar ('LABEL: X ms') -> (its size along the value axis, X)."""
    found = re.findall(rf'<rect [^>]*\b{attr}="([\d.]+)"[^>]*><title>([^<]*): ([\d.e+-]+) ms</title></rect>', svg)
    return {html.unescape(t): (float(size), float(v)) for size, t, v in found}


def test_layer_plots_draw_the_csv_to_scale():
    """The layer page's bar charts: one bar per layer and shape, its height proportional to the CSV's time,
    the peer's time over ours above each group; the profile's segments proportional to their times, each
    bar ending in their sum. The page cites all three."""
    bench = _bench_hook()
    results = bench.load_results(ROOT / "benchmarks" / "results")
    name = "layer-NVIDIA_H100_80GB_HBM3"
    rows = results[name]
    charts = bench.plots({name: rows})
    assert set(charts) == {f"{name}-{m}.svg" for m in ("fwd", "train", "profile")}
    page = (ROOT / "docs" / "layer.md").read_text("utf-8")
    assert all(f"plots/{c}" in page for c in charts)
    for mode in ("fwd", "train"):
        svg = charts[f"{name}-{mode}.svg"]
        want = {(r["shape"], r["impl"]): float(r["ms"]) for r in rows
                if r["mode"] == mode and r["impl"] in bench.LAYER_IMPLS}
        bars = _bars(svg, "height")
        assert len(bars) == len(want)
        per_ms = [h / v for h, v in bars.values() if h > 20]            # sizes are written to 0.1 px
        assert max(per_ms) / min(per_ms) < 1.005, f"{mode}: bar heights not proportional to the times"
        assert sorted(v for _, v in bars.values()) == sorted(float(f"{v:g}") for v in want.values())  # as titled
        for shape in {s for s, _ in want}:
            # the ratio is of the default's row, or of "partial"'s where the default was not timed
            ours = want.get((shape, "ours")) or want[(shape, bench.PARTIAL)]
            suffix = "" if (shape, "ours") in want else " (partial)"
            if (shape, "peer") in want:
                assert f"{want[(shape, 'peer')] / ours:.2f}× the peer{suffix}" in svg
    svg = charts[f"{name}-profile.svg"]
    segments = _bars(svg, "width")
    profile = {r["impl"]: float(r["ms"]) for r in rows if r["mode"] == "profile"}
    assert len(segments) == len(profile)
    per_ms = [w / v for w, v in segments.values() if w > 20]            # sizes are written to 0.1 px
    assert max(per_ms) / min(per_ms) < 1.005, "segments not proportional to the times"
    ours = "ours" if any(k.startswith("ours:") for k in profile) else bench.PARTIAL   # the default where profiled
    for impl in (ours, "peer"):
        total = sum(v for k, v in profile.items() if k.startswith(impl + ":"))
        assert total > 0 and f">{total:.2f} ms</text>" in svg


def test_floors_are_for_the_card_of_the_csv():
    """Every floor on the performance page is computed for the card its CSV names (all H200 here)."""
    bench = _bench_hook()
    results = bench.load_results(ROOT / "benchmarks" / "results")
    # the operator's timing CSVs only: a table of compiled kernels' resources names an architecture, and
    # the layer's bar charts draw no floor
    cards = {(r.get("card") or "").strip() for rows in results.values()
             if bench._is_bench(rows) and not bench._is_layer(rows) for r in rows}
    assert cards <= set(bench.CARDS), f"no constants for {cards - set(bench.CARDS)}"
    h200 = bench.CARDS["NVIDIA H200"]
    # the forward memory floor at 8×2K, from the card's copy bandwidth: 2048 bytes per token and head
    assert math.isclose(bench.mode_floor_ms(h200, "fwd", "8x2048"), 8 * 2048 * 16 * 2048 / 4.3e12 * 1e3)


def test_macros_in_code_are_shown_not_expanded():
    m = _macros()
    text = 'write `{{ csv("x", "a=1", "ms") }}` to cite, e.g. {{ card("fwd-NVIDIA_H200") }}'
    assert m.expand(text) == 'write `{{ csv("x", "a=1", "ms") }}` to cite, e.g. NVIDIA H200'


# ---- the kernel pages: one program's view, in PyTorch, equal to the reference stage ----------------------
def _chunked_inputs(NC: int, C: int, K: int, V: int, seed: int, scale: float) -> dict:
    """One sequence and head, float64, on the chunked layout: q, k, g, b [NC, C, K]; v, w [NC, C, V]; and the
    intermediates the state kernels read (Y, Q_γ, K_tail, γ_C, A_qk, U), from the reference stages."""
    x = make_inputs(1, NC * C, 1, 1, K, V, seed=seed)
    c = {n: x[n][0, :, 0].reshape(NC, C, -1) for n in "qkvgbw"}
    G = chunk_local_cumsum(c["g"])
    A = solve_unit_lower(chunk_intra_t(c["k"], c["b"], G))
    c.update(x=x, S0=x["initial_state"][0, 0], G=G, Y=A @ (G.exp() * c["b"] * c["k"]), U=A @ (c["w"] * c["v"]),
             Qg=scale * G.exp() * c["q"], Kt=(G[:, -1:] - G).exp() * c["k"], gC=G[:, -1].exp(),
             Aqk=scale * torch.einsum("nrd,nsd,nrsd->nrs", c["q"], c["k"], pairwise_decay(G, strict=False)))
    return c


# --8<-- [start:one_program_state_output]
def one_program_state_output(Y, Qg, Kt, Aqk, U, gC, S0, v0, BV):
    """What one program of chunk_state_output_fwd_kernel computes: value columns v0 … v0 + BV − 1 of one
    sequence and value head, over its chunks (Y, Qg, Kt [NC, C, K]; Aqk [NC, C, C]; U [NC, C, V]; gC [NC, K])."""
    S = S0[:, v0:v0 + BV]                               # registers: [K, BV] for the whole sequence
    o = []
    for c in range(len(Y)):                             # in order: chunk c starts from the state c − 1 left
        R = U[c][:, v0:v0 + BV] - Y[c] @ S              # (4) residual writes, [C, BV]
        o.append(Qg[c] @ S + Aqk[c] @ R)                # (5) the chunk's output, [C, BV]
        S = gC[c][:, None] * S + Kt[c].T @ R            # (4) the end state: the next chunk's start
    return torch.stack(o), S
# --8<-- [end:one_program_state_output]


def test_one_program_of_the_state_kernel():
    """The programs of the state kernel's sketch, one per block of BV value columns, give the outputs and the
    final state of the float64 recurrence (V = 10 is no multiple of BV = 4: the last block is partial)."""
    NC, C, K, V, BV, scale = 3, 8, 5, 10, 4, 0.6
    c = _chunked_inputs(NC, C, K, V, seed=21, scale=scale)
    o_ref, S_ref = recurrent_gdn2(**c["x"], scale=scale, output_final_state=True)
    blocks = [one_program_state_output(c["Y"], c["Qg"], c["Kt"], c["Aqk"], c["U"], c["gC"], c["S0"], v0, BV)
              for v0 in range(0, V, BV)]
    o, S = torch.cat([o for o, _ in blocks], -1), torch.cat([s for _, s in blocks], -1)
    assert rel_rms(o.reshape(NC * C, V), o_ref[0, :, 0]) < 1e-12
    assert rel_rms(S, S_ref[0, 0]) < 1e-12


# --8<-- [start:one_program_state_bwd]
def one_program_state_bwd(Qg, Kt, Y, gC, Aqk, dO, dS_N, v0, BV):
    """What one program of chunk_bwd_state_kernel computes: value columns v0 … v0 + BV − 1 of one sequence and
    value head, over its chunks from the last to the first (dO [NC, C, V]; dS_N [K, V], the final state's)."""
    dS = dS_N[:, v0:v0 + BV]                            # registers: [K, BV] for the whole sequence
    dS_end, dR = [None] * len(Y), [None] * len(Y)
    for c in reversed(range(len(Y))):                   # in reverse: chunk c needs the gradient chunk c + 1 left
        dS_end[c] = dS                                  # the gradient of chunk c's end state
        dO_c = dO[c][:, v0:v0 + BV]
        dR[c] = Aqk[c].T @ dO_c + Kt[c] @ dS            # through O = … + A_qk R and S_C = … + K_tailᵀ R
        dS = gC[c][:, None] * dS + Qg[c].T @ dO_c - Y[c].T @ dR[c]   # the gradient of chunk c's start state
    return torch.stack(dS_end), torch.stack(dR), dS
# --8<-- [end:one_program_state_bwd]


def test_one_program_of_the_state_backward_kernel():
    """The sketch's programs, one per block of value columns, give the reference stage's gradients."""
    NC, C, K, V, BV, scale = 3, 8, 5, 10, 4, 0.6
    c = _chunked_inputs(NC, C, K, V, seed=22, scale=scale)
    gen = torch.Generator().manual_seed(23)
    dO, dS_N = torch.randn(NC, C, V, generator=gen, dtype=torch.float64), torch.randn(K, V, generator=gen,
                                                                                   dtype=torch.float64)
    lead = lambda t, group=False: t[None, None, None] if group else t[None, None]   # [N, H, (Gr,) ...]
    ends_ref, dR_ref, dh0_ref = chunk_bwd_state(lead(c["Qg"]), lead(c["Kt"]), lead(c["gC"]), lead(c["Y"]),
                                                lead(c["Aqk"]), lead(dO, True), lead(dS_N, True))
    blocks = [one_program_state_bwd(c["Qg"], c["Kt"], c["Y"], c["gC"], c["Aqk"], dO, dS_N, v0, BV)
              for v0 in range(0, V, BV)]
    ends, dR, dh0 = (torch.cat([blk[i] for blk in blocks], -1) for i in range(3))
    assert rel_rms(ends, ends_ref[0, 0, 0]) < 1e-12
    assert rel_rms(dR, dR_ref[0, 0, 0]) < 1e-12
    assert rel_rms(dh0, dh0_ref[0, 0, 0]) < 1e-12


# --8<-- [start:one_program_decode]
def one_program_decode(q, k, v, g, b, w, S0, v0, BV, scale):
    """What one program of fused_recurrent_fwd_kernel computes for one state block: value columns v0 … v0 + BV − 1
    of one sequence and value head, every token of the call (q, k, g, b [T, K]; v, w [T, V]; S0 [K, V])."""
    S = S0[:, v0:v0 + BV]                               # registers: [K, BV] for every token
    o = []
    for t in range(len(q)):
        S = torch.exp(g[t])[:, None] * S                # decay first, per key channel
        r = S.T @ (b[t] * k[t])                         # read along the gated erase direction, [BV]
        S = S + k[t][:, None] * (w[t, v0:v0 + BV] * v[t, v0:v0 + BV] - r)[None, :]
        o.append(S.T @ (scale * q[t]))                  # read out, [BV]
    return torch.stack(o), S
# --8<-- [end:one_program_decode]


def test_one_program_of_the_decoding_kernel():
    """The decoding sketch's programs, one per block of value columns, give the float64 recurrence."""
    T, K, V, BV, scale = 9, 5, 10, 4, 0.6
    x = make_inputs(1, T, 1, 1, K, V, seed=24)
    o_ref, S_ref = recurrent_gdn2(**x, scale=scale, output_final_state=True)
    tok = {n: x[n][0, :, 0] for n in "qkvgbw"}
    blocks = [one_program_decode(**tok, S0=x["initial_state"][0, 0], v0=v0, BV=BV, scale=scale)
              for v0 in range(0, V, BV)]
    o, S = torch.cat([o for o, _ in blocks], -1), torch.cat([s for _, s in blocks], -1)
    assert rel_rms(o, o_ref[0, :, 0]) < 1e-12 and rel_rms(S, S_ref[0, 0]) < 1e-12


# ---- the kernel pages: every hand-written excerpt is the source's own lines -------------------------------
KERNEL_PAGES = sorted((ROOT / "docs" / "kernels").glob("*.md")) + [ROOT / "docs" / "decoding.md"]
_FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<info>[^\n]*)\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
_EXCERPT = re.compile(r'title="(?P<path>[\w./-]+\.py) \(excerpt\)"')
_ANNOTATION = re.compile(r"\s*# \(\d+\)!\s*$")      # a code annotation marker, not part of the source
_ELISION = re.compile(r"^\s*# (?:\.\.\.|…)\s*$")     # "# ..." stands for left-out lines
_TRAILING_COMMENT = re.compile(r"\s{2,}#.*$")         # the sources separate a line's comment by two spaces


def _python_listings(text: str) -> list[tuple[str, str]]:
    """(info string, body) of every fenced python listing of a page, nested ones (in admonitions) included."""
    return [(m.group("info"), m.group("body")) for m in _FENCE.finditer(text)
            if m.group("info").strip().startswith("python")]


def excerpt_problems(info: str, body: str) -> list[str]:
    """Why a listing is not a faithful excerpt: a line that is not a line of the named file, in the file's order
    (the line as written, or its code without the trailing comment; indentation and annotation markers aside)."""
    m = _EXCERPT.search(info)
    if not m:
        return [f"a hand-written python listing must be titled \"PATH (excerpt)\": {info.strip()!r}"]
    path = ROOT / m.group("path")
    if not path.is_file():
        return [f"{m.group('path')}: no such file"]
    source = path.read_text(encoding="utf-8").splitlines()
    forms = [{line.strip(), _TRAILING_COMMENT.sub("", line).strip()} for line in source]
    problems, at = [], 0
    for line in body.splitlines():
        if not line.strip() or _ELISION.match(line):
            continue
        text = _ANNOTATION.sub("", line).strip()
        hit = next((i for i in range(at, len(source)) if text in forms[i]), None)
        if hit is None:
            earlier = any(text in f for f in forms[:at])
            problems.append(f"{m.group('path')}: {text!r} " + ("is out of order" if earlier else "is not in the file"))
        else:
            at = hit + 1
    return problems


def test_kernel_page_excerpts_are_the_source():
    """Every python listing of the kernel pages and the decoding page is an include (--8<--) or an excerpt titled
    "PATH (excerpt)" whose every line is a line of PATH, in PATH's order: a hand-copied line cannot drift."""
    problems, excerpts = [], 0
    for page in KERNEL_PAGES:
        for info, body in _python_listings(page.read_text(encoding="utf-8")):
            if "--8<--" in body:
                continue
            excerpts += 1
            problems += [f"{page.relative_to(ROOT)}: {p}" for p in excerpt_problems(info, body)]
    assert not problems, "\n".join(problems)
    assert excerpts >= 7, f"only {excerpts} excerpts on the kernel pages"


def test_excerpt_check_catches_drift():
    info = 'python title="fast/fused_recurrent.py (excerpt)"'
    good = "b_S = b_S * tl.exp(b_g)[:, None]  # (1)!\n# ...\nb_o = tl.sum((scale * b_q)[:, None] * b_S, 0)\n"
    assert excerpt_problems(info, good) == []
    assert "is not in the file" in excerpt_problems(info, "b_S = b_S * tl.exp(2 * b_g)[:, None]\n")[0]
    assert "is out of order" in excerpt_problems(info, "\n".join(reversed(good.splitlines())))[0]
    assert "titled" in excerpt_problems('python title="fast/fused_recurrent.py"', good)[0]


@pytest.mark.parametrize("page", [p.name for p in sorted((ROOT / "docs" / "kernels").glob("*.md"))
                                  if p.name not in ("index.md", "triton-primer.md")])
def test_kernel_page_starts_from_its_equations_and_tiles(page):
    """A kernel page opens, before its first section, with the equations the kernel implements (display
    math) and a picture of its tiles (a figure of docs/assets/figures)."""
    text = (ROOT / "docs" / "kernels" / page).read_text(encoding="utf-8")
    opening = text.split("\n## ", 1)[0]
    assert "$$" in opening, f"{page} does not open with the equations it implements"
    assert re.search(r"!\[[^\]]*\]\(\.\./assets/figures/[\w-]+\.svg\)", opening), f"{page} opens with no figure"
