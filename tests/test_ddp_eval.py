"""Evaluation that does not depend on how it is split: two processes or one, batch 1 or 4."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import REPO, tiny_data_args
from torch.utils.data import DataLoader, DistributedSampler

from weft_lightning.data.sampling import real_samples


def _weft(args: list[str]) -> None:
    command = [str(Path(sys.executable).parent / "weft"), *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]


def _metrics(run: Path, stage: str) -> dict[str, float]:
    (summary,) = run.rglob(f"summary_{stage}.json")
    return json.loads(summary.read_text())["metrics"]


@pytest.mark.parametrize(("size", "world", "batch"), [(7, 2, 2), (7, 3, 1), (5, 2, 4), (8, 2, 3)])
def test_padding_copies_are_found(size: int, world: int, batch: int) -> None:
    seen: list[int] = []
    for rank in range(world):
        sampler = DistributedSampler(range(size), world, rank, shuffle=True, seed=3)
        loader = DataLoader(list(range(size)), batch_size=batch, sampler=sampler)
        for index, items in enumerate(loader):
            real = real_samples(loader, index, len(items))
            seen += [int(item) for item, keep in zip(items, real, strict=True) if keep]
    assert sorted(seen) == list(range(size))  # every image once, none twice


def test_without_a_distributed_sampler_every_sample_is_real() -> None:
    loader = DataLoader(list(range(5)), batch_size=2)
    assert real_samples(loader, 2, 1) == [True]


@pytest.mark.slow
def test_two_processes_and_batch_sizes_give_the_metrics_of_one(tmp_path: Path) -> None:
    """`weft test` and `weft validate` on 7 images: DDP on 2 CPU processes, and eval batch 1
    vs 4, equal to 1e-6."""
    base = ["--config", str(REPO / "configs" / "demo.yaml"), *tiny_data_args(tmp_path, 8, 7)]
    base += ["--trainer.logger", "false", "--trainer.max_epochs", "1"]
    base += ["--trainer.limit_train_batches", "2", "--trainer.accelerator", "cpu"]
    trained = tmp_path / "trained"
    _weft(["fit", *base, "--trainer.default_root_dir", str(trained)])
    (checkpoint,) = trained.rglob("last.ckpt")
    runs = {
        "one": ["--trainer.devices", "1", "--data.init_args.eval_batch_size", "4"],
        "batch1": ["--trainer.devices", "1", "--data.init_args.eval_batch_size", "1"],
        "ddp": ["--trainer.devices", "2", "--trainer.strategy", "ddp"],
    }
    results = {}
    for stage in ("test", "validate"):
        for name, extra in runs.items():
            if stage == "validate" and name == "batch1":
                continue
            root = tmp_path / stage / name
            _weft([stage, *base, *extra, "--trainer.default_root_dir", str(root),
                   "--ckpt_path", str(checkpoint)])  # fmt: skip
            results[stage, name] = _metrics(root, stage)
    for stage, name in results:
        one = results[stage, "one"]
        assert one, f"no {stage} metrics were written"
        for key, value in one.items():
            mine = results[stage, name][key]
            assert abs(mine - value) <= 1e-6, (stage, name, key, mine, value)
    assert torch.isfinite(torch.tensor(list(results["test", "ddp"].values()))).all()
