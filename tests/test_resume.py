"""Exact resume: a run killed with SIGKILL and resumed with `--ckpt_path last` ends with the same
trainable weights, optimiser and schedule state as an uninterrupted run with the same seed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_data_args

from weft_lightning.checkpoint import read_checkpoint

REPO = Path(__file__).parents[1]
EPOCHS = 4
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
              init_args:
                model_name: vit_tiny_patch16_224
                model_kwargs: {depth: 4}
                drop_path_rate: 0.1
            conv_channels: 16
            kernel_sizes: [1, 3, 5]
            top_k: 2
            deform_heads: 4
            deform_points: 2
            extra_extractors: 0
"""


def fit_command(tmp_path: Path, root: Path) -> list[str]:
    """`weft fit` of a tiny WEFT for EPOCHS short epochs, deterministic, with augmentation."""
    tiny = tmp_path / "tiny_weft.yaml"
    tiny.write_text(TINY_WEFT)
    return [
        sys.executable, "-m", "weft_lightning.cli", "fit",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(tiny),
        "--trainer.default_root_dir", str(root),
        "--trainer.deterministic", "true",
        "--trainer.max_epochs", str(EPOCHS),
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1",
        *tiny_data_args(tmp_path, 12, 2),
    ]  # fmt: skip


def newest_last(root: Path) -> Path | None:
    found = sorted(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run(command: list[str]) -> None:
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]


def kill_after_first_checkpoint(command: list[str], root: Path) -> dict:
    """Start the run, SIGKILL it once a complete checkpoint exists, return that checkpoint."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    deadline = time.monotonic() + 900
    checkpoint = None
    while checkpoint is None and time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        path = newest_last(root)
        if path is not None:
            try:
                checkpoint = read_checkpoint(path)
            except (ValueError, RuntimeError, EOFError):
                checkpoint = None  # still being written
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert checkpoint is not None
    return checkpoint


@pytest.mark.slow
def test_sigkill_and_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run(fit_command(tmp_path, whole))
    interrupted = kill_after_first_checkpoint(fit_command(tmp_path, broken), broken)
    assert interrupted["epoch"] < EPOCHS - 1  # killed with training left to do
    run([*fit_command(tmp_path, broken), "--ckpt_path", "last"])

    expected = read_checkpoint(newest_last(whole))
    resumed = read_checkpoint(newest_last(broken))
    assert resumed["global_step"] == expected["global_step"] == EPOCHS * 3
    assert resumed["epoch"] == expected["epoch"]
    assert resumed["lr_schedulers"][0]["last_epoch"] == expected["lr_schedulers"][0]["last_epoch"]
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    moments = zip(
        resumed["optimizer_states"][0]["state"].values(),
        expected["optimizer_states"][0]["state"].values(),
        strict=True,
    )
    for mine, theirs in moments:
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"])
