"""NaNGuard: a NaN or infinite loss, gradient, weight or predicted map stops the run (a bad loss
or gradient may skip the batch instead), never silently and never with a traceback."""

from __future__ import annotations

from typing import Any, Literal, get_args

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_warn

Action = Literal["stop", "skip"]
ACTIONS: tuple[str, ...] = get_args(Action)


class NonFiniteError(RuntimeError):
    """The loss, the gradients, the weights or the predicted maps became NaN or infinite."""


ADVICE = (
    "The last good checkpoint is kept. Lower the learning rate (--model.init_args.lr), or "
    "train in fp32 (--trainer.precision 32-true) when bf16/fp16 overflows."
)


def _where(trainer: L.Trainer) -> str:
    return (
        f"global step {trainer.global_step} (epoch {trainer.current_epoch}, "
        f"batch {trainer.fit_loop.epoch_loop.batch_idx})"
    )


def _non_finite(named: list[tuple[str, torch.Tensor]]) -> list[str]:
    """Names of the tensors holding a NaN or an infinity (one device sync for all)."""
    if not named:
        return []
    flags = torch.stack([torch.isfinite(t).all() for _, t in named]).cpu().tolist()
    return [name for (name, _), finite in zip(named, flags, strict=True) if not finite]


def check_maps(maps: list[torch.Tensor], names: list[str], trainer: L.Trainer | None) -> None:
    """Raise :class:`NonFiniteError` naming the image when a predicted map is not finite
    (metrics would fail deep inside with a traceback)."""
    bad = _non_finite([(str(n), m) for n, m in zip(names, maps, strict=True)])
    if not bad:
        return
    if trainer is not None and trainer.state.fn == "fit":
        raise NonFiniteError(
            f"The predicted maps are NaN or infinite in the validation at global step "
            f"{trainer.global_step} (epoch {trainer.current_epoch}; e.g. image "
            f"{bad[0]}): the weights diverged, although every training loss was finite. {ADVICE}"
        )
    source = getattr(trainer, "ckpt_path", None) or "the current weights"
    raise NonFiniteError(
        f"{source} gives NaN or infinite maps (e.g. image {bad[0]}): its weights are not "
        "usable; evaluate an earlier checkpoint of the run."
    )


class NaNGuard(Callback):
    """Checks every training loss before its backward pass, the gradients before each
    optimiser step and the trainable weights after it (the module checks the predicted maps).

    With ``action="stop"`` a NaN/Inf loss or gradient raises :class:`NonFiniteError` naming
    the step and the part, before the optimiser can write it into the weights; non-finite
    weights stop the run before a checkpoint of them is written. With ``action="skip"`` a bad
    loss or gradient drops the batch: its gradients are discarded so the optimiser leaves every
    parameter untouched (AdamW skips parameters without gradients), and the buffers changed by its
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
        self._bad_batch(trainer, f"The training loss is {loss.detach().float().item()}")

    def _bad_batch(self, trainer: L.Trainer, what: str) -> None:
        """Stop, or (``skip``) mark the batch to be dropped before the optimiser step."""
        self._bad = True
        where = _where(trainer)
        if self.action == "stop":
            raise NonFiniteError(
                f"{what} at {where}; stopping before the weights are corrupted. {ADVICE} "
                "Check the data, or drop such batches with --nan_guard.action skip."
            )
        self.skipped += 1
        self.consecutive += 1
        rank_zero_warn(f"{what} at {where}: batch skipped (#{self.skipped}).")
        if self.consecutive >= self.max_consecutive_skips:
            raise NonFiniteError(
                f"{self.consecutive} non-finite batches in a row up to {where}; the run "
                f"diverged. {ADVICE}"
            )

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        if not self._bad:
            grads = [(n, p.grad) for n, p in pl_module.named_parameters() if p.grad is not None]
            bad = _non_finite(grads)
            decided = bool(trainer.strategy.reduce_boolean_decision(bool(bad), all=False))
            if not decided:
                return
            part = f"{bad[0]} and {len(bad) - 1} more" if bad else "another process's"
            self._bad_batch(trainer, f"The gradients of {part} are NaN or infinite")
        self._bad = False
        for group in optimizer.param_groups:
            for param in group["params"]:
                param.grad = None
        buffers = dict(pl_module.named_buffers())
        with torch.no_grad():
            for name, saved in self._buffers.items():
                buffers[name].copy_(saved)
        pl_module.log("train/skipped_batches", float(self.skipped), rank_zero_only=True)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any
    ) -> None:
        trainable = [(n, p.detach()) for n, p in pl_module.named_parameters() if p.requires_grad]
        bad = _non_finite(trainable)
        if bad:  # checked before any checkpoint of this step is written (those callbacks run last)
            raise NonFiniteError(
                f"The weights of {bad[0]} ({len(bad)} tensors) are NaN or infinite after "
                f"{_where(trainer)}. {ADVICE}"
            )

    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = int(state_dict.get("skipped", 0))
