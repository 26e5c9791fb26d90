"""DDP: `weft fit` on two CPU processes (gloo) trains and logs the keys of a 1-process run."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
TINY_WEFT = """
model:
  init_args:
    segmentor:
      init_args:
        backbone:
          class_path: weft_lightning.models.weft.WEFTBackbone
          init_args:
            vit:
              class_path: weft_lightning.models.backbone.FrozenViT
              init_args: {model_name: vit_tiny_patch16_224, model_kwargs: {depth: 4}}
            conv_channels: 16
            kernel_sizes: [1, 3, 5]
            top_k: 2
            deform_heads: 4
            deform_points: 2
            extra_extractors: 0
"""


def fit(tmp_path: Path, root: Path, extra: list[str]) -> float:
    """Run `weft fit` on the tiny WEFT demo in a new process; returns its wall time."""
    tiny = tmp_path / "tiny_weft.yaml"
    tiny.write_text(TINY_WEFT)
    command = [
        str(Path(sys.executable).parent / "weft"), "fit",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(tiny),
        "--config", str(REPO / "configs" / "logger" / "csv.yaml"),
        "--trainer.logger.init_args.save_dir", str(root),
        "--trainer.default_root_dir", str(root),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "2",
        "--trainer.log_every_n_steps", "1",
        "--trainer.callbacks+=weft_lightning.callbacks.SampleImages",
        "--trainer.callbacks+=weft_lightning.callbacks.RoutingStats",
        "--data.init_args.num_train", "16",
        "--data.init_args.num_test", "4",
        "--data.init_args.image_size", "64",
        "--data.init_args.augmentation.crop_size", "64",
        "--model.init_args.protocol.test.size", "64",
        "--model.init_args.protocol.validation.size", "64",
        "--data.init_args.batch_size", "4",
        "--data.init_args.eval_batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
        *extra,
    ]  # fmt: skip
    start = time.perf_counter()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return time.perf_counter() - start


def logged(root: Path) -> tuple[Path, list[dict[str, str]]]:
    """The run folder and the rows of its metrics.csv (written by rank zero only)."""
    (metrics,) = root.rglob("metrics.csv")
    with open(metrics) as handle:
        return metrics.parent, list(csv.DictReader(handle))


@pytest.mark.slow
def test_ddp_two_cpu_processes_train_and_log_the_same_keys(tmp_path: Path) -> None:
    single = fit(tmp_path, tmp_path / "single", [])
    ddp_args = ["--trainer.strategy", "ddp", "--trainer.devices", "2"]
    ddp_args += ["--trainer.accelerator", "cpu", "--trainer.precision", "bf16-mixed"]
    duration = fit(tmp_path, tmp_path / "ddp", ddp_args)
    print(f"1 process: {single:.1f} s, DDP 2 processes (gloo, bf16-mixed): {duration:.1f} s")

    _, single_rows = logged(tmp_path / "single")
    run_dir, rows = logged(tmp_path / "ddp")
    keys = {k for row in rows for k, v in row.items() if v}
    assert keys == {k for row in single_rows for k, v in row.items() if v}
    assert {"val/sm", "val/mae", "val/wfm", "train/loss"} <= keys
    losses = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(losses) == 4 and all(0 < loss < 100 for loss in losses)  # 2 epochs x 2 steps
    # rank zero wrote the checkpoints, the panels and the routing tables (shares over both ranks)
    assert list(run_dir.rglob("last.ckpt"))
    panels = sorted(p.name for p in (run_dir / "samples").glob("epoch001_*.png"))
    assert panels == ["epoch001_test_00000.png", "epoch001_test_00002.png"]  # rank 0's shard
    with open(run_dir / "routing" / "train_epoch001.csv") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 3
    assert sum(float(row["chosen"]) for row in table) == pytest.approx(2.0)  # top-2 per sample
