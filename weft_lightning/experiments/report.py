"""The experiment report: variant x dataset x measure, mean ± std over seeds, delta to the
baseline, best values marked; as console, Markdown, CSV, LaTeX and a PNG bar chart.

Values are each run's own ``weft test`` results (``results.json`` in its folder). A run that
has not finished is listed as missing, never averaged away, and a report with missing runs
says that it is partial.
"""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from weft_lightning.callbacks.experiment_run import RESULTS_FILE
from weft_lightning.evaluation.tables import (
    LABELS,
    LATEX_STYLES,
    LOWER_IS_BETTER,
    grid,
    latex_escape,
    value_ranks,
)
from weft_lightning.experiments.local import STATE_FILE, read_json
from weft_lightning.experiments.plan import run_folder
from weft_lightning.experiments.spec import ExperimentSpec

__all__ = ["ExperimentReport", "Stat", "build_report", "write_report"]

#: The spec as the launchers saved it, in the experiment's output folder.
SPEC_FILE = "experiment.json"


@dataclass(frozen=True)
class Stat:
    """Mean, sample standard deviation (None for one seed) and the number of seeds."""

    mean: float
    std: float | None
    n: int

    @classmethod
    def of(cls, values: list[float]) -> Stat:
        """The statistics of the per-seed values."""
        std = statistics.stdev(values) if len(values) > 1 else None
        return cls(statistics.fmean(values), std, len(values))

    def text(self, digits: int = 4) -> str:
        """``0.8321 ± 0.0040`` (the mean alone for one seed)."""
        shown = f"{self.mean:.{digits}f}"
        return shown if self.std is None else f"{shown} ± {self.std:.{digits}f}"


