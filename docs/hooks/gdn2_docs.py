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
4. Generated tables (``gdn2_bench.py``): ``<!-- gdn2:costs -->`` (work and memory per token),
   ``<!-- gdn2:floors -->`` (roofline floors), ``<!-- gdn2:decode -->`` (decoding memory), and
   ``<!-- gdn2:benchmarks -->``, the tables and SVG plots made from ``benchmarks/results/*.csv``;
   with no CSV yet the page says so.
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
import gdn2_bench  # noqa: E402  (a sibling module of this hook file)

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


# ---- 4. performance page ------------------------------------------------------------------------
def on_files(files, config):
    for name, svg in gdn2_bench.plots(_state["bench"]).items():
        files.append(File.generated(config, f"plots/{name}", content=svg))
    return files


def on_page_markdown(markdown, page, config, files):
    _check_named_tests(markdown, page)
    markdown = _LINE.sub(_line_number, markdown)
    generated = {
        "<!-- gdn2:costs -->": gdn2_bench.costs_markdown,
        "<!-- gdn2:floors -->": gdn2_bench.floors_markdown,
        "<!-- gdn2:decode -->": gdn2_bench.decode_markdown,
        "<!-- gdn2:benchmarks -->": lambda: gdn2_bench.results_markdown(_state["bench"]),
    }
    for placeholder, make in generated.items():
        if placeholder in markdown:
            markdown = markdown.replace(placeholder, make())
    return markdown
