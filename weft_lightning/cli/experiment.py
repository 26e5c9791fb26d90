"""``weft experiment``: run a spec of variants x seeds (local, SLURM, W&B) and report it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import yaml
from jsonargparse import ArgumentParser, Namespace
from rich.console import Console

from weft_lightning.cli.tool import EXIT_OK, EXIT_PROBLEMS, fail, run_command, tool_parser
from weft_lightning.experiments.errors import SpecError
from weft_lightning.experiments.local import LocalLauncher
from weft_lightning.experiments.plan import Run, plan_runs
from weft_lightning.experiments.report import SPEC_FILE, build_report, write_report
from weft_lightning.experiments.slurm import array_script, submit
from weft_lightning.experiments.spec import ExperimentSpec, load_spec
from weft_lightning.experiments.validate import resolve_configs
from weft_lightning.experiments.wandb_sweep import register_sweep, sweep_config

SUMMARY = "run a spec of variants x seeds and report mean ± std"
PROG = "weft experiment"

EXAMPLES = """examples:
  weft experiment run configs/experiments/orsi_ablation.yaml --launcher local --jobs 2
  weft experiment run configs/experiments/orsi_ablation.yaml --dry-run
  weft experiment run configs/experiments/orsi_ablation.yaml --launcher slurm --submit
  weft experiment run configs/sweeps/top_k.yaml --launcher local -- --data.root /data/ORSI
  weft experiment run configs/experiments/orsi_ablation.yaml --launcher wandb
  weft experiment report runs/orsi_ablation

Arguments after `--` are added to every run's fit and test commands. Each run lives in
<output>/<variant>/seed<k>/; a second `run` skips finished runs and resumes the others.
"""


def build_parser() -> ArgumentParser:
    """Arguments of ``weft experiment run`` and ``weft experiment report``."""
    parser = tool_parser(
        "experiment",
        "Run an experiment spec (configs/experiments/*.yaml, or a grid W&B sweep file):\n"
        "`weft fit` then `weft test` for every (variant, seed), and a report of the test\n"
        "results with mean ± std over seeds (Markdown, CSV, LaTeX, PNG).",
        EXAMPLES,
    )
    commands = parser.add_subcommands(dest="action")
    run = ArgumentParser(exit_on_error=False)
    run.add_argument("spec", type=Path, help="experiment spec or grid sweep file")
    run.add_argument(
        "--launcher",
        choices=["local", "slurm", "wandb"],
        default="local",
        help="local processes, one SLURM array job, or a W&B sweep",
    )
    run.add_argument("--jobs", type=int, default=1, help="local: runs at once")
    run.add_argument("--output", type=Path | None, default=None, help="instead of the spec's")
    run.add_argument("--dry-run", action="store_true", help="print what would run; run nothing")
    run.add_argument("--submit", action="store_true", help="slurm: submit the array job")
    run.add_argument("--variant", type=str | None, default=None, help="only these (a,b)")
    run.add_argument("--seed", type=str | None, default=None, help="only these seeds (0,1)")
    run.add_argument("--project", default="weft", help="wandb: the project of the sweep")
    run.add_argument("--entity", type=str | None, default=None, help="wandb: the entity")
    commands.add_subcommand("run", run, help="run every (variant, seed) and write the report")
    report = ArgumentParser(exit_on_error=False)
    report.add_argument("source", type=Path, help="experiment spec, or its output folder")
    report.add_argument("--out", type=Path | None, default=None, help="default: <output>/report")
    commands.add_subcommand("report", report, help="tables of the finished runs (any time)")
    return parser


def _selection(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def _seeds(text: str | None) -> list[int] | None:
    try:
        return [int(s) for s in _selection(text) or []] or None
    except ValueError:
        raise SpecError(f"--seed={text!r}: give seeds as integers, e.g. --seed 0,1") from None


def _save_spec(spec: ExperimentSpec, extra_args: list[str]) -> None:
    spec.output.mkdir(parents=True, exist_ok=True)
    data = spec.to_dict() | {"extra_args": extra_args}
    (spec.output / SPEC_FILE).write_text(json.dumps(data, indent=2))


def _report(spec: ExperimentSpec, out: Path | None, console: Console) -> None:
    report = build_report(spec)
    console.print(report.console_table())
    for line in report.missing:
        console.print(f"missing: {line}")
    for path in write_report(report, out or spec.output / "report"):
        console.print(f"wrote {path}")


def _run_local(spec: ExperimentSpec, runs: list[Run], configs: dict[str, str], jobs: int) -> int:
    console = Console(soft_wrap=True)
    outcomes = LocalLauncher(runs, configs, jobs, console).launch()
    _report(spec, None, console)
    failed = [o for o in outcomes if o.state == "failed"]
    for outcome in failed:
        console.print(f"failed: {outcome.run.name} (log {outcome.log})")
    return EXIT_PROBLEMS if failed else EXIT_OK


def _run_slurm(spec: ExperimentSpec, runs: list[Run], args: Namespace) -> int:
    folder = spec.output / "slurm"
    script = array_script(runs, spec.name, folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{spec.name}.sbatch"
    path.write_text(script)
    if args.dry_run:
        print(script)
    print(f"wrote {path} ({len(runs)} array tasks)")
    if args.submit and not args.dry_run:
        print(submit(path))
    elif not args.submit:
        print(f"submit it with: sbatch {path}")
    return EXIT_OK


def _run(args: Namespace, extra_args: list[str]) -> int:
    spec = load_spec(args.spec)
    if args.output is not None:
        spec.output = args.output
    runs = plan_runs(spec, extra_args, _selection(args.variant), _seeds(args.seed))
    if args.launcher == "wandb":
        config = sweep_config(spec, args.spec, extra_args)
        if args.dry_run:
            print(yaml.safe_dump(config, sort_keys=False))
            return EXIT_OK
        print(register_sweep(config, args.project, args.entity))
        return EXIT_OK
    configs = resolve_configs(spec, runs, extra_args)  # every run checked before any starts
    if args.dry_run and args.launcher == "local":
        for run in runs:
            print(f"# {run.name} in {run.folder}")
            print("\n".join(run.command_lines()))
        return EXIT_OK
    _save_spec(spec, extra_args)
    if args.launcher == "slurm":
        return _run_slurm(spec, runs, args)
    return _run_local(spec, runs, configs, args.jobs)


def _spec_of(source: Path) -> ExperimentSpec:
    if source.is_dir():
        saved = source / SPEC_FILE
        if not saved.is_file():
            raise SpecError(f"{source} holds no {SPEC_FILE}; give the spec or an output folder.")
        spec = ExperimentSpec.from_dict(json.loads(saved.read_text()))
        spec.output = source  # the runs are in the folder given, wherever it was moved
        return spec
    return load_spec(source)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``weft experiment``; returns the exit status."""
    words = list(argv or [])
    extra = words[words.index("--") + 1 :] if "--" in words else []
    words = words[: words.index("--")] if "--" in words else words

    def command() -> int:
        args = build_parser().parse_args(words)
        if args.action == "run":
            if args.run.jobs < 1:
                return fail(PROG, f"--jobs={args.run.jobs} must be at least 1")
            return _run(args.run, extra)
        _report(_spec_of(args.report.source), args.report.out, Console(soft_wrap=True))
        return EXIT_OK

    return run_command(PROG, command)