@dataclass
class ExperimentReport:
    """The finished runs' test results of an experiment (see the module docstring)."""

    spec: ExperimentSpec
    #: variant -> seed -> dataset -> measure -> value
    results: dict[str, dict[int, dict[str, dict[str, float]]]]
    missing: list[str] = field(default_factory=list)

    # ------------------------------------------------------------------ data
    @property
    def datasets(self) -> list[str]:
        """Test sets in the report: the spec's choice, else every one found."""
        if self.spec.report.datasets:
            return list(self.spec.report.datasets)
        found = (d for seeds in self.results.values() for per in seeds.values() for d in per)
        return list(dict.fromkeys(found))

    @property
    def metrics(self) -> list[str]:
        """Measures in the report, in the spec's order."""
        return list(self.spec.report.metrics)

    @property
    def partial(self) -> bool:
        """True while some run has no results."""
        return bool(self.missing)

    def stat(self, variant: str, dataset: str, metric: str) -> Stat | None:
        """Mean ± std over the variant's finished seeds (None without any)."""
        values = [
            per[dataset][metric]
            for per in self.results.get(variant, {}).values()
            if metric in per.get(dataset, {})
        ]
        return Stat.of(values) if values else None

    def delta(self, variant: str, dataset: str, metric: str) -> float | None:
        """Mean of ``variant`` minus the baseline's mean (None for the baseline itself)."""
        baseline = self.spec.baseline
        if baseline is None or variant == baseline:
            return None
        mine, base = self.stat(variant, dataset, metric), self.stat(baseline, dataset, metric)
        return None if mine is None or base is None else mine.mean - base.mean

    def columns(self) -> list[tuple[str, str]]:
        """(dataset, measure) pairs, dataset-major."""
        return [(d, m) for d in self.datasets for m in self.metrics]

    def ranks(self, dataset: str, metric: str, digits: int = 4) -> dict[str, int | None]:
        """Rank (0 = best) of each variant's printed mean in one column."""
        means = [self.stat(v, dataset, metric) for v in self.spec.variants]
        values = [s.mean if s is not None else None for s in means]
        return dict(zip(self.spec.variants, value_ranks(values, metric, digits), strict=True))

    def seeds_done(self, variant: str) -> int:
        """How many of the variant's seeds have results."""
        return len(self.results.get(variant, {}))

    # ------------------------------------------------------------------ renderings
    def _header(self, dataset: str, metric: str) -> str:
        label = LABELS.get(metric, metric) + (" ↓" if metric in LOWER_IS_BETTER else " ↑")
        return label if len(self.datasets) == 1 else f"{dataset} {label}"

    def _cell(self, variant: str, dataset: str, metric: str, best: bool, bold: str) -> str:
        stat = self.stat(variant, dataset, metric)
        if stat is None:
            return "-"
        text = f"{bold}{stat.text()}{bold}" if best else stat.text()
        delta = self.delta(variant, dataset, metric)
        return text if delta is None else f"{text} ({delta:+.4f})"

    def title(self) -> str:
        """Experiment name, seeds, and whether runs are missing."""
        total = len(self.spec.variants) * len(self.spec.seeds)
        done = total - len(self.missing)
        state = f"partial: {done} of {total} runs finished" if self.partial else f"{total} runs"
        return f"Experiment {self.spec.name} ({state}; mean ± std over seeds {self.spec.seeds})"

    def markdown(self) -> str:
        """A Markdown table (best mean per column in bold), then the missing runs."""
        header = ["Variant", "seeds", *(self._header(d, m) for d, m in self.columns())]
        best = {(d, m): self.ranks(d, m) for d, m in self.columns()}
        rows = [
            [
                variant + (" (baseline)" if variant == self.spec.baseline else ""),
                str(self.seeds_done(variant)),
                *(
                    self._cell(variant, d, m, best[d, m][variant] == 0, "**")
                    for d, m in self.columns()
                ),
            ]
            for variant in self.spec.variants
        ]
        parts = [f"{self.title()}\n", grid(header, rows)]
        if self.missing:
            parts.append(
                "\nMissing runs (not in the means):\n" + "\n".join(f"- {m}" for m in self.missing)
            )
        return "\n".join(parts) + "\n"

    def console_table(self) -> Table:
        """The Markdown table's content as a rich table."""
        table = Table(title=self.title(), title_justify="left")
        table.add_column("Variant")
        table.add_column("seeds", justify="right")
        for d, m in self.columns():
            table.add_column(self._header(d, m), justify="right")
        best = {(d, m): self.ranks(d, m) for d, m in self.columns()}
        for variant in self.spec.variants:
            cells = [
                self._cell(variant, d, m, best[d, m][variant] == 0, "") for d, m in self.columns()
            ]
            styled = [
                f"[bold]{c}[/bold]" if best[d, m][variant] == 0 else c
                for c, (d, m) in zip(cells, self.columns(), strict=True)
            ]
            table.add_row(variant, str(self.seeds_done(variant)), *styled)
        return table

    def csv(self) -> str:
        """One row per (variant, dataset, measure): seeds, mean, std, delta and every value."""
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["variant", "dataset", "metric", "seeds", "mean", "std", "delta", "values"])
        for variant in self.spec.variants:
            for dataset, metric in self.columns():
                stat = self.stat(variant, dataset, metric)
                delta = self.delta(variant, dataset, metric)
                values = {
                    seed: per[dataset][metric]
                    for seed, per in sorted(self.results.get(variant, {}).items())
                    if metric in per.get(dataset, {})
                }
                writer.writerow(
                    [
                        variant,
                        dataset,
                        metric,
                        len(values),
                        "" if stat is None else repr(stat.mean),
                        "" if stat is None or stat.std is None else repr(stat.std),
                        "" if delta is None else repr(delta),
                        ";".join(f"{seed}:{value!r}" for seed, value in values.items()),
                    ]
                )
        return out.getvalue()

    def latex(self, digits: int = 3) -> str:
        """A booktabs table: mean with ± std as a subscript; in each column the best mean is
        bold, the second underlined, the third italic (MAE: lower is better)."""
        datasets, metrics = self.datasets, self.metrics
        ranks = {(d, m): self.ranks(d, m, digits) for d, m in self.columns()}
        arrow = {True: r"$\downarrow$", False: r"$\uparrow$"}
        labels = [LABELS.get(m, m) + arrow[m in LOWER_IS_BETTER] for m in metrics]
        group = rf"\multicolumn{{{len(metrics)}}}{{c}}"
        lines = [
            rf"\begin{{tabular}}{{l{'c' * len(metrics) * len(datasets)}}}",
            r"\toprule",
            " & ".join(["", *(group + "{" + latex_escape(d) + "}" for d in datasets)]) + r" \\",
            " & ".join(["Variant", *labels * len(datasets)]) + r" \\",
            r"\midrule",
        ]
        for variant in self.spec.variants:
            cells = []
            for dataset, metric in self.columns():
                stat, rank = self.stat(variant, dataset, metric), ranks[dataset, metric][variant]
                if stat is None:
                    cells.append("--")
                    continue
                mean = f"{stat.mean:.{digits}f}"
                mean = LATEX_STYLES[rank] % mean if rank is not None and rank < 3 else mean
                spread = "" if stat.std is None else rf"$_{{\pm {stat.std:.{digits}f}}}$"
                cells.append(mean + spread)
            lines.append(" & ".join([latex_escape(variant), *cells]) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}"]
        return "\n".join(lines) + "\n"

    def chart(self, path: Path) -> Path:
        """A PNG bar chart: one panel per measure, a bar per variant (mean, ± std whiskers)
        for each dataset."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        metrics, datasets, variants = self.metrics, self.datasets, list(self.spec.variants)
        fig, axes = plt.subplots(
            1,
            len(metrics),
            figsize=(2.2 + 0.45 * len(variants) * len(datasets) * len(metrics), 3.6),
            squeeze=False,
        )
        width = 0.8 / max(1, len(variants))
        for ax, metric in zip(axes[0], metrics, strict=True):
            for index, variant in enumerate(variants):
                stats = [self.stat(variant, d, metric) for d in datasets]
                xs = [i + (index - (len(variants) - 1) / 2) * width for i in range(len(datasets))]
                means = [s.mean if s else math.nan for s in stats]
                errors = [s.std or 0.0 if s else 0.0 for s in stats]
                ax.bar(xs, means, width, yerr=errors, capsize=2, label=variant)
            ax.set_title(LABELS.get(metric, metric) + (" ↓" if metric in LOWER_IS_BETTER else " ↑"))
            ax.set_xticks(range(len(datasets)), datasets)
        handles, labels = axes[0][0].get_legend_handles_labels()
        fig.legend(handles, labels, fontsize=7, loc="center right")
        fig.suptitle(self.title(), fontsize=9)
        fig.tight_layout(rect=(0.0, 0.0, 0.9, 1.0))
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path

    def to_json(self) -> str:
        """Every value, the statistics and the missing runs."""
        stats: dict[str, Any] = {}
        for variant in self.spec.variants:
            for dataset, metric in self.columns():
                stat = self.stat(variant, dataset, metric)
                if stat is not None:
                    stats.setdefault(variant, {}).setdefault(dataset, {})[metric] = vars(stat)
        return json.dumps(
            {
                "experiment": self.spec.name,
                "partial": self.partial,
                "missing": self.missing,
                "results": self.results,
                "stats": stats,
            },
            indent=2,
        )


def _dataset_metrics(metrics: dict[str, float]) -> dict[str, dict[str, float]]:
    """``test/<dataset>/<measure>`` keys as dataset -> measure -> value."""
    out: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "test":
            out.setdefault(parts[1], {})[parts[2]] = float(value)
    return out


def build_report(spec: ExperimentSpec) -> ExperimentReport:
    """The report of ``spec`` from the run folders under its output folder."""
    results: dict[str, dict[int, dict[str, dict[str, float]]]] = {}
    missing = []
    for variant in spec.variants:
        for seed in spec.seeds:
            folder = run_folder(spec, variant, seed)
            record = read_json(folder / STATE_FILE)
            data = read_json(folder / RESULTS_FILE)
            # a SLURM task writes results.json but no launcher record: its results count
            if record.get("state", "done") == "done" and data.get("metrics"):
                results.setdefault(variant, {})[seed] = _dataset_metrics(data["metrics"])
                continue
            state = record.get("state", "not started")
            log = f" (log {record['log']})" if record.get("log") else ""
            missing.append(f"{variant}/seed{seed}: {state}{log}")
    return ExperimentReport(spec, results, missing)


def write_report(report: ExperimentReport, folder: Path) -> list[Path]:
    """``report.md``, ``report.csv``, ``report.tex``, ``report.json`` and ``report.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for suffix, render in (
        ("md", report.markdown),
        ("csv", report.csv),
        ("tex", report.latex),
        ("json", report.to_json),
    ):
        path = folder / f"report.{suffix}"
        path.write_text(render())
        written.append(path)
    if report.results:
        written.append(report.chart(folder / "report.png"))
    return written
