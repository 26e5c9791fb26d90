"""The LightningCLI of ``weft``: config files become a trainer, a WEFTModule and a data module.

``weft fit|validate|test|predict`` run it; :func:`weft_lightning.api.build_model` and the tools
that read configs use :func:`build_cli` with ``run=False``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from weft_lightning.callbacks import LoggerSaveConfigCallback, RunSummary
from weft_lightning.callbacks.nan_guard import NaNGuard
from weft_lightning.checkpoint import resume_checkpoint
from weft_lightning.config_files import EXTENDS_KEY, expand_config_args
from weft_lightning.data.datamodule import SegmentationDataModule
from weft_lightning.module import WEFTModule

__all__ = ["WEFTLightningCLI", "build_cli", "find_checkpoint"]


def find_checkpoint(root: Path, which: str) -> Path:
    """The ``best`` or ``last`` checkpoint of the most recent run under ``root``.

    ``last`` is the newest ``last.ckpt``; ``best`` is the newest other checkpoint in the same
    ``checkpoints/`` folder (the one ModelCheckpoint keeps for its monitored metric).
    """
    checkpoints = sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    lasts = [p for p in checkpoints if p.name.startswith("last")]
    if which == "last" and lasts:
        return lasts[-1]
    if which == "best":
        folder = lasts[-1].parent if lasts else None
        bests = [p for p in checkpoints if not p.name.startswith("last")]
        local = [p for p in bests if p.parent == folder]
        if local or bests:
            return (local or bests)[-1]
    raise FileNotFoundError(
        f"No {which!r} checkpoint found under {root}; train first with `weft fit` or pass a "
        "checkpoint file with --ckpt_path PATH."
    )


class WEFTLightningCLI(LightningCLI):
    """LightningCLI with the model and the data chosen by ``class_path`` in the config.

    ``--ckpt_path best|last`` in ``validate``, ``test`` and ``predict`` also works in a new
    process: the checkpoint is looked up under the trainer's ``default_root_dir`` and the
    loggers' save folders.
    """

    def _search_roots(self) -> list[Path]:
        roots = [self.trainer.default_root_dir]
        roots += [logger.save_dir for logger in self.trainer.loggers if logger.save_dir]
        return list(dict.fromkeys(Path(r) for r in roots))

    def _load_weights_only(self) -> None:
        """Checkpoints load weights-only (they never run code), whatever torch's default is
        (False before torch 2.6); an explicit ``--weights_only false`` is kept."""
        config = self.config_init[self.subcommand]
        if "weights_only" in config and config["weights_only"] is None:
            config["weights_only"] = True

    def _resolve_ckpt_path(self) -> None:
        self._load_weights_only()
        config = self.config_init[self.subcommand]
        which = config.get("ckpt_path")
        callback = self.trainer.checkpoint_callback
        known = isinstance(callback, ModelCheckpoint) and callback.best_model_path  # this process
        if which in ("best", "last") and not known:
            found, errors = [], []
            for root in self._search_roots():
                try:
                    found.append(find_checkpoint(root, which))
                except FileNotFoundError as error:
                    errors.append(str(error))
            if not found:
                raise FileNotFoundError(errors[0])
            config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))

    def _parse_ckpt_path(self) -> None:  # overrides a private LightningCLI step (tested)
        """Keep the config as given: a checkpoint's module hyper-parameters lack the segmentor
        (it is a nested config, stored whole under ``weft_config``), so merging them into the
        config, as LightningCLI does for ``--ckpt_path FILE``, would drop it."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Every run gets a NaN guard, configurable as ``--nan_guard.action stop|skip``."""
        parser.add_lightning_class_args(NaNGuard, "nan_guard")
        parser.add_argument(
            f"--{EXTENDS_KEY}",
            type=list[str] | None,
            default=None,
            help="config files this config stacks on (read before it, relative to it)",
        )

    def before_fit(self) -> None:
        """``--ckpt_path last`` resumes from the newest last/SLURM checkpoint of earlier runs,
        or starts from scratch (with a warning) when there is none yet."""
        self._load_weights_only()
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            return
        roots = self._search_roots()
        found = [p for p in (resume_checkpoint(r) for r in roots) if p is not None]
        if found:
            config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))
        else:
            rank_zero_warn(f"--ckpt_path last: no checkpoint under {roots}; starting from scratch.")
            config["ckpt_path"] = None

    def before_validate(self) -> None:
        self._resolve_ckpt_path()

    def before_test(self) -> None:
        self._resolve_ckpt_path()

    def before_predict(self) -> None:
        self._resolve_ckpt_path()


def build_cli(argv: Sequence[str], run: bool = True) -> WEFTLightningCLI:
    """The LightningCLI of ``weft`` on ``argv`` (``run=False``: parse and build, no subcommand).

    Parse errors raise :class:`jsonargparse.ArgumentError` (the caller reports them); ``--help``
    and ``--print_config`` exit as usual.
    """

    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within")
    argv = expand_config_args(argv)
    return WEFTLightningCLI(
        model_class=WEFTModule,
        datamodule_class=SegmentationDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_callback=LoggerSaveConfigCallback,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={"callbacks": [RunSummary()]},
        seed_everything_default=42,
        auto_configure_optimizers=False,
        args=list(argv),
        run=run,
        parser_kwargs={
            "description": "weft: WEFT fine-tuning of frozen ViTs for segmentation.",
            "exit_on_error": False,
        },
    )
