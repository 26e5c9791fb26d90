"""Per-image joint histograms of the 8-bit map, shared by every histogram-based measure.

An 8-bit map has at most 256 distinct values, so every measure except the weighted F-measure is
a function of how many pixels of each level fall on foreground or background, and in which of
the S-measure's four quadrants. One ``bincount`` over (image, quadrant, gt, level) gives all of
it for a batch of same-size images; the float64 value of each level (``v / 255`` then min-max
normalised, exactly the field's operations) is a 256-entry table per image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from weft_lightning.metrics.inputs import MapBatch

__all__ = ["LEVELS", "HistogramStats", "histogram_stats"]

LEVELS = 256
_LEVEL_VALUES = np.arange(LEVELS) / 255


@dataclass(frozen=True)
class HistogramStats:
    """Histogram view of a batch of B same-size images.

    hist: (B, 4, 2, 256) int64 pixel counts by quadrant (LT, RT, LB, RB around the gt centroid),
    gt (background, foreground) and 8-bit level. table: (B, 256) float64 normalised value of
    each level. split: (B, 2) int64 MATLAB-style centroid (row, column), the quadrant boundary.
    """

    hist: np.ndarray
    table: np.ndarray
    split: np.ndarray
    height: int
    width: int

    @property
    def size(self) -> int:
        """Pixels per image."""
        return self.height * self.width

    @property
    def fg(self) -> np.ndarray:
        """(B, 256) foreground counts per level."""
        return self.hist[:, :, 1].sum(1)

    @property
    def bg(self) -> np.ndarray:
        """(B, 256) background counts per level."""
        return self.hist[:, :, 0].sum(1)


def _centroid_split(masks: np.ndarray) -> np.ndarray:
    """Rounded (half to even) mean row and column of the foreground, plus one (MATLAB style)."""
    _, h, w = masks.shape
    count = masks.sum((1, 2))
    rows = masks.sum(2) @ np.arange(h)
    cols = masks.sum(1) @ np.arange(w)
    safe = np.maximum(count, 1)
    split = np.stack([np.round(rows / safe), np.round(cols / safe)], 1).astype(np.int64) + 1
    return np.where(count[:, None] > 0, split, 0)


def _level_table(levels_present: np.ndarray) -> np.ndarray:
    """p = v / 255, min-max normalised when the map is not constant (float64, same op order)."""
    lo = levels_present.argmax(1)
    hi = LEVELS - 1 - levels_present[:, ::-1].argmax(1)
    mn, mx = _LEVEL_VALUES[lo][:, None], _LEVEL_VALUES[hi][:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        stretched = (_LEVEL_VALUES - mn) / (mx - mn)
    return np.where(mx != mn, stretched, _LEVEL_VALUES)


def _compute(batch: MapBatch) -> HistogramStats:
    b, (h, w) = len(batch), batch.shape
    split = _centroid_split(batch.masks)
    below = (np.arange(h)[None, :] >= split[:, :1]).astype(np.int32)
    right = (np.arange(w)[None, :] >= split[:, 1:]).astype(np.int32)
    row_code = (np.arange(b, dtype=np.int32)[:, None] * 4 + 2 * below) * 512
    index = row_code[:, :, None] + (right * 512)[:, None, :]
    index += batch.masks * np.int32(256)
    index += batch.maps
    hist = np.bincount(index.ravel(), minlength=b * 4 * 2 * LEVELS).reshape(b, 4, 2, LEVELS)
    return HistogramStats(hist, _level_table(hist.sum((1, 2)) > 0), split, h, w)


def histogram_stats(batch: MapBatch) -> HistogramStats:
    """The batch's histograms, computed once and cached on the batch for every measure."""
    if "hist" not in batch._cache:
        batch._cache["hist"] = _compute(batch)
    return batch._cache["hist"]
