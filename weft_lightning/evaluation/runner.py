"""Evaluate every (method, dataset) of a spec and gather the results for tables and curves."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from weft_lightning.evaluation.scoring import FolderResult, evaluate_folder
from weft_lightning.evaluation.spec import EvalSpec

__all__ = ["EvaluationReport", "evaluate_spec"]


@dataclass
class EvaluationReport:
    """Results per method and dataset, plus every file-level problem met on the way."""

    folders: dict[str, dict[str, FolderResult]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # (method, dataset) without a folder
    warnings: list[str] = field(default_factory=list)

    @property
    def results(self) -> dict[str, dict[str, dict[str, float]]]:
        """method -> dataset -> metric -> value."""
        return {m: {d: r.metrics for d, r in per.items()} for m, per in self.folders.items()}

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """method -> dataset -> number of scored images."""
        return {m: {d: r.count for d, r in per.items()} for m, per in self.folders.items()}

    def problems(self) -> list[str]:
        """Human-readable lines: unpaired files, resized maps, skipped combinations."""
        lines = [f"skipped {s}" for s in self.skipped]
        for method, per in self.folders.items():
            for dataset, r in per.items():
                where = f"{method} / {dataset}"
                for what, names in (
                    ("mask(s) without a prediction", r.missing),
                    ("prediction(s) without a mask", r.extra),
                    ("prediction(s) resized to their mask's size", r.resized),
                ):
                    if names:
                        lines.append(f"{where}: {len(names)} {what}: {', '.join(names)}")
        return lines

    def to_json(self) -> str:
        """Everything above as strict JSON (NaN as null; curves left out, see --curves)."""
        payload: dict[str, Any] = {
            "results": {
                m: {
                    d: {k: None if math.isnan(v) else v for k, v in values.items()}
                    for d, values in per.items()
                }
                for m, per in self.results.items()
            },
            "images": self.counts,
            "files": {
                m: {
                    d: {"missing": r.missing, "extra": r.extra, "resized": r.resized}
                    for d, r in per.items()
                }
                for m, per in self.folders.items()
            },
            "skipped": self.skipped,
        }
        return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def evaluate_spec(spec: EvalSpec) -> EvaluationReport:
    """Score each method's folder for each dataset it lists; absent folders are skipped."""
    report = EvaluationReport()
    for method, folders in spec.methods.items():
        for dataset, pred_dir in folders.items():
            if not Path(pred_dir).is_dir():
                report.skipped.append(f"{method} / {dataset}: no folder {pred_dir}")
                continue
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                result = evaluate_folder(pred_dir, spec.datasets[dataset])
            report.warnings += [str(w.message) for w in caught]
            report.folders.setdefault(method, {})[dataset] = result
    return report
