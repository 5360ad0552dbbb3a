"""Test-wide setup: Triton kernels run in the interpreter on CPU-only machines; `gpu` tests skip without CUDA."""

import os

import pytest
import torch

HAS_CUDA = torch.cuda.is_available()
if not HAS_CUDA:
    # Must be set before triton is imported anywhere.
    os.environ.setdefault("TRITON_INTERPRET", "1")


def pytest_collection_modifyitems(config, items):
    if HAS_CUDA:
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def seed() -> int:
    """A fresh seed per test run (printed on failure), so every run draws new random inputs."""
    s = int.from_bytes(os.urandom(4), "little")
    torch.manual_seed(s)
    return s
