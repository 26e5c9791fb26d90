"""ExperimentRun: the progress and the test results of one experiment run, in the run's folder.

``weft experiment`` starts each ``weft fit``/``weft test`` with ``WEFT_EXPERIMENT_RUN`` set to
the run's folder; this callback (in every trainer, idle without the variable) then keeps
``progress.json`` (stage, step, step budget, elapsed time, latest loss) current while training
and writes ``results.json`` (every ``test/`` metric and the checkpoint tested) after testing,
which the launcher's live table and ``weft experiment report`` read.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback

from weft_lightning.callbacks.run_summary import metric_values

__all__ = ["RUN_ENV", "ExperimentRun", "write_json"]

RUN_ENV = "WEFT_EXPERIMENT_RUN"
PROGRESS_FILE, RESULTS_FILE = "progress.json", "results.json"


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON through a temporary file and a rename: readers never see half a file."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(json.dumps(data, indent=2))
    temporary.replace(path)


class ExperimentRun(Callback):
    """Progress and results of an experiment run (see the module docstring)."""

    def __init__(self, every_n_steps: int = 5) -> None:
        self.every_n_steps = every_n_steps
        self._started = time.monotonic()
        self._first_step = 0

    @staticmethod
    def folder() -> Path | None:
        """The run folder named by ``WEFT_EXPERIMENT_RUN`` (None outside an experiment)."""
        value = os.environ.get(RUN_ENV)
        return Path(value) if value else None

    def _progress(self, trainer: L.Trainer, stage: str) -> None:
        folder = self.folder()
        if folder is None or not trainer.is_global_zero:
            return
        loss = trainer.callback_metrics.get("train/loss")
        budget = trainer.max_steps if trainer.max_steps > 0 else trainer.estimated_stepping_batches
        write_json(
            folder / PROGRESS_FILE,
            {
                "stage": stage,
                "step": trainer.global_step,
                "first_step": self._first_step,  # where this process started (a resume)
                "max_steps": int(budget) if budget != float("inf") else None,
                "elapsed_s": round(time.monotonic() - self._started, 1),
                "loss": None if loss is None else float(loss),
            },
        )

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._started = time.monotonic()
        self._first_step = trainer.global_step
        self._progress(trainer, "fit")

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        if trainer.global_step % self.every_n_steps == 0:
            self._progress(trainer, "fit")

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._progress(trainer, "fitted")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        folder = self.folder()
        if folder is None or not trainer.is_global_zero:
            return
        results = {"checkpoint": trainer.ckpt_path, "metrics": metric_values(trainer, "test/")}
        write_json(folder / RESULTS_FILE, results)
