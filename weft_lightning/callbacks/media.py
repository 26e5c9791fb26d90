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
    """The run's own log folder: ``trainer.log_dir`` for TensorBoard and CSV loggers (one
    ``version_N`` per run), ``<save_dir>/<name>/<version>`` for other loggers such as W&B (whose
    ``save_dir`` every run shares), the trainer's root without a logger. Unlike
    ``trainer.log_dir`` it does not broadcast, so rank zero alone may ask (a lone collective
    call would hang a DDP run)."""
    if not trainer.loggers:
        return Path(trainer.default_root_dir)
    logger = trainer.loggers[0]
    if isinstance(logger, TensorBoardLogger | CSVLogger):
        return Path(logger.log_dir)
    save_dir = Path(logger.save_dir or trainer.default_root_dir)
    version = logger.version  # W&B: the run's id once its run exists
    if version is None:
        return save_dir
    return save_dir / str(logger.name or "runs") / str(version)


def log_folder(trainer: L.Trainer, name: str) -> Path:
    """``<run folder>/<name>``, created."""
    folder = run_folder(trainer) / name
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def save_png(array: np.ndarray, path: Path) -> Path:
    """Write an (H, W) or (H, W, 3) uint8 array as PNG."""
    Image.fromarray(array).save(path)
    return path
