"""ModelCheckpoint whose ``last.ckpt`` is the latest training state (for ``--ckpt_path last``),
whose best checkpoint is the best of the whole run across resumes, and whose files are written
atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import Tensor

from weft_lightning.checkpoint import AtomicCheckpointIO


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, but ``save_last=True`` rewrites ``last.ckpt`` at every save
    point (each validation, epoch or step interval it checks), not only when a top-k checkpoint
    is written.

    Since Lightning 2.6 a monitored ModelCheckpoint writes ``last.ckpt`` only together with a
    new top-k checkpoint: with ``save_top_k=1`` it stays at the best epoch, so a run resumed
    with ``--ckpt_path last`` silently repeats the epochs since then, and a finished run's
    ``last.ckpt`` is not its final state. Same name as Lightning's class, so the callback state
    in earlier checkpoints still loads.

    A resumed run writes into a new version folder, and Lightning then forgets the best score
    and the top-k list of the folders before, so the first epoch after a resume became the
    "best" even when an earlier one was better. Here the record of the whole run is kept (for
    every earlier checkpoint file that still exists): a resumed run replaces a best only with a
    better one.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Every checkpoint of the run (top-k, last, SLURM requeue) is written atomically."""
        super().setup(trainer, pl_module, stage)
        if type(trainer.strategy.checkpoint_io) is TorchCheckpointIO:
            trainer.strategy.checkpoint_io = AtomicCheckpointIO()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if state_dict.get("dirpath", self.dirpath) == self.dirpath:
            super().load_state_dict(state_dict)
            return
        kept = {
            path: score
            for path, score in state_dict.get("best_k_models", {}).items()
            if Path(path).is_file()
        }
        self.best_k_models = kept
        best = state_dict.get("best_model_path", "")
        known = bool(best) and Path(best).is_file()
        self.best_model_path = best if known else ""
        self.best_model_score = state_dict.get("best_model_score") if known else None
        if kept:
            worst = max if self.mode == "min" else min
            self.kth_best_model_path = worst(kept, key=lambda p: float(kept[p]))
            self.kth_value = kept[self.kth_best_model_path]

    def _save_topk_checkpoint(
        self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last is True:
            # Lightning follows each top-k check with a last.ckpt save that it skips unless a
            # checkpoint was written at this step: mark the step as a save point.
            self._last_global_step_saved = trainer.global_step
