"""The contract pages state what the code does: the tolerance page's table is ``gdn2.tolerances``."""

import re
from pathlib import Path

from gdn2.tolerances import TOLERANCES

ROOT = Path(__file__).resolve().parents[1]


def test_tolerance_page_matches_the_table():
    page = (ROOT / "docs" / "tolerances.md").read_text()
    names = {"reference, float64": "reference-float64", "reference, float32": "reference-float32",
             "reference, bfloat16 inputs": "reference-bfloat16",
             "Triton, float32 inputs": "triton-float32", "Triton, bfloat16 inputs": "triton-bfloat16",
             "Triton, float16 inputs": "triton-float16"}
    rows = {}
    for line in page.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in names:
            rows[names[cells[0]]] = tuple(float(c) for c in cells[1:4])
    assert rows == TOLERANCES


def test_code_map_names_files_that_exist():
    page = (ROOT / "docs" / "code-map.md").read_text()
    for path in re.findall(r"`((?:reference|fast)/[\w/]+\.py)`", page):
        assert (ROOT / path).is_file(), path
    for module, name in re.findall(r"`(chunk_fwd|chunk_bwd|recurrent|intra_fwd|state_fwd|state_bwd|local_bwd|"
                                   r"fused_recurrent)\.(\w+)`", page):
        folder = "fast" if module in ("intra_fwd", "state_fwd", "state_bwd", "local_bwd", "fused_recurrent") \
            else "reference/ops"
        assert f"def {name}(" in (ROOT / folder / f"{module}.py").read_text(), f"{module}.{name}"
