"""Per-image values of the histogram-based measures, vectorised over a batch of same-size images.

Each function maps :class:`HistogramStats` to per-image float64 arrays with the exact semantics of
PySODMetrics (see the package docs): same formulas, same operation order where rounding could
decide a comparison. Sums run over 256 levels instead of millions of pixels.
"""

from __future__ import annotations

import numpy as np

from weft_lightning.metrics.histogram import HistogramStats
from weft_lightning.metrics.inputs import MapBatch

__all__ = [
    "EPS",
    "adaptive_counts",
    "emeasure_from_counts",
    "fmeasure_adaptive",
    "fmeasure_curves",
    "mae",
    "overlap_counts",
    "smeasure",
    "threshold_curves",
]

EPS = float(np.spacing(1))
BETA_F = 0.3
_BINARY_LEVEL = 128  # the 8-bit map's p >= 0.5


def mae(st: HistogramStats) -> np.ndarray:
    """Mean |p - gt| per image."""
    err = (st.bg * st.table).sum(1) + (st.fg * (1 - st.table)).sum(1)
    return err / st.size


def _mean_value(st: HistogramStats) -> np.ndarray:
    return ((st.fg + st.bg) * st.table).sum(1) / st.size


# ----------------------------------------------------------------------------- S-measure
def _s_object(counts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """2m / (m^2 + 1 + std + EPS) over the pixels counted (std with ddof=1, 0 for one pixel)."""
    n = counts.sum(1)
    safe = np.maximum(n, 1)
    mean = (counts * values).sum(1) / safe
    var = (counts * (values - mean[:, None]) ** 2).sum(1) / np.maximum(n - 1, 1)
    std = np.where(n > 1, np.sqrt(var), 0.0)
    return 2 * mean / (mean * mean + 1 + std + EPS)


def _object_score(st: HistogramStats, y: np.ndarray) -> np.ndarray:
    fg_score = _s_object(st.fg, st.table) * y
    bg_score = _s_object(st.bg, 1 - st.table) * (1 - y)
    return fg_score + bg_score


def _constant_quadrant_mean_is_exact(
    st: HistogramStats, image: int, quadrant: int, value: float
) -> bool:
    """Whether numpy's mean of a constant quadrant equals the constant, bit for bit.

    The reference decides ssim = 1 or 0 for a constant prediction over a constant ground truth
    by this rounding accident; the same slice of a constant array reproduces it.
    """
    if value in (0.0, 1.0):  # sums of zeros or ones are exact
        return True
    cy, cx = (int(v) for v in st.split[image])
    rows = slice(0, cy) if quadrant < 2 else slice(cy, st.height)
    cols = slice(0, cx) if quadrant % 2 == 0 else slice(cx, st.width)
    full = np.full((st.height, st.width), value)
    return bool(full[rows, cols].mean() == value)


def _ssim(st: HistogramStats) -> np.ndarray:
    """(B, 4) ssim of each quadrant; NaN for an empty quadrant, as the reference gives."""
    hq = st.hist.astype(np.float64)  # (B, 4, 2, L)
    values = st.table[:, None, None, :]
    n = hq.sum((2, 3))
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (hq * values).sum((2, 3)) / n
        n_fg = hq[:, :, 1].sum(-1)
        y = n_fg / n
        dev = values - x[..., None, None]
        denom = n - 1 + EPS
        sigma_x = (hq * dev * dev).sum((2, 3)) / denom
        sigma_y = (n_fg * (1 - y) ** 2 + (n - n_fg) * y * y) / denom
        cross = (hq[:, :, 1] * dev[:, :, 0]).sum(-1) * (1 - y)
        cross = cross + (hq[:, :, 0] * dev[:, :, 0]).sum(-1) * (0 - y)
        sigma_xy = cross / denom
        alpha = 4 * x * y * sigma_xy
        beta = (x * x + y * y) * (sigma_x + sigma_y)
        score = np.where(alpha != 0, alpha / (beta + EPS), np.where(beta == 0, 1.0, 0.0))
        score = np.where(n > 0, score, np.nan)
    single = (hq > 0).sum((2, 3)) == 1
    for image, quadrant in zip(*np.nonzero(single), strict=True):
        level = int(np.nonzero(hq[image, quadrant].sum(0))[0][0])
        value = float(st.table[image, level])
        score[image, quadrant] = float(_constant_quadrant_mean_is_exact(st, image, quadrant, value))
    return score


def _region_score(st: HistogramStats) -> np.ndarray:
    cy, cx = st.split[:, 0].astype(np.float64), st.split[:, 1].astype(np.float64)
    area, h, w = st.size, st.height, st.width
    w_lt = cx * cy / area
    w_rt = cy * (w - cx) / area
    w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    weights = np.stack([w_lt, w_rt, w_lb, w_rb], 1)
    with np.errstate(invalid="ignore"):
        parts = _ssim(st) * weights
    return parts[:, 0] + parts[:, 1] + parts[:, 2] + parts[:, 3]


def smeasure(st: HistogramStats) -> np.ndarray:
    """Structure measure (alpha = 0.5) per image; NaN where the reference yields NaN."""
    y = st.fg.sum(1) / st.size
    mean_p = _mean_value(st)
    out = np.where(y == 0, 1 - mean_p, mean_p)
    mixed = (y > 0) & (y < 1)
    if mixed.any():
        sub = HistogramStats(st.hist[mixed], st.table[mixed], st.split[mixed], st.height, st.width)
        with np.errstate(invalid="ignore"):
            score = _object_score(sub, y[mixed]) * 0.5 + _region_score(sub) * 0.5
        out[mixed] = np.maximum(0, score)
    return out


# ------------------------------------------------------------- E-measure and F-measure
def threshold_curves(st: HistogramStats) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) counts (B, 256) for q >= 255 - k, q = floor(255 p) (entry 0 = threshold 255)."""
    b = st.table.shape[0]
    q = np.clip(np.floor(st.table * 255), 0, 255).astype(np.int64)  # absent levels may fall out
    q += np.arange(b)[:, None] * 256
    tp_hist = np.bincount(q.ravel(), weights=st.fg.ravel(), minlength=b * 256).reshape(b, 256)
    fp_hist = np.bincount(q.ravel(), weights=st.bg.ravel(), minlength=b * 256).reshape(b, 256)
    return np.cumsum(tp_hist[:, ::-1], 1), np.cumsum(fp_hist[:, ::-1], 1)


def _adaptive_threshold(st: HistogramStats, batch: MapBatch) -> np.ndarray:
    """min(2 mean(p), 1); numpy's own mean when a level sits within rounding of the threshold."""
    mean = _mean_value(st)
    present = (st.fg + st.bg) > 0
    near = (present & (np.abs(st.table - 2 * mean[:, None]) < 1e-12)).any(1)
    for i in np.nonzero(near)[0]:
        mean[i] = st.table[i][batch.maps[i]].mean()
    return np.minimum(2 * mean, 1)


