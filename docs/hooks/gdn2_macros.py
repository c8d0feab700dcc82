"""Numbers in prose come from the committed CSVs, at build time: ``{{ csv(...) }}`` and friends.

A macro is ``{{ NAME(ARGS) }}`` with NAME one of the functions of :data:`MACROS` and ARGS Python
literals (strings, numbers), positional or by keyword. It is replaced by its value when the page
is built; a macro that cites a file, row or column that does not exist, or a row that is not
unique, fails the build. Anything else between double braces is left alone (LaTeX uses them).

``csv(path, where, col, fmt=".3g", scale=1)``
    The value in column ``col`` of the one row of ``path`` that matches ``where``
    (``"shape=8x2048,impl=ours"``: every named column equal to the given text; a dict
    ``{"config": "jit, 1 argument"}`` for values with commas), times ``scale``,
    formatted with ``fmt`` (``fmt="s"`` gives the text as it is in the file).
``ratio(path, num, den, where="", col="ms", fmt=".2f", over=None)``
    ``csv(num) / csv(den)`` with ``where`` added to both selections. With ``over="shape"`` the
    ratio is taken for every value of that column (in the order of the file) and the macro gives
    the range "low–high".
``card(path)``
    The ``card`` column of the file, which must be the same on every row.
``crossover(path, a, b, where="", col="ms", fmt=",.0f", scale=1)``
    The sequence length (tokens, times ``scale``) at which the times of selection ``a`` and
    selection ``b`` cross, by linear interpolation between the measured lengths (``shape`` is
    ``BxT``); fails if they do not cross.
``model(name, fmt=",.0f")``
    A quantity of the cost model of ``gdn2_bench.py`` (bytes or multiply-adds per token, ...):
    derived from formulas, not measured, but kept in one place like the measurements.

Paths are relative to the repository root (``benchmarks/results/fwd-NVIDIA_H200.csv``); a bare
file name is looked up in ``benchmarks/results/``.

The module is also a MkDocs hook on its own (``on_page_markdown``), so that a test can build a
one-page site with nothing else and see the build fail on a missing row.
"""

import ast
import csv
import re
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"

_CALL = re.compile(r"\{\{\s*((?:csv|ratio|card|crossover|model)\s*\(.*?\))\s*\}\}", re.S)
_tables: dict[Path, tuple[list[str], list[dict[str, str]]]] = {}


def clear_cache() -> None:
    _tables.clear()


class MacroError(PluginError):
    """A macro names a file, row or column that is not there (the build stops)."""


def _path(path: str) -> Path:
    p = Path(path)
    full = ROOT / p if len(p.parts) > 1 else RESULTS / p
    if full.suffix != ".csv":
        full = full.with_name(full.name + ".csv")
    return full


def read_table(path: str) -> tuple[list[str], list[dict[str, str]]]:
    """(header, rows) of a CSV, cached for the build."""
    full = _path(path)
    if full not in _tables:
        if not full.is_file():
            raise MacroError(f"no file {full.relative_to(ROOT) if full.is_relative_to(ROOT) else full}")
        with full.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            rows = [r for r in reader if any((v or "").strip() for v in r.values())]
            _tables[full] = (list(reader.fieldnames or []), rows)
    return _tables[full]


Where = str | dict | list


def _conditions(where: Where) -> list[tuple[str, str]]:
    """``"a=1,b=2"``, ``{"a": "1", "b": "2"}`` (for values with commas) or a list of pairs."""
    if isinstance(where, dict):
        return [(str(k).strip(), str(v).strip()) for k, v in where.items()]
    if isinstance(where, list):
        return [(str(k).strip(), str(v).strip()) for k, v in where]
    out = []
    for part in filter(None, (p.strip() for p in where.split(","))):
        if "=" not in part:
            raise MacroError(f"where clause {part!r} is not column=value")
        key, value = part.split("=", 1)
        out.append((key.strip(), value.strip()))
    return out


def select(path: str, where: Where) -> list[dict[str, str]]:
    """The rows of ``path`` matching every column=value of ``where``; a column that is not there fails."""
    header, rows = read_table(path)
    conds = _conditions(where)
    for key, _ in conds:
        if key not in header:
            raise MacroError(f"{path}: no column {key!r} (columns: {', '.join(header)})")
    return [r for r in rows if all((r.get(k) or "").strip() == v for k, v in conds)]


def _one(path: str, where: Where) -> dict[str, str]:
    rows = select(path, where)
    if len(rows) != 1:
        raise MacroError(f"{path}: {len(rows)} rows match {where!r}, a cited row must be unique")
    return rows[0]


def value(path: str, where: Where, col: str) -> float:
    """The number in column ``col`` of the one row matching ``where``."""
    header, _ = read_table(path)
    if col not in header:
        raise MacroError(f"{path}: no column {col!r} (columns: {', '.join(header)})")
    text = (_one(path, where).get(col) or "").strip()
    try:
        return float(text)
    except ValueError:
        raise MacroError(f"{path}: column {col!r} of the row {where!r} holds {text!r}, not a number") from None


def _join(*parts: Where) -> list[tuple[str, str]]:
    return [c for p in parts for c in _conditions(p)]


def csv_macro(path: str, where: Where, col: str, fmt: str = ".3g", scale: float = 1) -> str:
    if fmt == "s":
        header, _ = read_table(path)
        if col not in header:
            raise MacroError(f"{path}: no column {col!r}")
        return (_one(path, where).get(col) or "").strip()
    return format(value(path, where, col) * scale, fmt)


