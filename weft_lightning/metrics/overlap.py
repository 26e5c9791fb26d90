"""Overlap measures of the binary prediction (8-bit map >= 128, i.e. p >= 0.5, not stretched).

``ForegroundIoU`` / ``ForegroundDice`` average per-image scores; as in PySODMetrics' IoU and Dice
handlers a zero denominator (empty prediction on an empty mask) scores 0.

``TwoClassMIoU``, ``TwoClassMDice`` and ``TwoClassMFscore`` are the segmentation benchmarks' mIoU,
mDice and mFscore exactly as mmsegmentation's ``eval_metrics`` defines them, with the two classes
background (0) and foreground (1) and no ignored pixels: per class c the areas
I = #(pred = c and gt = c), P = #(pred = c), L = #(gt = c) are summed over all pixels of the
dataset first; then IoU = I / (P + L - I), Dice = 2I / (P + L), precision = I / P, recall = I / L
and Fscore = (1 + b^2) precision recall / (b^2 precision + recall) with b = 1. A zero denominator
gives NaN (also Fscore when precision = recall = 0), and each measure is the NaN-ignoring mean over
the two classes (NaN only when both are). ``TwoClassOverlap`` accumulates the one confusion state
they share and returns all three (what :class:`SODMetrics` uses).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from weft_lightning.metrics.base import SODMeasure
from weft_lightning.metrics.functional import overlap_counts
from weft_lightning.metrics.histogram import histogram_stats
from weft_lightning.metrics.inputs import MapBatch

__all__ = [
    "ForegroundDice",
    "ForegroundIoU",
    "TwoClassMDice",
    "TwoClassMFscore",
    "TwoClassMIoU",
    "TwoClassOverlap",
    "two_class_scores",
]

_BETA = 1.0  # mmseg's default F-score beta


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den != 0)


class ForegroundIoU(SODMeasure):
    """Mean over images of |P and G| / |P or G| with P = (8-bit map >= 128)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("iou_sum")

    def _update_batch(self, batch: MapBatch) -> None:
        tp, fp, fn, _ = overlap_counts(histogram_stats(batch)).T
        self._accumulate("iou_sum", _safe_ratio(tp, tp + fp + fn))

    def compute(self) -> torch.Tensor:
        """Dataset mean foreground IoU."""
        return self._mean("iou_sum")


class ForegroundDice(SODMeasure):
    """Mean over images of 2 |P and G| / (|P| + |G|) with P = (8-bit map >= 128)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("dice_sum")

    def _update_batch(self, batch: MapBatch) -> None:
        tp, fp, fn, _ = overlap_counts(histogram_stats(batch)).T
        self._accumulate("dice_sum", _safe_ratio(2 * tp, tp + fn + tp + fp))

    def compute(self) -> torch.Tensor:
        """Dataset mean Dice."""
        return self._mean("dice_sum")


def two_class_scores(confusion: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-class (background, foreground) IoU, Dice and Fscore of summed TP, FP, FN, TN.

    mmseg's ``eval_metrics`` on the two classes: intersection, prediction and label areas per
    class, IoU = I / U, Dice = 2I / (P + L), Fscore of precision I / P and recall I / L. An empty
    denominator gives NaN (0/0, as there; ``confusion`` is float, so division never raises).
    """
    tp, fp, fn, tn = confusion.unbind(-1)
    intersect = torch.stack([tn, tp], -1)
    area_pred = torch.stack([tn + fn, tp + fp], -1)
    area_label = torch.stack([tn + fp, tp + fn], -1)
    union = area_pred + area_label - intersect
    precision = intersect / area_pred
    recall = intersect / area_label
    beta2 = _BETA**2
    return {
        "iou": intersect / union,
        "dice": 2 * intersect / (area_pred + area_label),
        "fscore": (1 + beta2) * (precision * recall) / (beta2 * precision + recall),
    }


class _TwoClassConfusion(SODMeasure):
    """TP, FP, FN, TN of the binary prediction summed over all pixels of the dataset."""

    confusion: torch.Tensor  # state (_add_sum)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("confusion", (4,))  # TP, FP, FN, TN summed over all pixels

    def _update_batch(self, batch: MapBatch) -> None:
        self._accumulate("confusion", overlap_counts(histogram_stats(batch)))

    def _scores(self) -> dict[str, torch.Tensor]:
        """mIoU, mDice, mFscore: nanmean over the two classes (NaN before any pixel)."""
        per_class = two_class_scores(self.confusion)
        return {f"m{k}": torch.nanmean(v) for k, v in per_class.items()}


class TwoClassOverlap(_TwoClassConfusion):
    """mIoU, mDice and mFscore of the dataset from one shared confusion state (mmseg's
    ``eval_metrics`` on background and foreground; see the module docstring)."""

    def compute(self) -> dict[str, torch.Tensor]:
        """``{"miou", "mdice", "mfscore"}`` as float64 scalars (NaN before any pixel)."""
        return self._scores()


class TwoClassMIoU(_TwoClassConfusion):
    """mmseg's mIoU (the paper's): nanmean over background and foreground of I / U, with the
    intersections and unions summed over the whole dataset."""

    def compute(self) -> torch.Tensor:
        """mIoU over the classes whose union is not empty (NaN before any pixel)."""
        return self._scores()["miou"]


class TwoClassMDice(_TwoClassConfusion):
    """mmseg's mDice: nanmean over background and foreground of 2I / (P + L), with the areas
    summed over the whole dataset."""

    def compute(self) -> torch.Tensor:
        """mDice over the classes present in prediction or ground truth (NaN before any pixel)."""
        return self._scores()["mdice"]


class TwoClassMFscore(_TwoClassConfusion):
    """mmseg's mFscore (beta = 1): nanmean over background and foreground of the F-score of the
    dataset-level precision I / P and recall I / L; a class without predicted or labelled pixels,
    or with precision = recall = 0, is NaN and left out of the mean."""

    def compute(self) -> torch.Tensor:
        """mFscore over the classes whose F-score is defined (NaN before any pixel)."""
        return self._scores()["mfscore"]
