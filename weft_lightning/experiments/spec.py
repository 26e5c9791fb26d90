"""The experiment spec: a YAML file of a shared config stack, variants, seeds and the report.

::

    name: orsi_ablation            # default: the file's stem
    base: [../orsi/eorssd.yaml]    # config files every run stacks (relative to this file)
    overrides:                     # dotted keys every run sets (init_args may be left out)
      trainer.max_steps: 8000
    variants:
      weft: {}
      no_experts: {configs: [../ablation/no_experts.yaml]}
      top1: {overrides: {model.segmentor.backbone.top_k: 1}}
    seeds: [0, 1]
    baseline: weft                 # deltas in the report are to this variant
    report: {datasets: null, metrics: [sm, mae, em_max, wfm, miou]}
    output: null                   # default: runs/<name>
    test_checkpoint: last          # the checkpoint `weft test` scores: last or best

A project W&B sweep file (``configs/sweeps/*.yaml``) is read as a spec too: its ``--config``
files are the base, its fixed arguments the shared overrides and every combination of a grid
a variant (see :mod:`weft_lightning.experiments.sweeps`).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from jsonargparse import ArgumentError, ArgumentParser

from weft_lightning.experiments.errors import SpecError
from weft_lightning.metrics import METRIC_KEYS

__all__ = [
    "DEFAULT_METRICS",
    "ExperimentSpec",
    "ReportOptions",
    "SpecError",
    "Variant",
    "load_spec",
]

DEFAULT_METRICS = ("sm", "mae", "em_max", "wfm", "miou")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=,+-]*$")


@dataclass
class Variant:
    """One arm of the experiment: config files stacked on the base, then key overrides."""

    configs: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)


@dataclass
class ReportOptions:
    """What the report tabulates: test sets (None: every one) and measures."""

    datasets: list[str] | None = None
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))


@dataclass
class ExperimentSpec:
    """A validated spec; config paths are resolved, relative to the working directory."""

    name: str
    source: Path
    base: list[Path]
    overrides: dict[str, Any]
    variants: dict[str, Variant]
    seeds: list[int]
    baseline: str | None
    report: ReportOptions
    output: Path
    test_checkpoint: Literal["last", "best"] = "last"

    def variant_configs(self, variant: str) -> list[Path]:
        """The config files of a variant's runs: the base, then the variant's own."""
        return [*self.base, *(Path(p) for p in self.variants[variant].configs)]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (saved with the runs, read by the report)."""
        return {
            "name": self.name,
            "source": str(self.source),
            "base": [str(p) for p in self.base],
            "overrides": self.overrides,
            "variants": {n: vars(v) for n, v in self.variants.items()},
            "seeds": self.seeds,
            "baseline": self.baseline,
            "report": vars(self.report),
            "output": str(self.output),
            "test_checkpoint": self.test_checkpoint,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentSpec:
        """The spec saved by :meth:`to_dict`."""
        return cls(
            name=data["name"],
            source=Path(data["source"]),
            base=[Path(p) for p in data["base"]],
            overrides=data["overrides"],
            variants={n: Variant(**v) for n, v in data["variants"].items()},
            seeds=list(data["seeds"]),
            baseline=data["baseline"],
            report=ReportOptions(**data["report"]),
            output=Path(data["output"]),
            test_checkpoint=data["test_checkpoint"],
        )


def _parser() -> ArgumentParser:
    parser = ArgumentParser(exit_on_error=False)
    parser.add_argument("--name", type=str | None, default=None)
    parser.add_argument("--base", type=list[str], default=[])
    parser.add_argument("--overrides", type=dict[str, Any], default={})
    parser.add_argument("--variants", type=dict[str, Variant])
    parser.add_argument("--seeds", type=list[int], default=[42])
    parser.add_argument("--baseline", type=str | None, default=None)
    parser.add_argument("--report", type=ReportOptions, default=ReportOptions())
    parser.add_argument("--output", type=str | None, default=None)
    parser.add_argument("--test_checkpoint", type=Literal["last", "best"], default="last")
    return parser


def _one_line(error: Exception) -> str:
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip())


def _config_path(source: Path, folder: Path, key: str, value: str) -> Path:
    """A config file named in the spec, relative to ``folder``; it must exist."""
    path = Path(os.path.normpath(Path(value) if Path(value).is_absolute() else folder / value))
    if not path.is_file():
        raise SpecError(f"{source}: {key} names {value!r}, but {path} does not exist.")
    return path


def _check(source: Path, spec: ExperimentSpec) -> None:
    if not spec.variants:
        raise SpecError(f"{source}: variants is empty; name at least one variant.")
    for name in spec.variants:
        if not _NAME.match(name):
            raise SpecError(
                f"{source}: variants.{name}: a variant name is a folder name (letters, digits, "
                "and _ . = , + -)."
            )
    if not spec.seeds or len(set(spec.seeds)) != len(spec.seeds):
        raise SpecError(f"{source}: seeds={spec.seeds} must be a non-empty list without repeats.")
    if spec.baseline is not None and spec.baseline not in spec.variants:
        raise SpecError(
            f"{source}: baseline {spec.baseline!r} is not a variant (variants: "
            f"{', '.join(spec.variants)})."
        )
    unknown = [m for m in spec.report.metrics if m not in METRIC_KEYS]
    if unknown or not spec.report.metrics:
        raise SpecError(
            f"{source}: report.metrics: unknown measure(s) {unknown}; choose from "
            f"{', '.join(METRIC_KEYS)}."
        )


def spec_from_data(
    source: Path, data: dict[str, Any], relative_to: Path | None = None
) -> ExperimentSpec:
    """Validate spec data read from ``source``; config paths are relative to ``relative_to``
    (default: the spec's folder)."""
    try:
        parsed = _parser().parse_object(data)
    except ArgumentError as error:
        raise SpecError(f"{source}: {_one_line(error)}") from None
    folder = Path(relative_to) if relative_to is not None else source.parent
    base = [_config_path(source, folder, f"base[{i}]", p) for i, p in enumerate(parsed.base)]
    variants = {}
    for name, variant in (parsed.variants or {}).items():
        configs = [
            str(_config_path(source, folder, f"variants.{name}.configs[{i}]", p))
            for i, p in enumerate(variant.configs)
        ]
        variants[name] = Variant(configs, dict(variant.overrides))
    name = parsed.name or source.stem
    report = ReportOptions(parsed.report.datasets, list(parsed.report.metrics))
    spec = ExperimentSpec(
        name=name,
        source=source,
        base=base,
        overrides=dict(parsed.overrides),
        variants=variants,
        seeds=list(parsed.seeds),
        baseline=parsed.baseline,
        report=report,
        output=Path(parsed.output) if parsed.output else Path("runs") / name,
        test_checkpoint=parsed.test_checkpoint,
    )
    _check(source, spec)
    return spec


def load_spec(path: str | Path) -> ExperimentSpec:
    """Read and validate an experiment spec or a project W&B sweep file."""
    from weft_lightning.experiments.sweeps import is_sweep, spec_data_from_sweep

    source = Path(path)
    if not source.is_file():
        raise SpecError(f"Experiment spec {source} does not exist.")
    try:
        data = yaml.safe_load(source.read_text())
    except yaml.YAMLError as error:
        raise SpecError(f"{source}: not valid YAML: {_one_line(error)}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{source}: an experiment spec is a mapping of keys (name, base, ...).")
    if is_sweep(data):
        return spec_from_data(source, spec_data_from_sweep(source, data), relative_to=Path.cwd())
    return spec_from_data(source, data)
