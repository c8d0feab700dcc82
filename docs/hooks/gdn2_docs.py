"""MkDocs hooks of the gdn2 documentation.

1. API reference without imports: the import package ``gdn2`` lives in ``reference/`` and
   ``gdn2.fast`` in ``fast/`` (setuptools package-dir), which griffe cannot map by folder name. The
   hook stages a tree of symbolic links ``<tmp>/gdn2 -> reference/*`` plus ``<tmp>/gdn2/fast -> fast/``
   and hands it to mkdocstrings as its only search path; griffe then reads the sources statically.
   After the build the hook fails if torch, triton or gdn2 were imported.
2. Line pointers into included code: ``[[line PATH:SECTION "text"]]`` becomes the line number (as
   shown by ``linenums="1"``) of the one line of snippet section SECTION of PATH containing text;
   ``[[line PATH:SECTION "text" N]]`` picks the N-th such line. A missing section, or text found
   zero or several times (or fewer than N times), fails the build.
3. Named tests must exist: every ```tests/NAME.py::test_x``` on a page must name a function of
   that file, or the build fails.
4. Generated tables and plots (``gdn2_bench.py``): ``<!-- gdn2:costs -->`` (work and memory per
   token), ``<!-- gdn2:cards -->`` (the card constants), ``<!-- gdn2:floors -->``, ``<!-- gdn2:decode -->``
   (decoding memory), ``<!-- gdn2:summary -->`` (ratios against the peer), ``<!-- gdn2:raw NAME -->``
   (the rows of ``benchmarks/results/NAME.csv``, collapsed) and ``<!-- gdn2:other -->`` (every CSV the
   page does not show with a raw placeholder, collapsed). The plots are files ``plots/NAME.svg``
   generated at build time, cited on the page as ordinary images; the evaluation's plots, which
   ``examples/evaluation/run.py`` writes next to its CSVs, are served the same way as
   ``plots/evaluation-NAME.svg``.
5. Numbers from CSVs (``gdn2_macros.py``): ``{{ csv(...) }}``, ``{{ ratio(...) }}`` and the other
   macros are replaced by values read from ``benchmarks/results/`` when the page is built; a cited
   file, row or column that is missing fails the build, and so does a measured number (a number
   with a unit of time, rate, size or a ×) typed into the prose of a page instead of cited.
6. Figures take the theme's colours: an image ``assets/figures/NAME.svg`` or ``plots/NAME.svg`` is
   inlined into the page as SVG, so that its ``currentColor`` is the text colour of the light and
   the dark scheme alike (an SVG loaded through ``<img>`` cannot see the page's colours).
"""

import ast
import atexit
import re
import shutil
import sys
import tempfile
from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

sys.path.insert(0, str(Path(__file__).resolve().parent))
import gdn2_bench  # noqa: E402  (sibling modules of this hook file)
import gdn2_macros  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_MARKER = re.compile(r"--8<--\s*\[(start|end):([\w.-]+)\]")
_LINE = re.compile(r'\[\[line\s+([\w./-]+):([\w.-]+)\s+"((?:[^"\\]|\\.)*)"(?:\s+(\d+))?\]\]')
_NAMED_TEST = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")
_FORBIDDEN_IMPORTS = ("torch", "triton", "gdn2")
_state: dict = {}


# ---- 1. API reference: static analysis only ---------------------------------------------------
def _stage_packages() -> Path:
    """<tmp>/gdn2 mirrors reference/ (links to its entries) with fast/ linked in as gdn2/fast."""
    stage = Path(tempfile.mkdtemp(prefix="gdn2-docs-griffe-"))
    atexit.register(shutil.rmtree, stage, ignore_errors=True)
    pkg = stage / "gdn2"
    pkg.mkdir()
    for entry in (ROOT / "reference").iterdir():
        if entry.name != "__pycache__" and entry.name != "fast":
            (pkg / entry.name).symlink_to(entry)
    (pkg / "fast").symlink_to(ROOT / "fast")
    return stage


@event_priority(100)  # before mkdocstrings' on_config, which creates the handler with its paths
def on_config(config):
    stage = _stage_packages()
    handlers = config.plugins["mkdocstrings"].config.handlers
    handlers.setdefault("python", {})["paths"] = [str(stage)]
    _state["preloaded"] = {m for m in _FORBIDDEN_IMPORTS if m in sys.modules}
    _state["bench"] = gdn2_bench.load_results(ROOT / "benchmarks" / "results")
    gdn2_macros.clear_cache()  # `mkdocs serve` rebuilds in one process: read the CSVs again
    return config


def on_post_build(config):
    imported = [m for m in _FORBIDDEN_IMPORTS if m in sys.modules and m not in _state["preloaded"]]
    if imported:
        raise PluginError(f"the docs build imported {', '.join(imported)}; the API reference must be static")


