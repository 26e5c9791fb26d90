"""NaNGuard: a NaN loss stops the run naming the step, or the batch is skipped without a trace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from helpers import tiny_data_args
from lightning.pytorch.callbacks import Callback

from weft_lightning.callbacks import NaNGuard, NonFiniteError
from weft_lightning.lightning_cli import build_cli

REPO = Path(__file__).parents[1]


class CorruptBatch(Callback):
    """Puts a NaN into one training image (as a broken file or a bad augmentation would) and
    records the trainable weights and buffers around that batch."""

    def __init__(self, batch_index: int) -> None:
        self.batch_index = batch_index
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if trainer.global_step == self.batch_index:
            batch["image"][0, :, :4, :4] = float("nan")
            self.before = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any,
        batch_idx: int,
    ) -> None:  # fmt: skip
        if trainer.global_step == self.batch_index + 1:
            self.after = {k: v.detach().clone() for k, v in pl_module.state_dict().items()}


def run(tmp_path: Path, action: str, corrupt: CorruptBatch) -> tuple[L.Trainer, L.LightningModule]:
    """Fit the tiny demo for 3 steps with one corrupted batch."""
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.max_steps", "3",
        "--trainer.limit_val_batches", "0",
        "--trainer.logger", "false",
        "--trainer.enable_checkpointing", "false",
        "--trainer.callbacks", "null",
        "--nan_guard.action", action,
        *tiny_data_args(tmp_path, 12, 2),
    ]  # fmt: skip
    cli = build_cli(args, run=False)
    cli.trainer.callbacks.append(corrupt)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    return cli.trainer, cli.model


def test_nan_loss_stops_the_run_naming_the_step(tmp_path: Path) -> None:
    corrupt = CorruptBatch(batch_index=1)
    with pytest.raises(NonFiniteError, match=r"global step 1 \(epoch 0, batch 1\)"):
        run(tmp_path, "stop", corrupt)
    assert corrupt.before and not corrupt.after


def test_nan_loss_skips_the_batch_when_asked(tmp_path: Path) -> None:
    corrupt = CorruptBatch(batch_index=1)
    trainer, module = run(tmp_path, "skip", corrupt)
    guard = next(c for c in trainer.callbacks if isinstance(c, NaNGuard))
    assert guard.skipped == 1 and trainer.global_step == 3
    # the skipped batch changed nothing: weights and batch-norm statistics are as before it
    assert corrupt.after.keys() == corrupt.before.keys()
    for key, value in corrupt.before.items():
        assert torch.equal(corrupt.after[key], value), key
    final = module.state_dict()
    assert all(torch.isfinite(v).all() for v in final.values() if v.is_floating_point())
    assert any(not torch.equal(final[k], v) for k, v in corrupt.before.items())  # later steps train


def test_bad_action_is_refused() -> None:
    with pytest.raises(ValueError, match="action must be one of"):
        NaNGuard(action="ignore")


def test_a_diverging_run_stops_in_one_line_and_keeps_a_finite_last_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """lr 1000: the losses stay finite while the weights explode and the maps turn NaN."""
    from weft_lightning.checkpoint import read_checkpoint
    from weft_lightning.cli import main

    args = [
        "fit",
        "--config", str(Path(__file__).parents[1] / "configs" / "demo.yaml"),
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--model.init_args.lr", "1000",
        "--trainer.max_epochs", "6",
        "--trainer.limit_train_batches", "3",
        "--trainer.enable_progress_bar", "false",
        *tiny_data_args(tmp_path, 12, 4),
    ]  # fmt: skip
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("weft: error:")]
    assert len(lines) == 1 and "Traceback" not in err, err[-3000:]
    assert "NaN or infinite" in lines[0] and "global step" in lines[0]
    assert "learning rate" in lines[0]
    lasts = list((tmp_path / "run").rglob("last.ckpt"))
    assert lasts, "an earlier epoch's checkpoint is kept"
    state = read_checkpoint(lasts[0])["state_dict"]
    assert all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())
