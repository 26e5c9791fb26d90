"""The ``weft`` command: LightningCLI subcommands (fit, validate, test, predict) and tools."""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

TOOLS: dict[str, tuple[str, str]] = {
    "synth": ("weft_lightning.data.synthetic:main", "generate a synthetic aerial-like dataset"),
    "eval": ("weft_lightning.evaluation.cli:main", "score saved prediction maps against masks"),
    "data": ("weft_lightning.data.check:main", "check a dataset folder for problems"),
    "info": ("weft_lightning.info:main", "parameter counts of a model config, as JSON"),
    "convert": ("weft_lightning.models.convert:main", "convert third-party backbone weights"),
}


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

    def _resolve_ckpt_path(self) -> None:
        config = self.config_init[self.subcommand]
        which = config.get("ckpt_path")
        if which in ("best", "last") and not self.trainer.checkpoint_callback.best_model_path:
            found, errors = [], []
            for root in self._search_roots():
                try:
                    found.append(find_checkpoint(root, which))
                except FileNotFoundError as error:
                    errors.append(str(error))
            if not found:
                raise FileNotFoundError(errors[0])
            config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))

    def _parse_ckpt_path(self) -> None:
        """Keep the config as given: a checkpoint's module hyper-parameters lack the segmentor
        (it is a nested config, stored whole under ``weft_config``), so merging them into the
        config, as LightningCLI does for ``--ckpt_path FILE``, would drop it."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        """Every run gets a NaN guard, configurable as ``--nan_guard.action stop|skip``."""
        from weft_lightning.callbacks.nan_guard import NaNGuard
        from weft_lightning.config_files import EXTENDS_KEY

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
        from weft_lightning.checkpoint import resume_checkpoint

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


def tools_help() -> str:
    lines = ["Tools (each has its own --help):"]
    lines += [f"  weft {name:<8} {summary}" for name, (_, summary) in TOOLS.items()]
    return "\n".join(lines)


def run_tool(name: str, argv: Sequence[str]) -> int:
    """Import and run the tool ``name`` with its own arguments."""
    target, _ = TOOLS[name]
    module_name, function = target.split(":")
    try:
        return int(getattr(importlib.import_module(module_name), function)(list(argv)) or 0)
    except SystemExit as exit_:
        return exit_code(exit_)


def exit_code(exit_: SystemExit) -> int:
    """The integer status of a SystemExit (argparse and jsonargparse exit on --help and errors)."""
    if isinstance(exit_.code, str):
        print(exit_.code, file=sys.stderr)
        return 1
    return int(exit_.code or 0)


def build_cli(argv: Sequence[str], run: bool = True) -> WEFTLightningCLI:
    """The LightningCLI of ``weft`` (also used by tools that read configs)."""
    from weft_lightning.callbacks import LoggerSaveConfigCallback, RunSummary
    from weft_lightning.config_files import expand_config_args
    from weft_lightning.data.datamodule import SegmentationDataModule
    from weft_lightning.module import WEFTModule

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
        parser_kwargs={"description": "weft: WEFT fine-tuning of frozen ViTs for segmentation."},
    )


def user_errors() -> tuple[type[BaseException], ...]:
    """Errors a user causes (files, layouts, configs, checkpoints): one line, no traceback."""
    from weft_lightning.callbacks.nan_guard import NonFiniteLossError
    from weft_lightning.checkpoint import BackboneMismatchError
    from weft_lightning.config_files import ConfigFileError
    from weft_lightning.data.catalog import LayoutError
    from weft_lightning.data.folder import DataFileError
    from weft_lightning.data.masks import MaskDecodeError
    from weft_lightning.evaluation.pairing import EvaluationError
    from weft_lightning.models.convert import CheckpointLayoutError

    return (
        NonFiniteLossError,
        BackboneMismatchError,
        ConfigFileError,
        LayoutError,
        DataFileError,
        MaskDecodeError,
        EvaluationError,
        CheckpointLayoutError,
        FileNotFoundError,
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``weft``; returns the exit status.

    Errors a user can fix are printed as one line (set ``WEFT_DEBUG=1`` for the traceback).
    """
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in TOOLS:
            return run_tool(argv[0], argv[1:])
        if not argv or argv[0] in ("-h", "--help"):
            print(tools_help() + "\n")
            argv = ["--help"]
        build_cli(argv)
    except SystemExit as exit_:
        return exit_code(exit_)
    except Exception as error:
        if os.environ.get("WEFT_DEBUG") or not isinstance(error, user_errors()):
            raise
        message = str(error).strip()
        if "Traceback" in message:  # re-raised from a data-loader worker: keep its last line
            message = message.splitlines()[-1]
        print(f"weft: error: {message}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
