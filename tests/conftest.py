"""Test configuration: Triton runs through its CPU interpreter when no GPU is present, every test draws
its random inputs from a seed of its own, and a failing test's report names the seed that reproduces it."""

import os
import random
import zlib

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any Triton kernel is defined, so before gdn2.fast is imported.
    os.environ.setdefault("TRITON_INTERPRET", "1")

# pytest-xdist's workers share the machine's cores: each takes its share for torch's CPU threads. With
# torch's default (every core in every worker) the workers' OpenMP threads oversubscribe the CPU by the
# number of workers and wait on each other, and the CPU tests of a GPU run (float64 references) crawl.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // _WORKERS))

#: the run's base seed: fresh draws each run unless GDN2_TEST_SEED repeats a run
BASE_SEED = int(os.environ.get("GDN2_TEST_SEED") or random.SystemRandom().randrange(2**31))
# pytest-xdist's workers start from this process's environment: one base seed for the whole run, the one
# the header prints (the controller imports this file before it starts them)
os.environ["GDN2_TEST_SEED"] = str(BASE_SEED)


def pytest_report_header(config):
    return f"gdn2 test seed: GDN2_TEST_SEED={BASE_SEED}"


@pytest.fixture(autouse=True)
def seeded(request):
    """Seed torch's generators for this test from the base seed and the test's id."""
    seed = (BASE_SEED + zlib.crc32(request.node.nodeid.encode())) % 2**63
    torch.manual_seed(seed)
    request.node.gdn2_seed = seed
    return seed


@pytest.fixture(autouse=True)
def kernels_stay_in_bounds():
    """Under Triton's interpreter every load, store and atomic of every kernel a test runs must land inside
    one of the kernel's tensor arguments (``bounds.checked_memory``): there an access outside them reads or
    writes the heap without a sound, where a GPU would fault or corrupt memory."""
    if os.environ.get("TRITON_INTERPRET") != "1" or os.environ.get("GDN2_UNCHECKED_BOUNDS") == "1":
        yield
        return
    from bounds import checked_memory

    with checked_memory():
        yield


@pytest.fixture(autouse=True)
def release_gpu_memory():
    """After each test, hand the GPU memory its tensors held back to the device: pytest-xdist runs many
    workers on one GPU, and each allocator would otherwise keep its largest test's peak until it exits."""
    yield
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and hasattr(item, "gdn2_seed"):
        report.sections.append(("gdn2 seed", f"reproduce with GDN2_TEST_SEED={BASE_SEED} "
                                             f"(this test's torch seed: {item.gdn2_seed})"))


@pytest.fixture
def poison_triton_outputs(monkeypatch):
    """Every buffer the Triton drivers allocate starts as NaN, so an unwritten element fails."""
    import gdn2.fast.utils

    monkeypatch.setattr(gdn2.fast.utils, "POISON_OUTPUTS", True)
