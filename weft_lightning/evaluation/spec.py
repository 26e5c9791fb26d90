"""The methods x datasets evaluation spec (YAML), in the spirit of PySODEvalToolkit's JSON files.

    datasets:                      # name -> ground-truth mask folder
      ECSSD: data/ECSSD/masks
      DUTS:  {mask: data/DUTS-TE/masks}
    methods:                       # name -> {dataset: prediction folder} or a template
      WEFT:  preds/weft/{dataset}
      Other:
        ECSSD: other/ecssd_maps

Relative paths are relative to the spec file. A method without maps for a dataset is skipped
(and reported) rather than an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from weft_lightning.evaluation.pairing import EvaluationError

__all__ = ["EvalSpec", "load_spec"]


@dataclass
class EvalSpec:
    """Ground-truth folder per dataset and prediction folder per (method, dataset)."""

    datasets: dict[str, Path]
    methods: dict[str, dict[str, Path]]


def _path(value: Any, where: str, base: Path) -> Path:
    if isinstance(value, dict):
        if "mask" not in value and "path" not in value:
            raise EvaluationError(f"{where} must be a folder or a mapping with a 'mask' key")
        value = value.get("mask", value.get("path"))
    if not isinstance(value, str) or not value:
        raise EvaluationError(f"{where} must be a folder path, got {value!r}")
    path = Path(value).expanduser()
    return path if path.is_absolute() else base / path


def _method(name: str, value: Any, datasets: dict[str, Path], base: Path) -> dict[str, Path]:
    where = f"methods.{name}"
    if isinstance(value, str):
        if "{dataset}" not in value:
            raise EvaluationError(
                f"{where} is one folder {value!r}; use a template with '{{dataset}}' or a "
                "mapping dataset -> folder"
            )
        return {d: _path(value.replace("{dataset}", d), where, base) for d in datasets}
    if not isinstance(value, dict):
        raise EvaluationError(f"{where} must be a template string or a mapping, got {value!r}")
    unknown = sorted(set(value) - set(datasets))
    if unknown:
        raise EvaluationError(
            f"{where} names datasets {unknown} that are not under 'datasets' "
            f"({sorted(datasets)}); add them there or fix the names"
        )
    return {d: _path(v, f"{where}.{d}", base) for d, v in value.items()}


def load_spec(path: Path) -> EvalSpec:
    """Read and validate a spec file; every error names the key at fault."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as error:
        raise EvaluationError(f"Cannot read spec file {path}: {error}") from error
    except yaml.YAMLError as error:
        raise EvaluationError(f"Spec file {path} is not valid YAML: {error}") from error
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), dict):
        raise EvaluationError(f"Spec file {path} needs a 'datasets' mapping (name -> mask folder)")
    if not isinstance(raw.get("methods"), dict) or not raw["methods"]:
        raise EvaluationError(f"Spec file {path} needs a 'methods' mapping (name -> folders)")
    base = path.parent
    datasets = {str(k): _path(v, f"datasets.{k}", base) for k, v in raw["datasets"].items()}
    methods = {str(k): _method(str(k), v, datasets, base) for k, v in raw["methods"].items()}
    return EvalSpec(datasets, methods)
