"""The ``weft`` command: LightningCLI subcommands (fit, validate, test, predict) and tools."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

from lightning.pytorch.cli import LightningCLI

TOOLS: dict[str, tuple[str, str]] = {
    "synth": ("weft_lightning.data.synthetic:main", "generate a synthetic aerial-like dataset"),
    "eval": ("weft_lightning.evaluation.cli:main", "score saved prediction maps against masks"),
    "data": ("weft_lightning.data.check:main", "check a dataset folder for problems"),
    "info": ("weft_lightning.info:main", "parameter counts of a model config, as JSON"),
    "convert": ("weft_lightning.models.convert:main", "convert third-party backbone weights"),
}


class WEFTLightningCLI(LightningCLI):
    """LightningCLI with the model and the data chosen by ``class_path`` in the config."""


def tools_help() -> str:
    lines = ["Tools (each has its own --help):"]
    lines += [f"  weft {name:<8} {summary}" for name, (_, summary) in TOOLS.items()]
    return "\n".join(lines)


def run_tool(name: str, argv: Sequence[str]) -> int:
    """Import and run the tool ``name`` with its own arguments."""
    target, _ = TOOLS[name]
    module_name, function = target.split(":")
    return int(getattr(importlib.import_module(module_name), function)(list(argv)) or 0)


def build_cli(argv: Sequence[str], run: bool = True) -> WEFTLightningCLI:
    """The LightningCLI of ``weft`` (also used by tools that read configs)."""
    from weft_lightning.data.datamodule import SegmentationDataModule
    from weft_lightning.module import WEFTModule

    return WEFTLightningCLI(
        model_class=WEFTModule,
        datamodule_class=SegmentationDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=42,
        auto_configure_optimizers=False,
        args=list(argv),
        run=run,
        parser_kwargs={"description": "weft: WEFT fine-tuning of frozen ViTs for segmentation."},
    )


def main(args: Sequence[str] | None = None) -> int:
    """Entry point of ``weft``; returns the exit status."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in TOOLS:
        return run_tool(argv[0], argv[1:])
    if not argv or argv[0] in ("-h", "--help"):
        print(tools_help() + "\n")
        argv = ["--help"]
    try:
        build_cli(argv)
    except SystemExit as exit_:
        return int(exit_.code or 0) if not isinstance(exit_.code, str) else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
