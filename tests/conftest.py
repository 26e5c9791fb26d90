"""Fixtures: the committed real pairs, the full EORSSD (skipped when absent), generated data.

Helpers that tests import live in ``tests/helpers.py``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Tests run many small models, data-loader workers and DDP subprocesses side by side on a
# 2-core machine: one intra-op thread per process avoids oversubscription (20-40x slowdowns).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch

torch.set_num_threads(1)

TEST_DATA = Path(__file__).resolve().parent / "data"
"""The committed real subset (see tests/data/README.md): always present."""
SHARED_DATA = Path(
    os.environ.get("WEFT_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
"""The full datasets beside the repository; absent on a plain clone."""
FULL_EORSSD = SHARED_DATA / "EORSSD"
NO_FULL_EORSSD = f"full EORSSD not found at {FULL_EORSSD}; set WEFT_SHARED_DATA to run it"

os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The committed real pairs (EORSSD, CAMO, ECSSD, Kvasir-SEG subsets; golden metrics)."""
    return TEST_DATA


@pytest.fixture(scope="session")
def full_eorssd() -> Path:
    """The full EORSSD dataset (read-only); the test is skipped when it is absent."""
    if not (FULL_EORSSD / "train").is_dir():
        pytest.skip(NO_FULL_EORSSD)
    return FULL_EORSSD


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated dataset with train/ and test/ splits (64 px images)."""
    from weft_lightning.data.synthetic import generate_dataset

    root = tmp_path_factory.mktemp("synthetic") / "synthetic"
    generate_dataset(root, num_train=16, num_test=6, size=64, seed=3)
    return root