def ratio_value(path: str, num: Where, den: Where, where: Where = "", col: str = "ms") -> float:
    return value(path, _join(where, num), col) / value(path, _join(where, den), col)


def ratio_macro(path: str, num: Where, den: Where, where: Where = "", col: str = "ms", fmt: str = ".2f",
                over: str | None = None) -> str:
    if over is None:
        return format(ratio_value(path, num, den, where, col), fmt)
    keys = list(dict.fromkeys(r[over] for r in select(path, where) if over in r))
    if not keys:
        raise MacroError(f"{path}: no rows match {where!r} to range over {over!r}")
    values = [ratio_value(path, num, den, _join(where, f"{over}={k}"), col) for k in keys]
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo}–{hi}"


def card_macro(path: str) -> str:
    _, rows = read_table(path)
    cards = {(r.get("card") or "").strip() for r in rows}
    if len(cards) != 1 or not next(iter(cards)):
        raise MacroError(f"{path}: the card column names {sorted(cards)}, not one card")
    return next(iter(cards))


def _length(shape: str) -> int:
    m = re.fullmatch(r"(\d+)x(\d+)", shape.strip())
    if not m:
        raise MacroError(f"shape {shape!r} is not BxT")
    return int(m.group(2))


def crossover_value(path: str, a: Where, b: Where, where: Where = "", col: str = "ms") -> float:
    """T (tokens) where the times of a and b cross, linear between the measured lengths."""
    shapes = list(dict.fromkeys(r["shape"] for r in select(path, where)))
    pts = sorted((_length(s), value(path, _join(where, a, f"shape={s}"), col)
                  - value(path, _join(where, b, f"shape={s}"), col)) for s in shapes)
    for (t0, d0), (t1, d1) in zip(pts, pts[1:]):
        if d0 > 0 >= d1 or d0 < 0 <= d1:
            return t0 + (t1 - t0) * d0 / (d0 - d1)
    raise MacroError(f"{path}: {a!r} and {b!r} do not cross between the measured lengths")


def crossover_macro(path: str, a: Where, b: Where, where: Where = "", col: str = "ms", fmt: str = ",.0f",
                    scale: float = 1) -> str:
    return format(crossover_value(path, a, b, where, col) * scale, fmt)


def model_macro(name: str, fmt: str = ",.0f") -> str:
    """A number of the cost model (gdn2_bench.MODEL): derived from the formulas, not measured."""
    import gdn2_bench  # a sibling module; imported late so that this file also works as a hook alone

    if name not in gdn2_bench.MODEL:
        raise MacroError(f"no quantity {name!r} in the cost model (known: {', '.join(gdn2_bench.MODEL)})")
    return format(gdn2_bench.MODEL[name](), fmt)


MACROS = {"csv": csv_macro, "ratio": ratio_macro, "card": card_macro, "crossover": crossover_macro,
          "model": model_macro}


def _call(source: str):
    try:
        node = ast.parse(source.strip(), mode="eval").body
    except SyntaxError as e:
        raise MacroError(f"macro {source!r} is not a call: {e.msg}") from None
    if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.func.id not in MACROS:
        raise MacroError(f"macro {source!r}: unknown function (known: {', '.join(MACROS)})")
    try:
        args = [ast.literal_eval(a) for a in node.args]
        kwargs = {k.arg: ast.literal_eval(k.value) for k in node.keywords}
    except ValueError:
        raise MacroError(f"macro {source!r}: arguments must be literals") from None
    try:
        return MACROS[node.func.id](*args, **kwargs)
    except TypeError as e:
        raise MacroError(f"macro {source!r}: {e}") from None


_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)   # fenced blocks and inline code: shown, never expanded


def expand(markdown: str, where: str = "") -> str:
    """Replace every macro of a page by its value (not inside code); an error names the page and the macro."""
    def one(m: re.Match) -> str:
        try:
            return str(_call(m.group(1)))
        except MacroError as e:
            raise MacroError(f"{where}: {e}") from None

    out, last = [], 0
    for code in _CODE.finditer(markdown):
        out += [_CALL.sub(one, markdown[last:code.start()]), code.group(0)]
        last = code.end()
    return "".join(out) + _CALL.sub(one, markdown[last:])


# ---- measured numbers may not be typed into prose ----------------------------------------------------
_UNITS = r"(?:ms|µs|us|ns|×|%|TB/s|GB/s|TFLOP/s|GFLOP/s|MiB|GiB|KiB|MB|GB)"
_TYPED = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s*" + _UNITS + r"(?![\w])")
_SKIP = re.compile(
    r"```.*?```"                      # fenced code
    r"|`[^`\n]*`"                     # inline code
    r"|\$\$.*?\$\$|\$[^$\n]*\$"       # math
    r"|\{\{.*?\}\}"                   # macros
    r"|<!--.*?-->"                    # comments and placeholders
    r"|\]\([^)]*\)",                  # link targets
    re.S)


def typed_numbers(markdown: str) -> list[str]:
    """Numbers with a unit of time, rate, size or ratio written by hand in the prose of a page."""
    return [m.group(0) for m in _TYPED.finditer(_SKIP.sub(" ", markdown))]


def on_page_markdown(markdown, page, config, files):
    return expand(markdown, page.file.src_uri)
