"""Overlap measures of the binary prediction (8-bit map >= 128, i.e. p >= 0.5, not stretched).

``ForegroundIoU`` / ``ForegroundDice`` average per-image scores; as in PySODMetrics' IoU and Dice
handlers a zero denominator (empty prediction on an empty mask) scores 0. ``TwoClassMIoU`` is the
segmentation benchmarks' mIoU: background and foreground IoU from intersections and unions summed
over the whole dataset, averaged over the classes that occur.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from weft_lightning.metrics.base import SODMeasure
from weft_lightning.metrics.functional import overlap_counts
from weft_lightning.metrics.histogram import histogram_stats
from weft_lightning.metrics.inputs import MapBatch

__all__ = ["ForegroundDice", "ForegroundIoU", "TwoClassMIoU"]


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


class TwoClassMIoU(SODMeasure):
    """Mean of background and foreground IoU accumulated over the dataset (the paper's mIoU)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("confusion", (4,))  # TP, FP, FN, TN summed over all pixels

    def _update_batch(self, batch: MapBatch) -> None:
        self._accumulate("confusion", overlap_counts(histogram_stats(batch)))

    def compute(self) -> torch.Tensor:
        """mIoU over the classes whose union is not empty (NaN before any pixel)."""
        tp, fp, fn, tn = self.confusion
        unions = torch.stack([tn + fp + fn, tp + fp + fn])
        ious = torch.stack([tn, tp]) / unions
        present = unions > 0
        return ious[present].mean() if bool(present.any()) else ious.sum() * float("nan")
