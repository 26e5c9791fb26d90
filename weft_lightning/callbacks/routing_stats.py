"""RoutingStats: how often each wavelet expert is chosen, and with what weight, per epoch."""

from __future__ import annotations

import csv
import re
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

from weft_lightning.callbacks.media import log_folder, wandb_loggers
from weft_lightning.models.contracts import HasRoutingStats

KEY = re.compile(
    r"^(?:(?P<scale>.+)/)?expert(?P<index>\d+)_k(?P<kernel>\d+)/(?P<stat>chosen|weight)$"
)
COLUMNS = ["phase", "scale", "expert", "kernel", "chosen", "weight"]


def find_router_owner(pl_module: L.LightningModule) -> HasRoutingStats | None:
    """The backbone (or first sub-module) that exposes ``routing_stats()``."""
    backbone = getattr(getattr(pl_module, "segmentor", None), "backbone", None)
    candidates = [backbone] if backbone is not None else []
    candidates += list(pl_module.modules())
    for module in candidates:
        if isinstance(module, HasRoutingStats):
            return module
    return None


def stats_rows(phase: str, stats: dict[str, float]) -> list[list[Any]]:
    """Table rows ``[phase, scale, expert, kernel, chosen, weight]`` from routing-stat keys.

    Keys look like ``expert3_k7/chosen``, optionally prefixed by a scale (``c2/expert3_k7/...``);
    keys without a scale are reported under scale ``all``.
    """
    merged: dict[tuple[str, int, int], dict[str, float]] = {}
    for key, value in stats.items():
        match = KEY.match(key)
        if match is None:
            continue
        ident = (match["scale"] or "all", int(match["index"]), int(match["kernel"]))
        merged.setdefault(ident, {})[match["stat"]] = float(value)
    return [
        [phase, scale, index, kernel, values.get("chosen", 0.0), values.get("weight", 0.0)]
        for (scale, index, kernel), values in sorted(merged.items())
    ]


class RoutingStats(Callback):
    """Logs the expert-routing statistics of the backbone (if it has experts) every epoch.

    Training statistics cover the epoch's training batches, validation statistics the
    validation pass. Scalars go to every logger as ``routing/<phase>/<key>``; the table goes to
    W&B as ``routing/<phase>`` when a WandbLogger is used, and to
    ``<log_dir>/routing/<phase>_epochNNN.csv`` (plus a bar chart PNG) otherwise. Under DDP the
    shares are averaged over the ranks.

    Args:
        plot: also draw a bar chart PNG when writing CSV files.
    """

    def __init__(self, plot: bool = True) -> None:
        self.plot = plot
        self.history: list[list[Any]] = []

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        owner = find_router_owner(pl_module)
        if owner is not None:
            owner.routing_stats()  # drop what earlier evaluation passes accumulated

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == "fit" and not trainer.sanity_checking:
            self._collect(trainer, pl_module, "train")
        else:
            owner = find_router_owner(pl_module)
            if owner is not None:
                owner.routing_stats()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._collect(trainer, pl_module, "val")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._collect(trainer, pl_module, "train")  # epochs without validation; else all zero

    def _collect(self, trainer: L.Trainer, pl_module: L.LightningModule, phase: str) -> None:
        owner = find_router_owner(pl_module)
        stats = owner.routing_stats() if owner is not None else {}
        if not stats:
            return
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], device=pl_module.device)
        values = trainer.strategy.reduce(values, reduce_op="mean")
        stats = dict(zip(keys, values.tolist(), strict=True))
        if not trainer.is_global_zero or not any(v > 0 for v in stats.values()):
            return
        metrics = {f"routing/{phase}/{k}": v for k, v in stats.items()}
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        rows = stats_rows(phase, stats)
        self.history += [[trainer.current_epoch, *row] for row in rows]
        self._write(trainer, phase, rows)

    def _write(self, trainer: L.Trainer, phase: str, rows: list[list[Any]]) -> None:
        loggers = wandb_loggers(trainer)
        for logger in loggers:
            logger.log_table(f"routing/{phase}", COLUMNS, rows, step=trainer.global_step)
        if loggers:
            return
        folder = log_folder(trainer, "routing")
        stem = f"{phase}_epoch{trainer.current_epoch:03d}"
        with open(folder / f"{stem}.csv", "w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(COLUMNS)
            writer.writerows(rows)
        if self.plot:
            title = f"expert routing ({phase}, epoch {trainer.current_epoch})"
            plot_rows(rows, folder / f"{stem}.png", title)


def plot_rows(rows: list[list[Any]], path: Any, title: str) -> None:
    """Bar chart of selection share and mean weight per expert (one group of bars per scale)."""
    from matplotlib.figure import Figure

    labels = [f"{row[1]}\nE{row[2]} k{row[3]}" for row in rows]
    positions = range(len(rows))
    figure = Figure(figsize=(max(4, 0.6 * len(rows)), 3))
    axis = figure.add_subplot()
    axis.bar([p - 0.2 for p in positions], [row[4] for row in rows], width=0.4, label="chosen")
    axis.bar([p + 0.2 for p in positions], [row[5] for row in rows], width=0.4, label="weight")
    axis.set_xticks(list(positions), labels, fontsize=7)
    axis.set_ylim(0, 1)
    axis.set_title(title, fontsize=9)
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=80)