# ---- 2. line pointers ---------------------------------------------------------------------------
def _section_lines(path: str, section: str) -> list[str]:
    """The lines pymdownx.snippets includes for PATH:SECTION (marker lines of any section dropped)."""
    file = ROOT / path
    if not file.is_file():
        raise PluginError(f"[[line]]: no file {path}")
    lines, inside, found = [], False, False
    for line in file.read_text(encoding="utf-8").splitlines():
        m = _MARKER.search(line)
        if m:
            if m.group(2) == section:
                inside, found = m.group(1) == "start", True
            continue
        if inside:
            lines.append(line)
    if not found:
        raise PluginError(f"[[line]]: no section {section!r} in {path}")
    return lines


def _line_number(m: re.Match) -> str:
    path, section, text = m.group(1), m.group(2), m.group(3).replace('\\"', '"')
    hits = [i + 1 for i, line in enumerate(_section_lines(path, section)) if text in line]
    if m.group(4):  # an explicit occurrence: the text may repeat, the n-th one must exist
        n = int(m.group(4))
        if not 1 <= n <= len(hits):
            raise PluginError(f"[[line]]: {text!r} occurs {len(hits)} times in {path}:{section}, not {n}")
        return str(hits[n - 1])
    if len(hits) != 1:
        raise PluginError(f"[[line]]: {text!r} occurs {len(hits)} times in {path}:{section}, expected once")
    return str(hits[0])


# ---- 3. named tests -----------------------------------------------------------------------------
def _test_functions(path: str) -> set[str]:
    file = ROOT / path
    if not file.is_file():
        return set()
    tree = ast.parse(file.read_text(encoding="utf-8"))
    return {n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)}


def _check_named_tests(markdown: str, page) -> None:
    for m in _NAMED_TEST.finditer(markdown):
        if m.group(2) not in _test_functions(m.group(1)):
            raise PluginError(f"{page.file.src_uri} names {m.group(1)}::{m.group(2)}, which does not exist")


# ---- 4. performance page, 5. numbers from CSVs, 6. inline figures ---------------------------------
_RAW = re.compile(r"<!-- gdn2:raw ([\w.-]+) -->")
_IMG = re.compile(r'<img\b[^>]*?\bsrc="(?P<src>[^"]*?(?P<kind>assets/figures|plots)/(?P<name>[\w.-]+)\.svg)"[^>]*>')
_ALT = re.compile(r'\balt="([^"]*)"')
_XML_PROLOG = re.compile(r"^\s*<\?xml[^>]*>\s*")


EVALUATION = ROOT / "examples" / "evaluation" / "results"


def on_files(files, config):
    _state["plots"] = gdn2_bench.plots(_state["bench"])
    for path in sorted(EVALUATION.glob("*.svg")):
        _state["plots"][f"evaluation-{path.name}"] = path.read_text(encoding="utf-8")
    for name, svg in _state["plots"].items():
        files.append(File.generated(config, f"plots/{name}", content=svg))
    return files


def on_page_markdown(markdown, page, config, files):
    _check_named_tests(markdown, page)
    uri = page.file.src_uri
    typed = gdn2_macros.typed_numbers(markdown)
    if typed:
        raise PluginError(f"{uri}: measured numbers typed into the prose ({', '.join(typed[:6])}); "
                          "cite them from benchmarks/results/ with {{ csv(...) }} or {{ ratio(...) }}")
    markdown = gdn2_macros.expand(markdown, uri)
    markdown = _LINE.sub(_line_number, markdown)
    bench = _state["bench"]
    placed = set(_RAW.findall(markdown))
    for name in placed:
        if name not in bench:
            raise PluginError(f"{uri}: <!-- gdn2:raw {name} --> names no benchmarks/results/{name}.csv")
    markdown = _RAW.sub(lambda m: gdn2_bench.raw_markdown(bench, m.group(1)), markdown)
    generated = {
        "<!-- gdn2:costs -->": gdn2_bench.costs_markdown,
        "<!-- gdn2:cards -->": gdn2_bench.cards_markdown,
        "<!-- gdn2:floors -->": gdn2_bench.floors_markdown,
        "<!-- gdn2:decode -->": gdn2_bench.decode_markdown,
        "<!-- gdn2:summary -->": lambda: gdn2_bench.summary_markdown(bench),
        "<!-- gdn2:other -->": lambda: gdn2_bench.other_markdown(bench, placed),
    }
    for placeholder, make in generated.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, make())
    return markdown


def _inline_svg(m: re.Match) -> str:
    kind, name = m.group("kind"), m.group("name")
    if kind == "plots":
        svg = _state["plots"].get(f"{name}.svg")
    else:
        path = ROOT / "docs" / "assets" / "figures" / f"{name}.svg"
        svg = path.read_text(encoding="utf-8") if path.is_file() else None
    if svg is None:
        return m.group(0)  # MkDocs reports the broken link itself
    svg = _XML_PROLOG.sub("", svg)
    alt = _ALT.search(m.group(0))
    if alt and "aria-label=" not in svg[: svg.index(">")]:
        svg = svg.replace("<svg ", f'<svg role="img" aria-label="{alt.group(1)}" ', 1)
    return svg


def on_page_content(html, page, config, files):
    return _IMG.sub(_inline_svg, html)
