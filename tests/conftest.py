"""Test configuration: Triton runs through its CPU interpreter when no GPU is present."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined, so before gdn2.fast is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")


@pytest.fixture
def poison_triton_outputs(monkeypatch):
    """Every buffer the Triton drivers allocate starts as NaN, so an unwritten element fails (SPEC §7)."""
    import gdn2.fast.utils

    monkeypatch.setattr(gdn2.fast.utils, "POISON_OUTPUTS", True)
