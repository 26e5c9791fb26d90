"""Experiments: a spec of variants x seeds run as separate ``weft fit``/``weft test`` processes
(locally, as a SLURM array or a W&B sweep), and a report of mean ± std over seeds."""

from weft_lightning.experiments.errors import SpecError
from weft_lightning.experiments.plan import Run, plan_runs
from weft_lightning.experiments.report import ExperimentReport, build_report
from weft_lightning.experiments.spec import ExperimentSpec, load_spec

__all__ = [
    "ExperimentReport",
    "ExperimentSpec",
    "Run",
    "SpecError",
    "build_report",
    "load_spec",
    "plan_runs",
]
