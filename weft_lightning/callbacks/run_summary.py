"""RunSummary: a short end-of-run report (checkpoints, metrics table) on screen and as JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from rich.console import Console
from rich.table import Table

from weft_lightning.callbacks.media import run_folder


def metric_values(trainer: L.Trainer, prefix: str) -> dict[str, float]:
    """Scalar metrics of the trainer whose names start with ``prefix``, as floats."""
    values: dict[str, float] = {}
    for key, value in trainer.callback_metrics.items():
        if key.startswith(prefix) and getattr(value, "numel", lambda: 1)() == 1:
            values[key] = float(value)
    return dict(sorted(values.items()))


def metrics_table(title: str, metrics: dict[str, float]) -> Table:
    """A two-column rich table of metric names and values."""
    table = Table(title=title, title_justify="left")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in metrics.items():
        table.add_row(key, "nan" if math.isnan(value) else f"{value:.4f}")
    return table


class RunSummary(Callback):
    """At the end of ``fit``: best and last checkpoint and the final validation metrics; at the
    end of ``test`` or ``validate``: the checkpoint evaluated and its metrics. Printed on rank
    zero and written, with the metrics, to ``<log_dir>/summary_<stage>.json`` for scripts.
    """

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        checkpoint = trainer.checkpoint_callback
        summary: dict[str, Any] = {
            "stage": "fit",
            "epochs": trainer.current_epoch,
            "global_step": trainer.global_step,
            "best_checkpoint": getattr(checkpoint, "best_model_path", "") or None,
            "best_score": _to_float(getattr(checkpoint, "best_model_score", None)),
            "monitor": getattr(checkpoint, "monitor", None),
            "last_checkpoint": getattr(checkpoint, "last_model_path", "") or None,
            "metrics": metric_values(trainer, "val/"),
        }
        self._report(trainer, summary)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._report(trainer, _evaluation_summary(trainer, "test"))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # not the validations inside fit
            self._report(trainer, _evaluation_summary(trainer, "validate"))

    def _report(self, trainer: L.Trainer, summary: dict[str, Any]) -> None:
        if not trainer.is_global_zero:
            return
        folder = run_folder(trainer)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"summary_{summary['stage']}.json"
        path.write_text(json.dumps(summary, indent=2))
        console = Console(soft_wrap=True)
        stage = summary["stage"]
        if stage == "fit":
            score = summary["best_score"]
            shown = f" ({summary['monitor']} = {score:.4f})" if score is not None else ""
            console.print(f"Best checkpoint: {summary['best_checkpoint']}{shown}")
            console.print(f"Last checkpoint: {summary['last_checkpoint']}")
            if summary["metrics"]:
                console.print(metrics_table("final validation metrics", summary["metrics"]))
        else:  # the metrics tables are printed by the module (test) and Lightning (validate)
            verb = "Tested" if stage == "test" else "Validated"
            console.print(f"{verb} checkpoint: {summary['checkpoint'] or 'current weights'}")
        console.print(f"Summary written to {path}")


def _evaluation_summary(trainer: L.Trainer, stage: str) -> dict[str, Any]:
    prefix = "test/" if stage == "test" else "val/"
    return {
        "stage": stage,
        "checkpoint": trainer.ckpt_path,
        "metrics": metric_values(trainer, prefix),
    }


def _to_float(value: Any) -> float | None:
    return None if value is None else float(value)
