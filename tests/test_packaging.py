"""Packaging: ``gdn2`` imports from anywhere, the folders ``reference/`` and ``fast/`` are never top-level
packages, and the wheel holds exactly the package (with the corpus and the entry point)."""

import importlib.util
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def python(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_import_from_outside_the_repository(tmp_path):
    proc = python(
        "import gdn2, gdn2.ops, gdn2.fast, gdn2.data\n"
        "from gdn2.ops import chunk_gdn2, fused_recurrent_gdn2, recurrent_gdn2\n"
        "from gdn2 import GDN2, GDN2LM, Cache, get_backend, available_backends\n"
        "assert get_backend('reference') is gdn2.ops and callable(gdn2.fast.chunk_gdn2)\n"
        "assert gdn2.data.corpus_tensor().numel() > 100_000\n"
        "import importlib.util as u\n"
        "assert u.find_spec('reference') is None and u.find_spec('fast') is None, 'top-level reference/fast'\n"
        "print(gdn2.__version__)",
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "0.1.0"


def test_wheel_contains_only_the_gdn2_package(tmp_path):
    build_isolation = [] if importlib.util.find_spec("setuptools") is None else ["--no-build-isolation"]
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", *build_isolation, "-w", str(tmp_path), str(ROOT)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("gdn2-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names}
    assert tops == {"gdn2", next(t for t in tops if t.endswith(".dist-info"))}, tops
    for needed in ("gdn2/__init__.py", "gdn2/ops/chunk.py", "gdn2/fast/__init__.py", "gdn2/layer.py",
                   "gdn2/model.py", "gdn2/cli.py", "gdn2/__main__.py", "gdn2/data/persuasion.txt",
                   "gdn2/tolerances.py"):
        assert needed in names, needed
    assert not any(n.startswith(("reference/", "fast/", "tests/")) for n in names)
    entry = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("entry_points.txt"))).decode()
    assert "gdn2 = gdn2.cli:main" in entry
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names), \
        "the MIT license text is not in the wheel"


def test_declared_dependencies_are_used():
    """Every runtime dependency is imported by the package, or by torch on import (numpy: torch warns on every
    import without it, and Triton's CPU interpreter runs the kernels with it)."""
    tomllib = pytest.importorskip("tomllib")

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {d.split(";")[0].split(">")[0].split("<")[0].split("=")[0].strip() for d in deps}
    sources = "".join(p.read_text() for folder in ("reference", "fast") for p in (ROOT / folder).rglob("*.py"))
    for name in names - {"numpy"}:
        assert f"import {name}" in sources or f"from {name}" in sources, f"{name} is declared but never imported"
