"""``weft info``: parameter counts of the model a config builds, as JSON."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn


def count(parameters: Iterable[nn.Parameter]) -> dict[str, int]:
    """Total and trainable element counts of distinct parameters."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in parameters}
    return {
        "params": sum(p.numel() for p in seen.values()),
        "trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
    }


def vit_of(backbone: nn.Module) -> nn.Module | None:
    """The timm ViT inside a backbone (FrozenViT, WEFTBackbone, PEFT wrappers), if any."""
    for module in backbone.modules():
        vit = getattr(module, "vit", None)
        if isinstance(vit, nn.Module) and hasattr(vit, "blocks"):
            return vit
    return None


def parameter_report(segmentor: nn.Module) -> dict[str, Any]:
    """Counts for the whole model and its parts: frozen ViT, WEFT branch and head."""
    backbone, head = segmentor.backbone, segmentor.head
    vit = vit_of(backbone)
    vit_ids = {id(p) for p in vit.parameters()} if vit is not None else set()
    parts = {
        "backbone": count(vit.parameters()) if vit is not None else count([]),
        "weft": count(p for p in backbone.parameters() if id(p) not in vit_ids),
        "head": count(head.parameters()),
    }
    total = count(segmentor.parameters())
    return {
        "total_params": total["params"],
        "trainable_params": total["trainable"],
        "trainable_percent": round(100.0 * total["trainable"] / max(total["params"], 1), 2),
        "parts": parts,
    }


def build_model(config: Sequence[str], overrides: Sequence[str]) -> nn.Module:
    """Instantiate the ``model`` of one or more config files (nothing is run).

    A run config, a model-only config fragment, or a segmentor file (a ``class_path`` config of
    a Segmentor, e.g. ``configs/model/weft_l_paper.yaml``) is enough: a placeholder datamodule
    is given first, and a ``data`` section in the configs replaces it.
    """
    from weft_lightning.cli import build_cli

    args: list[str] = ["--data", "weft_lightning.data.datamodule.SegmentationDataModule"]
    for path in config:
        args += _config_args(Path(path))
    cli = build_cli([*args, *overrides, "--trainer.logger", "false"], run=False)
    return cli.model


def _config_args(path: Path) -> list[str]:
    """``--config PATH`` for CLI configs; a segmentor file becomes the model's segmentor."""
    content = yaml.safe_load(path.read_text()) if path.is_file() else None
    if isinstance(content, dict) and "class_path" in content:
        return [
            "--model",
            "weft_lightning.module.WEFTModule",
            "--model.init_args.segmentor",
            str(path),
        ]
    return ["--config", str(path)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="weft info",
        description="Print total/trainable parameter counts of a config's model and its "
        "estimated training memory per image (activations, measured by a forward/backward on "
        "the meta device, or the CPU where meta cannot run the model) as JSON.",
    )
    parser.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    parser.add_argument(
        "--device",
        default="meta",
        help="device to build the model on; 'meta' allocates no memory (default)",
    )
    parser.add_argument(
        "overrides", nargs="*", help="extra CLI overrides, e.g. --model.init_args.lr=1"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=[512],
        metavar="PIXELS",
        help="training crop (H [W]) for the activation-memory estimate (default 512)",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the activation-memory estimate"
    )
    args, unknown = parser.parse_known_args(argv)
    if len(args.input_size) > 2 or any(s < 32 or s % 32 for s in args.input_size):
        parser.error(f"--input-size {args.input_size}: give H or H W, multiples of 32.")
    with torch.device(args.device):
        module = build_model(args.config, [*args.overrides, *unknown])
    report = parameter_report(module.segmentor)
    report["model"] = type(module.segmentor.backbone).__name__
    if not args.no_memory:
        from weft_lightning.memory import activation_memory

        size = (args.input_size[0], args.input_size[-1])
        report["activation_memory"] = activation_memory(module.segmentor, size)
    print(json.dumps(report, indent=2))
    return 0
