"""Test configuration: Triton runs through its CPU interpreter when no GPU is present."""

import os

import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined, so before gdn2.fast is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")
