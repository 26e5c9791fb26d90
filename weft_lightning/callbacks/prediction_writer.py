"""PredictionWriter: 8-bit PNG maps at each image's original size, one folder per dataset."""

from __future__ import annotations

import itertools
from collections import Counter
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


#: A hidden file in each map folder naming the image folder its maps were predicted from.
SOURCE_FILE = ".source"


def map_folder(output_dir: Path, dataset: str, source: Path) -> Path:
    """``<output_dir>/<dataset>`` for the maps of the images in ``source``, created; when that
    folder already holds another source's maps, ``<dataset>-2``, ``<dataset>-3``, ...: two
    image folders never share one map folder, and predicting the same images again replaces
    their maps."""
    origin = str(source.resolve())
    for number in itertools.count(1):
        folder = output_dir / (dataset if number == 1 else f"{dataset}-{number}")
        marker = folder / SOURCE_FILE
        recorded = marker.read_text().strip() if marker.is_file() else None
        taken = recorded is not None or (folder.is_dir() and any(folder.iterdir()))
        if recorded == origin or not taken:
            folder.mkdir(parents=True, exist_ok=True)
            marker.write_text(origin + "\n")
            return folder
    raise AssertionError("unreachable")


class PredictionWriter(BasePredictionWriter):
    """Writes ``<output_dir>/<dataset>/<stem>.png`` for every predicted (and tested) image; the
    folder is made unique per image folder (:func:`map_folder`).

    Args:
        output_dir: root folder of the maps; by default ``<trainer.default_root_dir>/predictions``.
        write_test: also write the maps produced during ``weft test``.
    """

    def __init__(self, output_dir: str | None = None, write_test: bool = True) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = Path(output_dir) if output_dir else None
        self.write_test = write_test
        self.folders: dict[tuple[str, Path], Path] = {}
        self.written: Counter[Path] = Counter()

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.output_dir is None:
            self.output_dir = Path(trainer.default_root_dir) / "predictions"

    def _write(self, outputs: dict[str, Any], paths: Sequence[str]) -> None:
        assert self.output_dir is not None
        for prob, name, dataset, path in zip(
            outputs["probs"], outputs["name"], outputs["dataset"], paths, strict=True
        ):
            key = (dataset, Path(path).parent)
            if key not in self.folders:
                self.folders[key] = map_folder(self.output_dir, *key)
            folder = self.folders[key]
            Image.fromarray(to_uint8(prob)).save(folder / f"{name}.png")
            self.written[folder] += 1

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
        self._write(prediction, batch["path"])

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
            self._write(outputs, batch["path"])

    def _report(self) -> None:
        for folder, count in self.written.items():
            rank_zero_info(f"Wrote {count} prediction maps to {folder.resolve()}")
        self.written.clear()
        self.folders.clear()

    def on_predict_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report()

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report()
