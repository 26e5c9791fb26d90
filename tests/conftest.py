"""Shared fixtures: the read-only real data folder and small generated datasets."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pytest

# Tests run many small models, data-loader workers and DDP subprocesses side by side on a
# 2-core machine: one intra-op thread per process avoids oversubscription (20-40x slowdowns).
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import torch
from torch.utils._python_dispatch import TorchDispatchMode

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


def copy_pairs(source: Path, target: Path, count: int) -> Path:
    """Copy the first ``count`` image/mask pairs of a split folder into ``target``."""
    for sub in ("images", "masks"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    images = sorted((source / "images").iterdir())[:count]
    masks = {p.stem: p for p in (source / "masks").iterdir()}
    for image in images:
        shutil.copy(image, target / "images" / image.name)
        shutil.copy(masks[image.stem], target / "masks" / masks[image.stem].name)
    return target


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops that run inside the context."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
