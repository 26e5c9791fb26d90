"""The LightningCLI of ``weft``: config files become a trainer, a WEFTModule and a data module.

``weft fit|validate|test|predict`` run it; :func:`weft_lightning.api.build_model` and the tools
that read configs use :func:`build_cli` with ``run=False``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import logging
import re
import shutil
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_warn

from weft_lightning.callbacks import ExperimentRun, LoggerSaveConfigCallback, RunSummary
from weft_lightning.callbacks.media import run_folder
from weft_lightning.callbacks.nan_guard import NaNGuard
from weft_lightning.checkpoint import lightning_checkpoint, recorded_best, resume_checkpoint
from weft_lightning.config_files import EXTENDS_KEY, expand_config_args
from weft_lightning.data.datamodule import SegmentationDataModule, Stage
from weft_lightning.module import WEFTModule

__all__ = [
    "WEFTLightningCLI",
    "argument_problem",
    "build_cli",
    "find_checkpoint",
    "resolved_config",
]


def find_checkpoint(root: Path, which: str) -> Path:
    """The ``best`` or ``last`` checkpoint of the most recent run under ``root``.

    ``last`` is the newest ``last.ckpt``; ``best`` is the best checkpoint that ``last.ckpt``
    records (its ModelCheckpoint's, over the whole run), else the newest other checkpoint in
    the same ``checkpoints/`` folder.
    """
    checkpoints = sorted(root.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    lasts = [p for p in checkpoints if p.name.startswith("last")]
    if which == "last" and lasts:
        return lasts[-1]
    recorded = recorded_best(lasts[-1]) if which == "best" and lasts else None
    if recorded is not None:  # the best of the whole run, across resumes
        return recorded
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


#: What every run writes when it starts; a run folder holding only these has no results.
STARTUP_RECORDS = frozenset({"config.yaml", "hparams.yaml"})


def discard_empty_run(folder: Path, root: Path) -> None:
    """Remove a failed run's ``folder`` when it holds nothing but startup records and empty
    files, and then its parents up to ``root`` that became empty."""
    if not folder.is_dir() or folder.resolve() == root.resolve():
        return
    files = [p for p in folder.rglob("*") if p.is_file()]
    if any(p.name not in STARTUP_RECORDS and p.stat().st_size for p in files):
        return
    shutil.rmtree(folder, ignore_errors=True)
    parent = folder.parent
    while parent.resolve() != root.resolve() and parent.is_dir() and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


class WEFTLightningCLI(LightningCLI):
    """LightningCLI with the model and the data chosen by ``class_path`` in the config.

    ``--ckpt_path best|last`` in ``validate``, ``test`` and ``predict`` also works in a new
    process: the checkpoint is looked up under the trainer's ``default_root_dir`` and the
    loggers' save folders.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._argv = [str(a) for a in kwargs.get("args") or []]
        self._new_root: Path | None = None  # a trainer root folder this run creates
        super().__init__(*args, **kwargs)

    def _quiet_lightning_table(self) -> None:
        """The module prints one table by dataset; Lightning's own would repeat every
        dataset's metrics under every data loader's column (kept with ``--verbose true``)."""
        if not any(a.startswith("--verbose") for a in self._argv):
            self.config_init[self.subcommand]["verbose"] = False

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
        self._check_checkpoint()

    def _check_checkpoint(self) -> None:
        """A checkpoint file is checked before Lightning loads it: one line naming the file
        when it is empty, cut short, unsafe or not a training checkpoint."""
        path = self.config_init[self.subcommand].get("ckpt_path")
        if path is not None and path not in ("best", "last", "hpc", "registry"):
            lightning_checkpoint(path)

    def _run_subcommand(self, subcommand: str) -> None:  # wraps a private LightningCLI step
        """Run the subcommand; a run that fails before it has written anything of its own
        leaves no run folder behind."""
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            if self.trainer.is_global_zero:
                root = Path(self.trainer.default_root_dir)
                discard_empty_run(run_folder(self.trainer), root)
                if root == self._new_root and root.is_dir() and not any(root.iterdir()):
                    root.rmdir()  # made by this run, and empty
            raise

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

    def instantiate_classes(self) -> None:
        """The data module is built and its folders checked first, so that a missing root or
        split is one line before the model (minutes for a large backbone) is built."""
        checked = self._checked_datamodule()
        root = (
            self.config[self.subcommand].trainer.get("default_root_dir")
            if self.subcommand
            else None
        )
        self._new_root = Path(root) if root and not Path(root).exists() else None
        super().instantiate_classes()
        if checked is not None:  # the checked instance runs: what it found is said once
            self.config_init[str(self.subcommand)]["data"] = self.datamodule = checked

    def _checked_datamodule(self) -> SegmentationDataModule | None:
        if self.subcommand is None or self.config[self.subcommand].get("data") is None:
            return None
        parser = LightningArgumentParser(exit_on_error=False)
        parser.add_lightning_class_args(SegmentationDataModule, "data", subclass_mode=True)
        section = self.config[self.subcommand].data.clone()
        section.pop("__path__", None)  # where a --data FILE came from, not an argument
        parsed = parser.parse_object({"data": section.as_dict()})
        datamodule = parser.instantiate_classes(parsed).data
        datamodule.sources(cast(Stage, self.subcommand))
        return datamodule

    def before_fit(self) -> None:
        """``--ckpt_path last`` resumes from the newest last/SLURM checkpoint of earlier runs,
        or starts from scratch (with a warning) when there is none yet."""
        self._load_weights_only()
        config = self.config_init[self.subcommand]
        if config.get("ckpt_path") != "last":
            self._check_checkpoint()
            return
        roots = self._search_roots()
        found = [p for p in (resume_checkpoint(r) for r in roots) if p is not None]
        if found:
            config["ckpt_path"] = str(max(found, key=lambda p: p.stat().st_mtime))
            self._check_checkpoint()
        else:
            rank_zero_warn(f"--ckpt_path last: no checkpoint under {roots}; starting from scratch.")
            config["ckpt_path"] = None

    def before_validate(self) -> None:
        self._resolve_ckpt_path()
        self._quiet_lightning_table()

    def before_test(self) -> None:
        self._resolve_ckpt_path()
        self._quiet_lightning_table()

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
        trainer_defaults={"callbacks": [RunSummary(), ExperimentRun()]},
        seed_everything_default=42,
        auto_configure_optimizers=False,
        args=list(argv),
        run=run,
        parser_kwargs={
            "description": "weft: WEFT fine-tuning of frozen ViTs for segmentation.",
            "exit_on_error": False,
        },
    )


