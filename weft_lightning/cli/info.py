"""``weft info``: parameter counts and training memory of the model a config builds, as JSON."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

import torch
from jsonargparse import ArgumentParser, Namespace

from weft_lightning.api import build_model
from weft_lightning.cli.tool import EXIT_OK, run_command, tool_parser
from weft_lightning.models.introspection import parameter_report
from weft_lightning.models.memory import activation_memory

SUMMARY = "parameter counts and training memory of a model config, as JSON"

EXAMPLES = """examples:
  weft info --config configs/model/weft_l_paper.yaml --no-memory
  weft info --config configs/demo.yaml --input-size 128 -- --model.init_args.lr=1e-4

Arguments after `--` are config overrides, as on `weft fit`.
"""


def build_parser() -> ArgumentParser:
    """Arguments of ``weft info``."""
    parser = tool_parser(
        "info",
        "Print total/trainable parameter counts of a config's model and its estimated training\n"
        "memory per image (activations, measured by a forward/backward on the meta device, or\n"
        "the CPU where meta cannot run the model) as JSON.",
        EXAMPLES,
    )
    parser.add_argument("--config", action="append", required=True, help="config file (repeatable)")
    parser.add_argument(
        "--device", default="meta", help="device to build the model on; 'meta' allocates nothing"
    )
    parser.add_argument(
        "--input-size",
        type=int,
        nargs="+",
        default=[512],
        metavar="PIXELS",
        help="training crop (H [W]) for the activation-memory estimate",
    )
    parser.add_argument(
        "--no-memory", action="store_true", help="skip the activation-memory estimate"
    )
    return parser


def _report(parser: ArgumentParser, args: Namespace, overrides: list[str]) -> int:
    if len(args.input_size) > 2 or any(s < 32 or s % 32 for s in args.input_size):
        parser.error(f"--input-size {args.input_size}: give H or H W, multiples of 32.")
    with torch.device(args.device):
        module = build_model(args.config, overrides)
    report = parameter_report(module.segmentor)
    report["model"] = type(module.segmentor.backbone).__name__
    if not args.no_memory:
        size = (args.input_size[0], args.input_size[-1])
        report["activation_memory"] = activation_memory(module.segmentor, size)
    print(json.dumps(report, indent=2))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft info``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    split = argv.index("--") if "--" in argv else len(argv)

    def command() -> int:
        parser = build_parser()
        return _report(parser, parser.parse_args(argv[:split]), argv[split + 1 :])

    return run_command("weft info", command)
