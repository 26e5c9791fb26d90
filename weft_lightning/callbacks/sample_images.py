"""SampleImages: image | ground truth | prediction panels for a few fixed validation images."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from weft_lightning.callbacks.media import log_folder, save_png, wandb_loggers
from weft_lightning.data.dataset import read_image

SEPARATOR = 4


def gray_to_rgb(prob: torch.Tensor) -> np.ndarray:
    """A (1, H, W) or (H, W) map in [0, 1] as an (H, W, 3) uint8 picture."""
    gray = (prob.detach().float().cpu().reshape(prob.shape[-2:]).clamp(0, 1) * 255).round().byte()
    return gray[..., None].expand(-1, -1, 3).numpy()


def panel(image: np.ndarray, truth: np.ndarray, prediction: np.ndarray) -> np.ndarray:
    """Side by side with white separators: image | ground truth | prediction."""
    gap = np.full((image.shape[0], SEPARATOR, 3), 255, dtype=np.uint8)
    return np.concatenate([image, gap, truth, gap, prediction], axis=1)


class SampleImages(Callback):
    """Logs panels of the first ``num_images`` validation images after every validation epoch.

    The same images are shown every time (the validation loader is not shuffled), so panels of
    successive epochs show how the prediction evolves (under DDP: the first images of rank
    zero's share of the validation set). With a W&B logger they go to the run's
    media (key ``val/samples``); otherwise they are PNG files in ``<log_dir>/samples/``.

    Args:
        num_images: how many images of the first validation batches to show.
    """

    def __init__(self, num_images: int = 4) -> None:
        if num_images < 1:
            raise ValueError(f"SampleImages num_images must be >= 1, got {num_images}.")
        self.num_images = num_images
        self._panels: list[tuple[str, np.ndarray]] = []

    def on_validation_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._panels = []

    def on_validation_batch_end(
        self,
        trainer: L.Trainer,
        pl_module: L.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        missing = self.num_images - len(self._panels)
        if trainer.sanity_checking or not trainer.is_global_zero or missing <= 0 or dataloader_idx:
            return
        if not isinstance(outputs, dict) or "probs" not in outputs:
            return
        items = zip(batch["path"], batch["gt"], outputs["probs"], batch["name"], strict=True)
        for path, truth, prob, name in list(items)[:missing]:
            picture = panel(
                read_image(Path(path)),
                gray_to_rgb(torch.as_tensor(truth) / 255.0),
                gray_to_rgb(prob),
            )
            self._panels.append((str(name), picture))

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero or not self._panels:
            return
        names = [name for name, _ in self._panels]
        pictures = [picture for _, picture in self._panels]
        loggers = wandb_loggers(trainer)
        for logger in loggers:
            captions = [f"{n}: image | ground truth | prediction" for n in names]
            logger.log_image("val/samples", pictures, step=trainer.global_step, caption=captions)
        if not loggers:
            folder = log_folder(trainer, "samples")
            for name, picture in self._panels:
                save_png(picture, folder / f"epoch{trainer.current_epoch:03d}_{name}.png")
        self._panels = []
