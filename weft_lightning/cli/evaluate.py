"""``weft eval``: score saved prediction maps against ground-truth masks; tables and curves."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from jsonargparse import ArgumentParser, Namespace

from weft_lightning.cli.tool import EXIT_OK, EXIT_PROBLEMS, fail, run_command, tool_parser
from weft_lightning.data.catalog import dataset_name
from weft_lightning.evaluation.curves import plot_curves
from weft_lightning.evaluation.pairing import EvaluationError
from weft_lightning.evaluation.runner import EvaluationReport, evaluate_spec
from weft_lightning.evaluation.spec import EvalSpec, load_spec
from weft_lightning.evaluation.tables import format_results, to_csv, to_latex
from weft_lightning.metrics import METRIC_KEYS

SUMMARY = "score saved prediction maps against masks"
PROG = "weft eval"

EXAMPLES = """examples:
  weft eval --pred-dir runs/demo/predictions/synthetic --gt-dir data/synthetic/test/masks
  weft eval --spec spec.yaml --json results.json --csv results.csv --latex table.tex \\
            --curves curves/

spec.yaml (relative paths are relative to the spec file):
  datasets:
    ECSSD: data/ECSSD/masks
  methods:
    WEFT: preds/weft/{dataset}
"""


def build_parser() -> ArgumentParser:
    """Arguments of ``weft eval``."""
    parser = tool_parser(
        "eval",
        "Score saved prediction maps (8-bit PNGs) against ground-truth masks with\n"
        "the field's measures, identical to PySODMetrics: S-measure, MAE, E-/F-measures,\n"
        "weighted F-measure, IoU, Dice; and mIoU, mDice, mFscore as mmseg's eval_metrics.\n"
        "Files pair by stem across extensions; predictions of another size are resized to\n"
        "the mask's size (with a warning).",
        EXAMPLES,
    )
    source = parser.add_argument_group("what to score (one folder pair, or a spec)")
    source.add_argument("--pred-dir", type=Path, help="folder of prediction maps")
    source.add_argument("--gt-dir", type=Path, help="folder of ground-truth masks")
    source.add_argument("--method", help="method name for --pred-dir (default: its folder name)")
    source.add_argument("--dataset", help="dataset name for --gt-dir (default: from its path)")
    source.add_argument("--spec", type=Path, help="YAML spec of methods x datasets")
    out = parser.add_argument_group("outputs")
    out.add_argument("--json", type=Path, help="write results and file problems as JSON")
    out.add_argument("--csv", type=Path, help="write one CSV row per method and dataset")
    out.add_argument("--latex", type=Path, help="write a LaTeX table, best three per column marked")
    out.add_argument("--curves", type=Path, help="folder for PR and F-measure curve PNGs")
    out.add_argument(
        "--keys",
        default=",".join(METRIC_KEYS),
        help="comma-separated measures for the printed and LaTeX tables (default: all)",
    )
    out.add_argument("--digits", type=int, default=3, help="decimals in the LaTeX table")
    out.add_argument(
        "--strict", action="store_true", help="exit with status 1 when any file is unpaired"
    )
    return parser


def _spec(args: Namespace, parser: ArgumentParser) -> EvalSpec:
    if args.spec is not None:
        if args.pred_dir is not None or args.gt_dir is not None:
            parser.error("use either --spec or --pred-dir/--gt-dir, not both")
        return load_spec(args.spec)
    if args.pred_dir is None or args.gt_dir is None:
        parser.error("give --pred-dir and --gt-dir (or --spec)")
    if not args.pred_dir.is_dir():
        raise EvaluationError(f"Prediction folder {args.pred_dir} does not exist")
    dataset = args.dataset or dataset_name(args.gt_dir)
    method = args.method or args.pred_dir.resolve().name
    return EvalSpec({dataset: args.gt_dir}, {method: {dataset: args.pred_dir}})


def _keys(text: str, parser: ArgumentParser) -> list[str]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in METRIC_KEYS]
    if unknown or not keys:
        parser.error(f"--keys: unknown measure(s) {unknown}; choose from {','.join(METRIC_KEYS)}")
    return keys


def _write(report: EvaluationReport, args: Namespace, keys: list[str]) -> None:
    outputs = {
        args.json: lambda: report.to_json(),
        args.csv: lambda: to_csv(report.results, report.counts),
        args.latex: lambda: to_latex(report.results, keys, args.digits),
    }
    for path, render in outputs.items():
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(render())
            print(f"wrote {path}")
    if args.curves is not None:
        curves = {m: {d: r.curves for d, r in per.items()} for m, per in report.folders.items()}
        for path in plot_curves(curves, args.curves):
            print(f"wrote {path}")


def _evaluate(parser: ArgumentParser, args: Namespace) -> int:
    keys = _keys(args["keys"], parser)  # (Namespace.keys is a method)
    report = evaluate_spec(_spec(args, parser))
    for line in report.warnings + report.problems():
        print(f"warning: {line}", file=sys.stderr)
    if not report.folders:
        return fail(PROG, "nothing was scored (no prediction folder exists)")
    print(format_results(report.results, keys))
    _write(report, args, keys)
    unpaired = any(r.missing or r.extra for per in report.folders.values() for r in per.values())
    return EXIT_PROBLEMS if args.strict and (unpaired or report.skipped) else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft eval``; returns the exit status."""

    def command() -> int:
        parser = build_parser()
        return _evaluate(parser, parser.parse_args(argv))

    return run_command(PROG, command)
