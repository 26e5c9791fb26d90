"""Where callbacks put images and tables: W&B media with a WandbLogger, files otherwise."""

from __future__ import annotations

from pathlib import Path

import lightning as L
import numpy as np
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image


def wandb_loggers(trainer: L.Trainer) -> list[WandbLogger]:
    """The trainer's W&B loggers (usually none or one)."""
    return [logger for logger in trainer.loggers if isinstance(logger, WandbLogger)]


def run_folder(trainer: L.Trainer) -> Path:
    """The run's log folder, as ``trainer.log_dir`` gives it but without its broadcast, so that
    rank zero alone may ask (a lone collective call would hang a DDP run)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, TensorBoardLogger | CSVLogger):
        return Path(logger.log_dir)
    return Path(logger.save_dir or trainer.default_root_dir)


def log_folder(trainer: L.Trainer, name: str) -> Path:
    """``<run folder>/<name>``, created."""
    folder = run_folder(trainer) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG."""
    Image.fromarray(array).save(path)
    return path
