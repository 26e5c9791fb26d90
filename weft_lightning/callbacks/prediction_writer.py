"""PredictionWriter: 8-bit PNG maps at each image's original size, one folder per dataset."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image


def to_uint8(prob: torch.Tensor) -> np.ndarray:
    """The 8-bit map users save and metrics score: round(255 * p), clipped to 0..255."""
    return (prob.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()


class PredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<dataset>/<stem>.png`` for every predicted (and tested) image.

    Args:
        output_dir: root folder of the maps; by default ``<trainer.default_root_dir>/predictions``.
        write_test: also write the maps produced during ``weft test``.
    """

    def __init__(self, output_dir: str | None = None, write_test: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.write_test = write_test
        self.written = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "predictions"

    def _write(self, outputs: dict[str, Any]) -> None:
        assert self.output_dir is not None
        for prob, name, dataset in zip(
            outputs["probs"], outputs["name"], outputs["dataset"], strict=True
        ):
            folder = self.output_dir / dataset
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(to_uint8(prob)).save(folder / f"{name}.png")
            self.written += 1

    def write_on_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._write(prediction)

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        if self.write_test and isinstance(outputs, dict) and "probs" in outputs:
            self._write(outputs)

    def _report(self) -> None:
        if self.written:
            assert self.output_dir is not None  # set before the first map was written
            rank_zero_info(
                f"Wrote {self.written} prediction maps under {self.output_dir.resolve()}"
            )
        self.written = 0

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report()
