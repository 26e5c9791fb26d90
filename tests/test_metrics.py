"""The torchmetrics measures against pysodmetrics (the field's reference) and golden values."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from metric_reference import Pair, assert_close, noisy_prediction, reference_values
from PIL import Image
from scipy import ndimage

from weft_lightning.metrics import (
    METRIC_KEYS,
    EMeasure,
    FMeasure,
    ForegroundDice,
    ForegroundIoU,
    MeanAbsoluteError,
    SMeasure,
    SODMetrics,
    TwoClassMDice,
    TwoClassMFscore,
    TwoClassMIoU,
    WeightedFMeasure,
    prepare_maps,
    quantize,
)
from weft_lightning.metrics.distance import nearest_foreground, squared_distance


def ours(pairs: list[Pair], as_probs: bool = False) -> dict[str, float]:
    """SODMetrics on a list of per-image tensors (uint8 maps or float probabilities)."""
    metric = SODMetrics()
    preds = [torch.from_numpy(p) for p, _ in pairs]
    if as_probs:
        preds = [p.float() / 255 for p in preds]
    metric.update(preds, [torch.from_numpy(g) for _, g in pairs])
    return {k: float(v) for k, v in metric.compute().items()}


def random_pairs(count: int, seed: int) -> list[Pair]:
    rng = np.random.default_rng(seed)
    pairs = []
    for i in range(count):
        h, w = (int(v) for v in rng.integers(9, 140, 2))
        field = ndimage.gaussian_filter(rng.random((h, w)), rng.uniform(1, 6))
        gt = (field > np.quantile(field, rng.uniform(0.5, 0.95))).astype(np.uint8) * 255
        if i % 3 == 2:  # 8-bit masks with anti-aliased borders
            gt = np.clip(ndimage.gaussian_filter(gt.astype(float), 1), 0, 255).astype(np.uint8)
        pred = (
            rng.integers(0, 256, (h, w), dtype=np.uint8)
            if i % 4 == 3
            else noisy_prediction(gt, rng)
        )
        pairs.append((pred, gt))
    return pairs


def read_l(path: Path) -> np.ndarray:
    return np.array(Image.open(path).convert("L"))


@pytest.fixture(scope="module")
def real_pairs(real_data: Path) -> list[Pair]:
    """Real masks (EORSSD incl. all-background and RGB masks, CAMO, ECSSD, Kvasir JPEG)."""
    rng = np.random.default_rng(7)
    paths = sorted((real_data / "EORSSD" / "test" / "masks").iterdir())[:6]
    for name in ("CAMO", "ECSSD", "Kvasir-SEG"):
        paths += sorted((real_data / "samples" / name / "masks").iterdir())[:3]
    pairs = []
    for path in paths:
        gt = read_l(path)
        scale = 256 / max(gt.shape)
        if scale < 1:  # keep the test fast: nearest-neighbour downscale of big masks
            rows = (np.arange(int(gt.shape[0] * scale)) / scale).astype(int)
            cols = (np.arange(int(gt.shape[1] * scale)) / scale).astype(int)
            gt = np.ascontiguousarray(gt[rows][:, cols])
        pairs.append((noisy_prediction(gt, rng), gt))
    empty = next(
        p
        for p in (real_data / "EORSSD" / "test" / "masks").iterdir()
        if not (read_l(p) > 128).any()
    )
    gt = read_l(empty)[:200, :200]
    pairs.append((noisy_prediction(gt, rng), np.ascontiguousarray(gt)))
    return pairs


# ----------------------------------------------------------------------------- tests
def test_golden_values(real_data: Path) -> None:
    folder = real_data / "pysodmetrics_golden"
    expected = json.loads((folder / "expected.json").read_text())
    pairs = [(read_l(folder / "preds" / p.name), read_l(p)) for p in sorted(folder.glob("masks/*"))]
    for as_probs in (False, True):
        got = ours(pairs, as_probs=as_probs)
        for key, value in expected.items():
            if key in got:
                assert abs(got[key] - value) <= 1e-9, (key, got[key], value)


def test_random_maps_match_pysodmetrics() -> None:
    pairs = random_pairs(16, seed=0)
    assert_close(ours(pairs), reference_values(pairs), 1e-9)


def test_real_masks_match_pysodmetrics(real_pairs: list[Pair]) -> None:
    assert_close(ours(real_pairs), reference_values(real_pairs), 1e-9)


def _edge_cases() -> dict[str, list[Pair]]:
    rng = np.random.default_rng(3)
    h, w = 31, 47
    blob = np.zeros((h, w), np.uint8)
    blob[5:20, 8:30] = 255
    dot, corner = np.zeros((h, w), np.uint8), np.zeros((h, w), np.uint8)
    dot[13, 21] = 255
    corner[-1, -1] = 255
    noise = rng.integers(0, 256, (h, w), dtype=np.uint8)
    return {
        "all_background": [
            (noise, np.zeros((h, w), np.uint8)),
            (noisy_prediction(blob, rng), blob),
        ],
        "all_foreground": [(noise, np.full((h, w), 255, np.uint8))],
        "constant_prediction": [(np.full((h, w), c, np.uint8), blob) for c in (0, 77, 128, 255)],
        "constant_on_empty": [(np.full((h, w), 77, np.uint8), np.zeros((h, w), np.uint8))],
        "zero_prediction": [(np.zeros((h, w), np.uint8), blob)],
        "one_pixel_object": [(noise, dot), (noisy_prediction(dot, rng, 1), dot)],
        "object_in_last_corner": [(noise, corner)],  # the reference gives NaN S-measure
        "odd_sizes": [
            (rng.integers(0, 256, s, dtype=np.uint8), blob[: s[0], : s[1]].copy())
            for s in ((1, 1), (1, 9), (7, 1), (3, 5), (17, 29))
        ],
        "two_levels": [(np.where(blob > 0, 200, 40).astype(np.uint8), blob)],
        # 2 * mean(p) lands exactly on a level (0.2): the adaptive threshold's tie
        "threshold_tie": [
            (
                np.repeat([255] * 8 + [51] * 10 + [0] * 82, 3).reshape(20, 15).astype(np.uint8),
                np.repeat([255] * 30 + [0] * 70, 3).reshape(20, 15).astype(np.uint8),
            )
        ],
    }


@pytest.mark.parametrize("case", sorted(_edge_cases()))
def test_edge_cases_match_pysodmetrics(case: str) -> None:
    pairs = _edge_cases()[case]
    assert_close(ours(pairs), reference_values(pairs), 1e-9)


def test_nan_of_reference_is_reproduced() -> None:
    assert np.isnan(ours(_edge_cases()["object_in_last_corner"])["sm"])


def test_mixed_sizes_across_updates() -> None:
    pairs = random_pairs(9, seed=5) + _edge_cases()["odd_sizes"]
    metric = SODMetrics()
    for start in range(0, len(pairs), 4):
        chunk = pairs[start : start + 4]
        metric.update(
            [torch.from_numpy(p) for p, _ in chunk], [torch.from_numpy(g) for _, g in chunk]
        )
    got = {k: float(v) for k, v in metric.compute().items()}
    assert_close(got, reference_values(pairs), 1e-9)


def test_batched_tensors_equal_lists() -> None:
    rng = np.random.default_rng(11)
    probs = torch.rand(4, 1, 24, 36, generator=torch.Generator().manual_seed(0))
    masks = torch.from_numpy(rng.random((4, 1, 24, 36)) > 0.7)
    batched, listed = SODMetrics(), SODMetrics()
    batched.update(probs, masks)
    listed.update(list(probs[:, 0]), list(masks[:, 0]))
    a, b = batched.compute(), listed.compute()
    assert all(torch.equal(a[k], b[k]) for k in METRIC_KEYS)
    # float {0,1} and uint8 0/255 targets mean the same masks
    as_float, as_u8 = SODMetrics(), SODMetrics()
    as_float.update(probs, masks.float())
    as_u8.update(probs, masks.to(torch.uint8) * 255)
    assert all(torch.equal(as_float.compute()[k], as_u8.compute()[k]) for k in METRIC_KEYS)


def test_single_measures_and_curves_match_reference() -> None:
    pairs = random_pairs(6, seed=2)
    want = reference_values(pairs, curves=True)
    preds, masks = [torch.from_numpy(p) for p, _ in pairs], [torch.from_numpy(g) for _, g in pairs]
    scalar = {
        "mae": MeanAbsoluteError(),
        "sm": SMeasure(),
        "wfm": WeightedFMeasure(),
        "iou": ForegroundIoU(),
        "dice": ForegroundDice(),
        "miou": TwoClassMIoU(),
        "mdice": TwoClassMDice(),
        "mfscore": TwoClassMFscore(),
    }
    for key, metric in scalar.items():
        metric.update(preds, masks)
        assert abs(float(metric.compute()) - want[key]) <= 1e-9, key
    em, fm = EMeasure(), FMeasure()
    em.update(preds, masks)
    fm.update(preds, masks)
    for key, value in {**em.compute(), **fm.compute()}.items():
        np.testing.assert_allclose(value.numpy(), want[key], rtol=0, atol=1e-12, err_msg=key)
    whole = SODMetrics()
    whole.update(preds, masks)
    for key, curve in whole.curves().items():
        np.testing.assert_allclose(curve.numpy(), want[key], rtol=0, atol=1e-12, err_msg=key)


def test_probabilities_are_scored_as_their_saved_8bit_map() -> None:
    ties = (torch.arange(256, dtype=torch.float32) + 0.5) / 255  # every rounding tie
    probs = torch.cat([ties, torch.rand(500, generator=torch.Generator().manual_seed(1))])
    probs = probs.clamp(0, 1).reshape(1, 28, 27)
    (batch,) = prepare_maps(probs, torch.zeros_like(probs, dtype=torch.bool))
    assert np.array_equal(batch.maps, quantize(probs).numpy())
    expected = np.clip(np.rint(probs.numpy().astype(np.float32) * np.float32(255)), 0, 255)
    assert np.array_equal(batch.maps, expected.astype(np.uint8))


def test_state_is_fixed_size_float64() -> None:
    metric = SODMetrics()
    metric.update(torch.rand(2, 64, 64), torch.rand(2, 64, 64) > 0.5)
    for measure in metric.measures.values():
        for name in measure._defaults:
            state = getattr(measure, name)
            assert state.dtype == torch.float64 and state.numel() <= 256, name
    metric = metric.to(torch.bfloat16)  # what a "bf16-true" trainer does to the module
    assert all(
        s.dtype == torch.float64 for m in metric.measures.values() for s in m.metric_state.values()
    )
    metric.reset()
    assert float(metric.measures["sm"].count) == 0


@pytest.mark.parametrize(
    ("preds", "target", "message"),
    [
        (torch.full((1, 4, 4), 1.5), torch.zeros(1, 4, 4), "in \\[0, 1\\]"),
        (torch.full((1, 4, 4), float("nan")), torch.zeros(1, 4, 4), "in \\[0, 1\\]"),
        (torch.rand(1, 4, 4), torch.zeros(1, 4, 5), "differs from target shape"),
        (torch.rand(1, 4, 4), torch.full((1, 4, 4), 0.5), "only 0 and 1"),
        (torch.rand(2, 3, 4, 4), torch.zeros(2, 3, 4, 4), "shaped"),
        ([torch.rand(4, 4)], [torch.zeros(4, 4), torch.zeros(4, 4)], "1 predictions but 2"),
        (torch.rand(1, 0, 4), torch.zeros(1, 0, 4), "empty image"),
    ],
)
def test_bad_inputs_raise_clear_errors(preds: object, target: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SODMetrics().update(preds, target)


def test_distance_transform_and_tie_rule_match_scipy() -> None:
    rng = np.random.default_rng(4)
    for trial in range(30):
        h, w = (int(v) for v in rng.integers(5, 70, 2))
        mask = rng.random((h, w)) < (0.02, 0.15, 0.5)[trial % 3]
        mask[rng.integers(h), rng.integers(w)] = True
        dist, (rows, cols) = ndimage.distance_transform_edt(~mask, return_indices=True)
        sq = squared_distance(mask)
        assert np.array_equal(sq, np.rint(dist**2))
        band_r, band_c = np.nonzero((sq > 0) & (sq <= 18))
        near_r, near_c = nearest_foreground(mask, band_r, band_c, sq[band_r, band_c])
        assert np.array_equal(near_r, rows[band_r, band_c])
        assert np.array_equal(near_c, cols[band_r, band_c])


def test_large_images_use_the_scipy_path_exactly() -> None:
    mask = np.zeros((1500, 1400), bool)
    mask[[3, 1200, 1499], [5, 700, 1399]] = True
    assert np.array_equal(
        squared_distance(mask), np.rint(ndimage.distance_transform_edt(~mask) ** 2)
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_inputs_and_states_match_cpu() -> None:
    pairs = random_pairs(5, seed=9)
    probs = [torch.from_numpy(p).float().div(255) for p, _ in pairs]
    masks = [torch.from_numpy(g) for _, g in pairs]
    cpu, gpu = SODMetrics(), SODMetrics().cuda()
    cpu.update(probs, masks)
    gpu.update([p.cuda() for p in probs], [m.cuda() for m in masks])
    a, b = cpu.compute(), gpu.compute()
    assert all(b[k].device.type == "cuda" and float(a[k]) == float(b[k]) for k in METRIC_KEYS)