def adaptive_counts(st: HistogramStats, batch: MapBatch) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) per image of the binary map p >= min(2 mean(p), 1)."""
    selected = st.table >= _adaptive_threshold(st, batch)[:, None]
    return (st.fg * selected).sum(1), (st.bg * selected).sum(1)


def _enhanced(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    align = 2 * (a * b) / (a**2 + b**2 + EPS)
    return (align + 1) ** 2 / 4


def emeasure_from_counts(
    tp: np.ndarray, fp: np.ndarray, gt_count: np.ndarray, size: int
) -> np.ndarray:
    """Enhanced-alignment measure of binarisations given their TP and FP counts.

    gt_count broadcasts against tp/fp (shape (B,) for scalars, (B, 1) for curves).
    """
    tp, fp = np.asarray(tp, np.float64), np.asarray(fp, np.float64)
    pred_fg = tp + fp
    pred_bg = size - pred_fg
    fn = gt_count - tp
    tn = pred_bg - fn
    mu_p, mu_g = pred_fg / size, gt_count / size
    total = _enhanced(1 - mu_p, 1 - mu_g) * tp
    total = total + _enhanced(1 - mu_p, 0 - mu_g) * fp
    total = total + _enhanced(0 - mu_p, 1 - mu_g) * fn
    total = total + _enhanced(0 - mu_p, 0 - mu_g) * tn
    total = np.where(gt_count == 0, pred_bg, np.where(gt_count == size, pred_fg, total))
    return total / (size - 1 + EPS)


def fmeasure_curves(
    tp: np.ndarray, fp: np.ndarray, gt_count: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(precision, recall, F) curves (B, 256) with beta^2 = 0.3, zero denominators as 1."""
    positives = tp + fp
    positives = np.where(positives == 0, 1, positives)
    precision = tp / positives
    recall = tp / np.maximum(gt_count, 1)[:, None]
    numerator = (1 + BETA_F) * precision * recall
    denominator = np.where(numerator == 0, 1, BETA_F * precision + recall)
    return precision, recall, numerator / denominator


def fmeasure_adaptive(tp: np.ndarray, fp: np.ndarray, gt_count: np.ndarray) -> np.ndarray:
    """Adaptive F-measure per image (0 when the binary map misses every foreground pixel)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        pre = tp / (tp + fp)
        rec = tp / gt_count
        fm = (1 + BETA_F) * pre * rec / (BETA_F * pre + rec)
    return np.where(tp == 0, 0.0, fm)


def overlap_counts(st: HistogramStats) -> np.ndarray:
    """(B, 4) float64 TP, FP, FN, TN of the raw 8-bit map at p >= 0.5 (level >= 128)."""
    tp = st.fg[:, _BINARY_LEVEL:].sum(1)
    fp = st.bg[:, _BINARY_LEVEL:].sum(1)
    fn = st.fg.sum(1) - tp
    tn = st.bg.sum(1) - fp
    return np.stack([tp, fp, fn, tn], 1).astype(np.float64)