class _ParsingCLI(WEFTLightningCLI):
    """Parses and checks a config (every key against its class), instantiates nothing."""

    def instantiate_classes(self) -> None:
        """Nothing is built: the parsed config is all that is wanted."""


def resolved_config(argv: Sequence[str]) -> str:
    """The fully resolved config (YAML) of ``weft fit ARGS`` without the subcommand, as the run
    would save it; raises :class:`jsonargparse.ArgumentError` on a key or value the classes do
    not accept. Nothing is instantiated, so even a paper-size model is checked in a moment."""
    warnings.filterwarnings("ignore", message=".*args parameter is intended to run from within")
    seed_log = logging.getLogger("lightning.fabric.utilities.seed")
    level = seed_log.level
    seed_log.setLevel(logging.WARNING)  # parsing sets the seed; no "Seed set" line per run
    try:
        cli = _ParsingCLI(
            model_class=WEFTModule,
            datamodule_class=SegmentationDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=42,
            auto_configure_optimizers=False,
            args=expand_config_args(argv),
            run=False,
            parser_kwargs={"exit_on_error": False},
        )
    finally:
        seed_log.setLevel(level)
    return cli.parser.dump(cli.config, skip_none=False)


_STRUCTURE = (
    "Parser key",
    "Does not validate against",
    "Subtypes:",
    "Errors:",
    "Given value",
    "Problem with given class_path",
    "Expected a <class 'NoneType'>",
)


def argument_problem(error: Exception) -> str:
    """jsonargparse's nested report of a bad key or value in one line: the key path, then
    the innermost problem (``model.segmentor.backbone: Option 'topk' is not accepted``)."""
    lines = [line.strip().removeprefix("- ") for line in str(error).splitlines() if line.strip()]
    keys = [line.split('"')[1] for line in lines if line.startswith('Parser key "')]
    problems = [line for line in lines if not line.startswith(_STRUCTURE)]
    problem = problems[0] if problems else lines[0] if lines else "invalid"
    classes = re.findall(r"class_path '([\w.]+)'", str(error))
    problem += _suggestion(problem, classes[-1] if classes else None)
    return f"{'.'.join(keys)}: {problem}" if keys else problem


def _parameters(class_path: str) -> list[str]:
    """The init parameters of a class named by its import path (empty when unknown)."""
    module, _, name = class_path.rpartition(".")
    try:
        target = getattr(importlib.import_module(module), name)
        parameters = inspect.signature(target).parameters.values()
    except (ImportError, AttributeError, ValueError, TypeError):
        return []
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def _suggestion(problem: str, class_path: str | None) -> str:
    """`` (did you mean 'lr'?)`` for a misspelled option of a class or of the trainer."""
    option = re.search(r"Option '([\w]+)' is not accepted", problem)
    if option and class_path:
        name, choices = option.group(1), _parameters(class_path)
    else:
        key = re.search(r"(?:option '|arguments: --)trainer\.(\w+)", problem)
        if key is None:
            return ""
        name, choices = key.group(1), _parameters("lightning.pytorch.Trainer")
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
