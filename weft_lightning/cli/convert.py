"""``weft convert``: third-party backbone checkpoints as weights a timm ViT loads."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from weft_lightning.cli.tool import EXIT_OK, fail, run_command, tool_parser
from weft_lightning.models.convert import (
    CheckpointLayoutError,
    convert_uniperceiver,
    save_weights,
    timm_kwargs_for,
)
from weft_lightning.models.weights import read_state_dict

SUMMARY = "convert third-party backbone weights"
PROG = "weft convert"


def build_parser() -> ArgumentParser:
    """Arguments of ``weft convert`` and its formats."""
    parser = tool_parser(
        "convert",
        "Convert a backbone checkpoint into weights for a timm ViT / FrozenViT "
        "(`checkpoint_path`). Files are read weights-only: a checkpoint never runs code.",
    )
    uni = tool_parser(
        "convert uniperceiver",
        "Uni-Perceiver encoder checkpoint (.pth/.bin/.safetensors; raw or under "
        "`state_dict`/`model`; `module.`/`backbone.` prefixes allowed) -> timm "
        "VisionTransformer weights. The position table is folded with the temporal vector.",
    )
    uni.add_argument("input", type=Path, help="Uni-Perceiver checkpoint")
    uni.add_argument("output", type=Path, help="output file (.safetensors recommended)")
    uni.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="PREFIX",
        help="drop keys starting with PREFIX (repeatable), e.g. parts that are not the encoder",
    )
    formats = parser.add_subcommands(required=True, dest="format")
    formats.add_subcommand(
        "uniperceiver", uni, help="Uni-Perceiver encoder (the paper's backbone) -> timm ViT"
    )
    return parser


def _uniperceiver(args: Namespace) -> int:
    try:
        weights = convert_uniperceiver(read_state_dict(args.input), args.ignore)
    except (CheckpointLayoutError, FileNotFoundError, ValueError) as error:
        return fail(PROG, f"{args.input}: {error}")
    kwargs = timm_kwargs_for(weights)
    save_weights(weights, args.output, {"source": "uniperceiver", "timm_kwargs": repr(kwargs)})
    total = sum(v.numel() for v in weights.values())
    print(
        f"wrote {args.output}: {len(weights)} tensors, {total / 1e6:.2f} M parameters ({kwargs}).\n"
        "Use it as checkpoint_path of the ViT of configs/model/vit/uniperceiver_l16.yaml, e.g. "
        "stack configs/model/backbones/uniperceiver_l16.yaml on a paper run config."
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft convert``; returns the exit status."""
    return run_command(PROG, lambda: _uniperceiver(build_parser().parse_args(argv).uniperceiver))
