"""Score a folder of saved prediction maps against a folder of ground-truth masks."""

from __future__ import annotations

import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from weft_lightning.data.masks import MaskDecodeError, mask_to_u8, read_mask
from weft_lightning.evaluation.pairing import EvaluationError, Pairing, pair_folders
from weft_lightning.metrics import SODMetrics

__all__ = ["FolderResult", "evaluate_folder", "read_map"]

_BATCH = 16  # images held in memory at once


@dataclass
class FolderResult:
    """Dataset values (``METRIC_KEYS``), 256-point curves, and what was left out or resized."""

    metrics: dict[str, float]
    curves: dict[str, np.ndarray]
    count: int
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    resized: list[str] = field(default_factory=list)


def read_map(path: Path) -> np.ndarray:
    """A saved prediction map as 8-bit grayscale (H, W) uint8 (RGB(A) to L, 16-bit to 8)."""
    return _read_map(path)[0]


def _read_map(path: Path) -> tuple[np.ndarray, str]:
    """The map and its file kind (``PNG L`` for the field's 8-bit grayscale PNG)."""
    try:
        with Image.open(path) as image:
            image.load()
            return mask_to_u8(image), f"{image.format} {image.mode}"
    except (OSError, ValueError, SyntaxError) as error:
        raise EvaluationError(
            f"Cannot read prediction map {path} ({error}); replace it with an 8-bit PNG"
        ) from error


def _read_gt(path: Path) -> np.ndarray:
    try:
        return read_mask(path)
    except MaskDecodeError as error:
        raise EvaluationError(str(error)) from error


def _fit(pred: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an 8-bit map to (H, W)."""
    return np.asarray(Image.fromarray(pred).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _load(
    pairing: Pairing, kinds: Counter[str]
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    preds, gts, resized = [], [], []
    for stem, pred_path, gt_path in pairing.pairs:
        (pred, kind), gt = _read_map(pred_path), _read_gt(gt_path)
        kinds[kind] += 1
        if pred.shape != gt.shape:
            pred = _fit(pred, gt.shape)
            resized.append(stem)
        preds.append(np.array(pred))  # writable copies for torch
        gts.append(np.array(gt))
    return preds, gts, resized


def _note_formats(pred_dir: Path, kinds: Counter[str]) -> None:
    """One line per folder when predictions are not the field's 8-bit grayscale PNGs (JPEG
    artefacts or colour change the scores a little)."""
    others = {kind: n for kind, n in kinds.items() if kind != "PNG L"}
    if others:
        found = ", ".join(f"{n} {kind}" for kind, n in sorted(others.items()))
        warnings.warn(
            f"Predictions in {pred_dir} are not all 8-bit grayscale PNGs ({found}): read by "
            "their luminance; save maps as 8-bit PNGs for the field's exact scores.",
            stacklevel=3,
        )


def evaluate_folder(pred_dir: Path, gt_dir: Path) -> FolderResult:
    """All measures of the predictions in pred_dir against the masks in gt_dir.

    Files pair by stem (``a.png`` with ``a.jpg``); predictions of another size are resized to
    the mask's size with a warning; unpaired files are reported in the result.
    """
    pairing = pair_folders(Path(pred_dir), Path(gt_dir))
    metric = SODMetrics()
    resized: list[str] = []
    kinds: Counter[str] = Counter()
    for start in range(0, len(pairing.pairs), _BATCH):
        chunk = Pairing(pairing.pairs[start : start + _BATCH])
        preds, gts, changed = _load(chunk, kinds)
        metric.update([torch.from_numpy(p) for p in preds], [torch.from_numpy(g) for g in gts])
        resized += changed
    _note_formats(pred_dir, kinds)
    if resized:
        shown = ", ".join(resized[:5]) + (" ..." if len(resized) > 5 else "")
        warnings.warn(
            f"{len(resized)} prediction(s) in {pred_dir} differ in size from their masks and were "
            f"resized (bilinear) to the mask's size: {shown}",
            stacklevel=2,
        )
    return FolderResult(
        metrics={k: float(v) for k, v in metric.compute().items()},
        curves={k: v.numpy() for k, v in metric.curves().items()},
        count=len(pairing.pairs),
        missing=pairing.missing,
        extra=pairing.extra,
        resized=resized,
    )
