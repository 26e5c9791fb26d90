"""Reference values the metric tests compare against: PySODMetrics 1.6.2 for the field's
measures and a direct numpy statement of mmseg's ``eval_metrics`` for mIoU, mDice, mFscore."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import ndimage

from weft_lightning.metrics import METRIC_KEYS

psm = pytest.importorskip("py_sod_metrics")

Pair = tuple[np.ndarray, np.ndarray]  # (pred uint8 (H,W), gt uint8 (H,W))


# ----------------------------------------------------------------------------- references
def _overlap_reference(pairs: list[Pair]) -> dict[str, float]:
    """IoU / Dice per image (0 for 0/0, as pysodmetrics' handlers); dataset mIoU, mDice, mFscore."""
    ious, dices, total = [], [], np.zeros(4)
    for pred, gt in pairs:
        p, g = pred >= 128, gt > 128
        tp, fp, fn = np.sum(p & g), np.sum(p & ~g), np.sum(~p & g)
        tn = p.size - tp - fp - fn
        ious.append(tp / (tp + fp + fn) if tp + fp + fn else 0.0)
        dices.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        total += (tp, fp, fn, tn)
    tp, fp, fn, tn = total
    unions = np.array([tn + fp + fn, tp + fp + fn])
    per_class = np.array([tn, tp])[unions > 0] / unions[unions > 0]
    # mmseg's eval_metrics: per-class areas summed over the dataset, 0/0 = NaN, nanmean
    inter = np.array([tn, tp])
    area_pred, area_label = np.array([tn + fn, tp + fp]), np.array([tn + fp, tp + fn])
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of all-NaN
        precision, recall = inter / area_pred, inter / area_label
        mdice = np.nanmean(2 * inter / (area_pred + area_label))
        mfscore = np.nanmean(2 * precision * recall / (precision + recall))
    return {
        "iou": float(np.mean(ious)),
        "dice": float(np.mean(dices)),
        "miou": per_class.mean(),
        "mdice": float(mdice),
        "mfscore": float(mfscore),
    }


def reference_values(pairs: list[Pair], curves: bool = False) -> dict[str, object]:
    """Dataset values of pysodmetrics 1.6.2 (plus numpy IoU/Dice/mIoU) on 8-bit pairs."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mae, sm, em, fm, wfm = (
            psm.MAE(),
            psm.Smeasure(),
            psm.Emeasure(),
            psm.Fmeasure(),
            psm.WeightedFmeasure(),
        )
        for pred, gt in pairs:
            for measure in (mae, sm, em, fm, wfm):
                measure.step(pred, gt)
        e, f = em.get_results()["em"], fm.get_results()
    values: dict[str, object] = {
        "sm": sm.get_results()["sm"],
        "mae": mae.get_results()["mae"],
        "em_adp": e["adp"],
        "em_mean": e["curve"].mean(),
        "em_max": e["curve"].max(),
        "fm_adp": f["fm"]["adp"],
        "fm_mean": f["fm"]["curve"].mean(),
        "fm_max": f["fm"]["curve"].max(),
        "wfm": wfm.get_results()["wfm"],
        **_overlap_reference(pairs),
    }
    if curves:
        values.update(
            em_curve=e["curve"],
            fm_curve=f["fm"]["curve"],
            precision=f["pr"]["p"],
            recall=f["pr"]["r"],
        )
    return values


def assert_close(got: dict[str, float], want: dict[str, object], tol: float) -> None:
    for key in METRIC_KEYS:
        g, w = float(got[key]), float(want[key])  # type: ignore[arg-type]
        if np.isnan(w):
            assert np.isnan(g), f"{key}: expected NaN, got {g}"
        else:
            # relative beyond 1: a 1x1 image's E-measure is 1/EPS in the reference
            assert abs(g - w) <= tol * max(1.0, abs(w)), f"{key}: ours {g!r} vs reference {w!r}"


# ----------------------------------------------------------------------------- data
def noisy_prediction(gt: np.ndarray, rng: np.random.Generator, blur: float = 3) -> np.ndarray:
    pred = ndimage.gaussian_filter(gt.astype(np.float64), blur) + rng.normal(0, 30, gt.shape)
    return np.clip(pred, 0, 255).astype(np.uint8)
