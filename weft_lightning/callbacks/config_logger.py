"""LoggerSaveConfigCallback: the resolved config goes to the log folder, loggers and checkpoints."""

from __future__ import annotations

from typing import Any

import lightning as L
import yaml
from lightning.pytorch.cli import SaveConfigCallback

from weft_lightning.checkpoint import CONFIG_KEY


class LoggerSaveConfigCallback(SaveConfigCallback):
    """LightningCLI's SaveConfigCallback that also sends the full resolved config to every logger
    (as nested hyper-parameters, so W&B can filter and group runs by any config key) and stores
    it as YAML in every checkpoint, which makes a checkpoint rebuildable on its own.
    """

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))  # plain types
        config.pop("config", None)  # paths of the --config files; the values are what matter
        for logger in trainer.loggers:
            logger.log_hyperparams({"config": config})

    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[CONFIG_KEY] = self.parser.dump(self.config, skip_none=False)
