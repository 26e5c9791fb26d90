"""mIoU, mDice and mFscore against an independent float64 port of mmseg's ``eval_metrics``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from weft_lightning.evaluation import to_latex
from weft_lightning.evaluation.tables import LABELS, LOWER_IS_BETTER
from weft_lightning.metrics import (
    METRIC_KEYS,
    SODMetrics,
    TwoClassMDice,
    TwoClassMFscore,
    TwoClassMIoU,
    TwoClassOverlap,
)

NUM_CLASSES = 2
IGNORE_INDEX = 255
KEYS = ("miou", "mdice", "mfscore")
TOL = 1e-9


# ----------------------------------------------------------------------------- reference
def _label_maps(pred: torch.Tensor, gt: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(pred, label) int64 label maps: 0 background, 1 foreground.

    A float probability map is first saved as 8 bits, round(255 p) in float32 (what the
    prediction writer stores), and is foreground from 128 on; ground truth is foreground > 128.
    """
    if pred.dtype == torch.uint8:
        level = pred.numpy().astype(np.int64)
    else:
        scaled = np.clip(pred.numpy().astype(np.float32), 0, 1) * np.float32(255)
        level = np.rint(scaled).astype(np.int64)
    return (level >= 128).astype(np.int64), (gt.numpy().astype(np.int64) > 128).astype(np.int64)


