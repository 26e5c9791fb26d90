"""``weft data check``: decode every file of a dataset and report what would go wrong."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from weft_lightning.cli.tool import EXIT_OK, EXIT_PROBLEMS, run_command, tool_parser
from weft_lightning.data.check import check_dataset, format_report

SUMMARY = "check a dataset folder for problems"


def build_parser() -> ArgumentParser:
    """Arguments of ``weft data`` and its ``check`` subcommand."""
    parser = tool_parser("data", "Dataset tools.")
    check = tool_parser(
        "data check",
        "Decode every image and mask, print counts, sizes, foreground statistics and every "
        "problem with its file. Exit status 0 when clean (warnings allowed), 1 when any problem "
        "is found.",
    )
    check.add_argument("root", nargs="?", type=Path, help="dataset folder (layout detected)")
    check.add_argument("--images", type=Path, help="image folder (instead of ROOT)")
    check.add_argument("--masks", type=Path, help="mask folder paired with --images")
    check.add_argument("--workers", type=int, default=None, help="decoding threads")
    check.add_argument("--max-list", type=int, default=20, help="warnings listed per kind (0: all)")
    check.add_argument("--json", type=Path, help="also write the report as JSON to this file")
    commands = parser.add_subcommands(required=True, dest="command")
    commands.add_subcommand("check", check, help="decode every file of a dataset, list problems")
    return parser


def _check(parser: ArgumentParser, args: Namespace) -> int:
    if (args.root is None) == (args.images is None):
        parser.error("give either ROOT or --images DIR [--masks DIR]")
    if args.masks is not None and args.images is None:
        parser.error("--masks needs --images")
    report = check_dataset(args.root, args.images, args.masks, args.workers)
    print(format_report(report, args.max_list or None))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2) + "\n")
    return EXIT_OK if report.ok else EXIT_PROBLEMS


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft data``; returns the exit status."""

    def command() -> int:
        parser = build_parser()
        args = parser.parse_args(argv)
        return _check(parser, args.check)

    return run_command("weft data", command)
