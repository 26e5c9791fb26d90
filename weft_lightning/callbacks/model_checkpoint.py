"""ModelCheckpoint whose ``last.ckpt`` is the latest training state (for ``--ckpt_path last``)."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint as LightningModelCheckpoint
from torch import Tensor


class ModelCheckpoint(LightningModelCheckpoint):
    """Lightning's ModelCheckpoint, but ``save_last=True`` rewrites ``last.ckpt`` at every save
    point (each validation, epoch or step interval it checks), not only when a top-k checkpoint
    is written.

    Since Lightning 2.6 a monitored ModelCheckpoint writes ``last.ckpt`` only together with a
    new top-k checkpoint: with ``save_top_k=1`` it stays at the best epoch, so a run resumed
    with ``--ckpt_path last`` silently repeats the epochs since then, and a finished run's
    ``last.ckpt`` is not its final state. Same name as Lightning's class, so the callback state
    in earlier checkpoints still loads.
    """

    def _save_topk_checkpoint(
        self, trainer: L.Trainer, monitor_candidates: dict[str, Tensor]
    ) -> None:
        super()._save_topk_checkpoint(trainer, monitor_candidates)
        if self.save_last is True:
            # Lightning follows each top-k check with a last.ckpt save that it skips unless a
            # checkpoint was written at this step: mark the step as a save point.
            self._last_global_step_saved = trainer.global_step