def _intersect_and_union(
    pred: np.ndarray, label: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mmseg's per-image areas: intersect, union, pred and label, per class (float64)."""
    keep = label != IGNORE_INDEX
    pred, label = pred[keep], label[keep]
    both = pred[pred == label]
    bins = np.arange(NUM_CLASSES + 1)
    area_intersect = np.histogram(both, bins=bins)[0].astype(np.float64)
    area_pred = np.histogram(pred, bins=bins)[0].astype(np.float64)
    area_label = np.histogram(label, bins=bins)[0].astype(np.float64)
    area_union = area_pred + area_label - area_intersect
    return area_intersect, area_union, area_pred, area_label


def mmseg_eval_metrics(
    preds: list[torch.Tensor], gts: list[torch.Tensor], beta: float = 1.0
) -> dict[str, float]:
    """mmseg's eval_metrics(['mIoU', 'mDice', 'mFscore']): areas summed over the dataset first,
    per-class IoU / Dice / Fscore with 0/0 = NaN, then the NaN-ignoring mean over classes."""
    total = np.zeros((4, NUM_CLASSES))  # intersect, union, pred, label
    for pred, gt in zip(preds, gts, strict=True):
        total += np.stack(_intersect_and_union(*_label_maps(pred, gt)))
    inter, union, area_pred, area_label = total
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = inter / union
        dice = 2 * inter / (area_pred + area_label)
        precision = inter / area_pred
        recall = inter / area_label
        fscore = np.array(
            [
                (1 + beta**2) * (p * r) / ((beta**2 * p) + r)
                for p, r in zip(precision, recall, strict=True)
            ]
        )
    per_class = {"miou": iou, "mdice": dice, "mfscore": fscore}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # nanmean of an all-NaN array
        return {k: float(np.nanmean(v)) for k, v in per_class.items()}


def _ours(preds: list[torch.Tensor], gts: list[torch.Tensor], chunk: int = 3) -> dict[str, float]:
    metric = SODMetrics()
    for start in range(0, len(preds), chunk):
        metric.update(preds[start : start + chunk], gts[start : start + chunk])
    values = metric.compute()
    return {k: float(values[k]) for k in KEYS}


def _assert_matches(preds: list[torch.Tensor], gts: list[torch.Tensor]) -> dict[str, float]:
    got, want = _ours(preds, gts), mmseg_eval_metrics(preds, gts)
    for key in KEYS:
        if np.isnan(want[key]):
            assert np.isnan(got[key]), f"{key}: expected NaN, got {got[key]}"
        else:
            assert abs(got[key] - want[key]) <= TOL, f"{key}: ours {got[key]!r} vs {want[key]!r}"
    return got


# ----------------------------------------------------------------------------- data
def _random_dataset(seed: int, sizes: list[tuple[int, int]]) -> tuple[list, list]:
    gen = torch.Generator().manual_seed(seed)
    preds, gts = [], []
    for h, w in sizes:
        gt = (torch.rand(h, w, generator=gen) > 0.7).to(torch.uint8) * 255
        gt[: h // 3] = torch.randint(0, 256, (h // 3, w), generator=gen, dtype=torch.uint8)
        noise = torch.rand(h, w, generator=gen)
        preds.append((0.6 * gt.double() / 255 + 0.4 * noise).float())
        gts.append(gt)
    return preds, gts


SIZES = [(17, 23), (64, 48), (1, 9), (33, 33), (120, 75), (5, 1), (64, 48)]


# ----------------------------------------------------------------------------- tests
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_maps_of_several_sizes_match_mmseg(seed: int) -> None:
    preds, gts = _random_dataset(seed, SIZES)
    got = _assert_matches(preds, gts)
    assert all(0 < got[k] < 1 for k in KEYS)


def test_uint8_maps_match_mmseg() -> None:
    preds, gts = _random_dataset(3, SIZES)
    maps = [(p * 255).round().to(torch.uint8) for p in preds]
    assert _ours(maps, gts) == _ours(preds, gts)
    _assert_matches(maps, gts)


def test_image_all_background_in_ground_truth() -> None:
    preds, gts = _random_dataset(4, [(40, 30), (25, 52), (31, 31)])
    gts[1] = torch.zeros_like(gts[1])
    _assert_matches(preds, gts)
    # a dataset of only that image: the foreground class has L = 0 but P > 0
    got = _assert_matches(preds[1:2], gts[1:2])
    assert got["mdice"] == pytest.approx(_background_only(preds[1:2], gts[1:2])["mdice"] / 2)


def _background_only(preds: list[torch.Tensor], gts: list[torch.Tensor]) -> dict[str, float]:
    """Background-class IoU, Dice and Fscore (mmseg's formulas, summed areas)."""
    labels = [_label_maps(p, g) for p, g in zip(preds, gts, strict=True)]
    inter = sum(float(((p == 0) & (g == 0)).sum()) for p, g in labels)
    area_pred = sum(float((p == 0).sum()) for p, _ in labels)
    area_label = sum(float((g == 0).sum()) for _, g in labels)
    precision, recall = inter / area_pred, inter / area_label
    return {
        "miou": inter / (area_pred + area_label - inter),
        "mdice": 2 * inter / (area_pred + area_label),
        "mfscore": 2 * precision * recall / (precision + recall),
    }


def test_prediction_all_background() -> None:
    """Foreground P = 0: precision NaN, so mFscore is the background class's Fscore alone."""
    _, gts = _random_dataset(5, [(40, 30), (25, 52)])
    preds = [torch.full(g.shape, 0.3) for g in gts]
    got = _assert_matches(preds, gts)
    background = _background_only(preds, gts)
    assert np.isfinite(got["mfscore"])
    assert abs(got["mfscore"] - background["mfscore"]) <= TOL
    # IoU and Dice of the foreground are 0 (I = 0, L > 0), not NaN: they halve the background's
    assert abs(got["mdice"] - background["mdice"] / 2) <= TOL
    assert abs(got["miou"] - background["miou"] / 2) <= TOL


def test_foreground_disjoint_from_ground_truth() -> None:
    """Foreground I = 0 with P, L > 0: Fscore NaN (0/0) for that class while its Dice is 0."""
    h, w = 20, 30
    gt = torch.zeros(h, w, dtype=torch.uint8)
    gt[:, :10] = 255
    pred = torch.zeros(h, w)
    pred[:, 20:] = 0.9
    got = _assert_matches([pred, pred[:7, :]], [gt, gt[:7, :]])
    background = _background_only([pred, pred[:7, :]], [gt, gt[:7, :]])
    assert abs(got["mfscore"] - background["mfscore"]) <= TOL
    assert abs(got["mdice"] - background["mdice"] / 2) <= TOL


def test_every_class_fscore_undefined_is_nan() -> None:
    """All predicted foreground on all-background ground truth: both Fscores NaN, mDice 0."""
    gts = [torch.zeros(9, 11, dtype=torch.uint8), torch.zeros(4, 4, dtype=torch.uint8)]
    preds = [torch.ones(g.shape) for g in gts]
    got = _assert_matches(preds, gts)
    assert np.isnan(got["mfscore"]) and got["mdice"] == 0 and got["miou"] == 0


def test_empty_dataset_is_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchmetrics: compute before update
        singles = [m.compute() for m in (TwoClassMIoU(), TwoClassMDice(), TwoClassMFscore())]
        overlap = TwoClassOverlap().compute()
        values = SODMetrics().compute()
    assert all(torch.isnan(v) for v in singles)
    assert set(overlap) == set(KEYS) and all(torch.isnan(v) for v in overlap.values())
    assert all(torch.isnan(values[k]) for k in KEYS)
    assert mmseg_eval_metrics([], []) == pytest.approx(dict.fromkeys(KEYS, np.nan), nan_ok=True)


def test_decision_is_at_8bit_128() -> None:
    """127/255 is background, 128/255 foreground (p >= 0.5 of the 8-bit map, unstretched);
    ground truth 128 is background, 129 foreground."""
    gt = torch.tensor([[0, 0, 255, 255, 128, 129]], dtype=torch.uint8)
    as_map = torch.tensor([[127, 128, 127, 128, 0, 0]], dtype=torch.uint8)
    for pred in (as_map, as_map.float() / 255):
        # pred fg {1, 3}; gt fg {2, 3, 5}: fg I=1 P=2 L=3, bg I=2 P=4 L=3
        want = {
            "miou": (1 / 4 + 2 / 5) / 2,
            "mdice": (2 / 5 + 4 / 7) / 2,
            "mfscore": (2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3) + 2 * (2 / 4) * (2 / 3) / (7 / 6))
            / 2,
        }
        got = _assert_matches([pred], [gt])
        for key in KEYS:
            assert abs(got[key] - want[key]) <= TOL, key


def test_single_measures_equal_the_collection() -> None:
    preds, gts = _random_dataset(6, SIZES)
    whole = _ours(preds, gts)
    for key, metric in (
        ("miou", TwoClassMIoU()),
        ("mdice", TwoClassMDice()),
        ("mfscore", TwoClassMFscore()),
    ):
        metric.update(preds, gts)
        assert float(metric.compute()) == whole[key], key
    shared = [m for m in SODMetrics().measures.values() if isinstance(m, TwoClassOverlap)]
    assert len(shared) == 1 and shared[0].confusion.shape == (4,)


def test_keys_and_tables() -> None:
    names = list(METRIC_KEYS)
    assert names[names.index("miou") : names.index("miou") + 3] == list(KEYS)
    assert LABELS["mdice"] == "mDice" and LABELS["mfscore"] == "mFscore"
    assert not {"mdice", "mfscore"} & LOWER_IS_BETTER
    results = {m: {"D": {"mdice": v, "mfscore": v}} for m, v in (("a", 0.9), ("b", 0.8))}
    rows = {line.split(" & ")[0]: line for line in to_latex(results, list(KEYS[1:])).splitlines()}
    assert rows["a"].count(r"\textbf{0.900}") == 2 and rows["b"].count(r"\underline{0.800}") == 2
    assert r"mDice$\uparrow$" in rows["Method"] and r"mFscore$\uparrow$" in rows["Method"]
