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
from docs_browser import Chromium, SiteServer, failures, is_local, request_urls

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
