"""The documentation site: it builds strictly, renders its math offline, fetches nothing from
outside the machine, and every page is reachable from the navigation.

The site is built here (``mkdocs build --strict``, the docs extra) and opened in Debian's headless
Chromium (tests/docs_browser.py). Without chromium or mkdocs these tests skip, except in CI
(``CI`` set), where .ci/run installs both and their absence is a failure.
"""

import html.parser
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
    solve_unit_lower,
)
from gdn2.ops.recurrent import recurrent_step

from gdn2_testing import rel_rms

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
  const scrolls = (el) => { for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const o = getComputedStyle(p).overflowX; if (o === 'auto' || o === 'scroll') return true; } return false; };
  const out = [];
  const page = document.scrollingElement;
  if (wide(page)) out.push(`the page is ${page.scrollWidth} px wide in a ${page.clientWidth} px window`);
  const content = document.querySelector('.md-content') || document.body;
  for (const el of content.querySelectorAll('.katex-display'))
    if (wide(el)) out.push(`display math overflows by ${el.scrollWidth - el.clientWidth} px: ${what(el)}`);
  for (const el of content.querySelectorAll('pre, pre > code'))
    if (wide(el)) out.push(`listing clipped by ${el.scrollWidth - el.clientWidth} px: ${what(el)}`);
  for (const el of content.querySelectorAll('table'))
    if (!scrolls(el) && el.getBoundingClientRect().width > el.parentElement.clientWidth + px)
      out.push(`table overflows: ${what(el)}`);
  for (const el of content.querySelectorAll('svg, img'))
    if (el.getBoundingClientRect().right > content.getBoundingClientRect().right + px)
      out.push(`figure overflows: ${el.getAttribute('aria-label') || el.getAttribute('alt') || el.tagName}`);
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
    """At 1280 px no display formula, listing, unwrapped table or figure of the page is wider than its
    box and the page does not scroll sideways; neither the page's source nor its HTML holds a control
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
    G = chunk_local_cumsum(torch.full((1, C, K), -1.5))[0]                   # G_C = −96 < −88.7
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
    dA = dU @ (w * v).T + dY @ (gamma * b * k).T                 # gate-aware (SPEC §4)
    ungated = dU @ v.T + dY @ (gamma * k).T                      # what a post-scaled kernel accumulates
    c = (dA * ungated).sum(0) / ungated.pow(2).sum(0)            # best scalar per column s
    err = rel_rms(ungated * c, dA)
    assert (err < 1e-12) if tied else (err > 1e-2), err
# --8<-- [end:test_scalar_post_scale_needs_tied_gates]
