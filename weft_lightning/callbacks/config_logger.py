"""LoggerSaveConfigCallback: the resolved config goes to the log folder, loggers and checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from weft_lightning.callbacks.media import run_folder, wandb_loggers
from weft_lightning.checkpoint import CONFIG_KEY


class LoggerSaveConfigCallback(SaveConfigCallback):
    """LightningCLI's SaveConfigCallback that also sends the full resolved config to every logger
    (as nested hyper-parameters, so W&B can filter and group runs by any config key) and stores
    it as YAML in every checkpoint, which makes a checkpoint rebuildable on its own.
    """

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        """Write ``config.yaml`` into the run's own folder (:func:`run_folder`), so that runs
        sharing a logger's save folder (W&B) keep one config each."""
        if self.already_saved:
            return
        folder = None
        if trainer.is_global_zero:
            for logger in wandb_loggers(trainer):
                logger.experiment  # noqa: B018  (creates the run: its id names the folder)
            folder = str(run_folder(trainer))
        folder = trainer.strategy.broadcast(folder)
        if trainer.is_global_zero and self.save_to_log_dir:
            assert folder is not None
            Path(folder).mkdir(parents=True, exist_ok=True)
            self.parser.save(
                self.config,
                str(Path(folder) / self.config_filename),
                skip_none=False,
                overwrite=self.overwrite,
                multifile=self.multifile,
            )
        if trainer.is_global_zero:
            self.save_config(trainer, pl_module, stage)
            self.already_saved = True
        self.already_saved = trainer.strategy.broadcast(self.already_saved)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))  # plain types
        config.pop("config", None)  # paths of the --config files; the values are what matter
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.parser.dump(self.config, skip_none=False)
