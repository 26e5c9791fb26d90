"""``weft synth``: generate a synthetic aerial-scene segmentation dataset."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from weft_lightning.cli.tool import EXIT_OK, fail, run_command, tool_parser
from weft_lightning.data.synthetic import generate_dataset

SUMMARY = "generate a synthetic aerial-like dataset"


def build_parser() -> ArgumentParser:
    """Arguments of ``weft synth``."""
    parser = tool_parser(
        "synth",
        "Generate a synthetic aerial-scene segmentation dataset "
        "(train|test/images/*.jpg + train|test/masks/*.png, masks 0/255).",
    )
    parser.add_argument("--out", type=Path, required=True, help="output dataset root")
    parser.add_argument("--num-train", type=int, default=160, help="training images")
    parser.add_argument("--num-test", type=int, default=40, help="test images")
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--max-objects", type=int, default=4, help="most objects per image")
    parser.add_argument(
        "--empty-fraction", type=float, default=0.1, help="share of images without object"
    )
    parser.add_argument(
        "--low-contrast-fraction",
        type=float,
        default=0.15,
        help="share of objects drawn with low contrast",
    )
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if up to date")
    return parser


def _generate(args: Namespace) -> int:
    start = time.perf_counter()
    try:
        out = generate_dataset(
            args.out,
            args.num_train,
            args.num_test,
            args.size,
            args.seed,
            max_objects=args.max_objects,
            empty_fraction=args.empty_fraction,
            low_contrast_fraction=args.low_contrast_fraction,
            overwrite=args.overwrite,
        )
    except (ValueError, OSError) as error:
        return fail("weft synth", str(error))
    elapsed = time.perf_counter() - start
    print(
        f"synthetic dataset in {out}: {args.num_train} train, {args.num_test} test "
        f"({elapsed:.1f} s)"
    )
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft synth``; returns the exit status."""
    return run_command("weft synth", lambda: _generate(build_parser().parse_args(argv)))
