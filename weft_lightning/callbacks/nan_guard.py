"""NaNGuard: a NaN or infinite training loss stops the run (or skips the batch), never silently."""

from __future__ import annotations

from typing import Any, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

Action = Literal["stop", "skip"]
ACTIONS: tuple[str, ...] = get_args(Action)


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite."""


class NaNGuard(Callback):
    """Checks every training loss before its backward pass.

    With ``action="stop"`` a NaN/Inf loss raises :class:`NonFiniteLossError` naming the step,
    before the optimiser can write the bad gradients into the weights. With ``action="skip"``
    the batch is dropped: its gradients are discarded so the optimiser leaves every parameter
    untouched (AdamW skips parameters without gradients), and the buffers changed by its
    forward pass (batch-norm statistics) are put back; the learning-rate schedule still
    advances. With gradient accumulation a bad micro-batch drops its whole accumulation window.
    All DDP ranks take the same decision.

    Args:
        action: ``stop`` (default) or ``skip``.
        max_consecutive_skips: with ``skip``, stop anyway after this many bad batches in a row.
    """

    def __init__(self, action: Action = "stop", max_consecutive_skips: int = 10) -> None:
        if action not in ACTIONS:
            raise ValueError(f"NaNGuard action must be one of {ACTIONS}, got {action!r}.")
        if max_consecutive_skips < 1:
            raise ValueError(f"max_consecutive_skips must be >= 1, got {max_consecutive_skips}.")
        self.action = action
        self.max_consecutive_skips = max_consecutive_skips
        self.skipped = 0
        self.consecutive = 0
        self._bad = False
        self._buffers: dict[str, torch.Tensor] = {}

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if self.action == "skip" and not self._bad:
            self._buffers = {
                name: b.detach().clone()
                for name, b in pl_module.named_buffers()
                if b.is_floating_point() or name.endswith("num_batches_tracked")
            }

    def on_before_backward(
        self, trainer: L.Trainer, pl_module: L.LightningModule, loss: torch.Tensor
    ) -> None:
        local_bad = not bool(torch.isfinite(loss.detach()).all())
        bad = bool(trainer.strategy.reduce_boolean_decision(local_bad, all=False))
        if not bad:
            self.consecutive = 0
            return
        self._bad = True
        where = (
            f"global step {trainer.global_step} (epoch {trainer.current_epoch}, "
            f"batch {trainer.fit_loop.epoch_loop.batch_idx})"
        )
        if self.action == "stop":
            raise NonFiniteLossError(
                f"The training loss is {loss.detach().float().item()} at {where}; stopping before "
                "the weights are corrupted. Lower the learning rate, check the data, or run with "
                "--nan_guard.action skip to drop such batches."
            )
        self.skipped += 1
        self.consecutive += 1
        rank_zero_warn(f"Non-finite training loss at {where}: batch skipped (#{self.skipped}).")
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteLossError(
                f"{self.consecutive} consecutive non-finite training losses up to {where}; "
                "the run diverged. Lower the learning rate or check the data."
            )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._bad:
            return
        self._bad = False
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        buffers = dict(pl_module.named_buffers())
        with torch.no_grad():
            for name, saved in self._buffers.items():
                buffers[name].copy_(saved)
        pl_module.log("train/skipped_batches", float(self.skipped), rank_zero_only=True)

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
