"""The paper's training pipeline against mmseg's rules, on fixed seeds."""

from __future__ import annotations

import random

import albumentations as A
import cv2
import numpy as np
import pytest

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.data.augment import (
    CatMaxRatioCrop,
    KeepRatioRescale,
    PhotoMetricDistortion,
    keep_ratio_size,
)
from weft_lightning.data.catalog import DOMAINS
from weft_lightning.data.transforms import Augmentation, train_transform


def seeded(transform: A.BasicTransform, seed: int) -> A.Compose:
    compose = A.Compose([transform])
    compose.set_random_seed(seed)
    return compose


def mmcv_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """mmcv.rescale_size restated: the factor that fits the long and short sides, rounded."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


@pytest.mark.parametrize(
    ("shape", "scale", "expected"),
    [
        ((600, 800), (2048, 512), (512, 683)),
        ((600, 800), (3072, 768), (768, 1024)),
        ((800, 600), (2048, 512), (683, 512)),
        ((144, 180), (1024, 256), (256, 320)),
        ((1241, 2146), (2048, 512), (512, 885)),
        ((100, 3000), (2048, 512), (68, 2048)),  # the long side limits the factor
    ],
)
def test_keep_ratio_sizes(shape, scale, expected) -> None:
    assert keep_ratio_size(*shape, scale) == expected == mmcv_size(*shape, scale)


def test_rescale_draws_ratios_in_range_and_keeps_mask_values() -> None:
    image = np.random.default_rng(0).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    mask = np.zeros((60, 80), np.uint8)
    mask[10:30, 10:50], mask[50:, :] = 1, IGNORE_INDEX
    ratios = []
    for seed in range(60):
        transform = KeepRatioRescale(img_scale=(200, 50), ratio_range=(0.5, 2.0))
        compose = seeded(transform, seed)
        out = compose(image=image, mask=mask)
        draw = random.Random(seed).random() * 1.5 + 0.5  # mmseg: random_sample * span + low
        ratios.append(draw)
        size = mmcv_size(60, 80, (int(200 * draw), int(50 * draw)))
        assert out["image"].shape[:2] == out["mask"].shape == size
        assert set(np.unique(out["mask"])) <= {0, 1, IGNORE_INDEX}
    assert 0.5 <= min(ratios) < 0.8 and 1.7 < max(ratios) < 2.0


def crop_box(mask: np.ndarray, seed: int, **options) -> tuple[int, int, int, int]:
    crop = CatMaxRatioCrop(**options)
    crop.set_random_seed(seed)
    params = crop.get_params_dependent_on_data({"shape": mask.shape}, {"mask": mask})
    return params["crop_coords"]


def restated_box(mask: np.ndarray, seed: int, size: int, ratio: float) -> tuple:
    """mmseg's RandomCrop loop, drawing offsets from the same generator."""
    rng = random.Random(seed)
    height, width = mask.shape

    def draw():
        top = rng.randint(0, max(height - size, 0))
        left = rng.randint(0, max(width - size, 0))
        return left, top, min(left + size, width), min(top + size, height)

    box = draw()
    for _ in range(10):
        x0, y0, x1, y1 = box
        labels, counts = np.unique(mask[y0:y1, x0:x1], return_counts=True)
        counts = counts[labels != IGNORE_INDEX]
        if len(counts) > 1 and counts.max() / counts.sum() < ratio:
            break
        box = draw()
    return box


def test_crop_retry_rule_matches_mmseg() -> None:
    mask = np.zeros((200, 300), np.uint8)
    mask[150:190, 250:290] = 1  # a small object: most crops are one class
    for seed in range(30):
        got = crop_box(mask, seed, height=64, width=64, cat_max_ratio=0.75)
        assert got == restated_box(mask, seed, 64, 0.75)


def test_crop_keeps_a_box_that_satisfies_the_rule_when_there_is_one() -> None:
    mask = np.zeros((100, 100), np.uint8)
    mask[:, 50:] = 1  # half and half: almost every box mixes both classes
    for seed in range(20):
        x0, y0, x1, y1 = crop_box(mask, seed, height=40, width=40, cat_max_ratio=0.75)
        share = mask[y0:y1, x0:x1].mean()
        assert 0.25 < share < 0.75 or share in (0.0, 1.0)


def test_crop_of_a_single_class_mask_takes_the_eleventh_box() -> None:
    mask = np.zeros((120, 120), np.uint8)
    seed = 5
    rng = random.Random(seed)
    boxes = [(rng.randint(0, 80), rng.randint(0, 80)) for _ in range(11)]
    x0, y0, _, _ = crop_box(mask, seed, height=40, width=40, cat_max_ratio=0.75)
    assert (y0, x0) == boxes[-1]


def test_crop_ignores_ignored_pixels_and_clips_small_images() -> None:
    mask = np.full((50, 50), IGNORE_INDEX, np.uint8)
    mask[:, :25] = 0
    mask[0, 0] = 1  # only background and one foreground pixel besides ignore
    crop = CatMaxRatioCrop(height=64, width=64, cat_max_ratio=0.75)
    assert not crop.accepts(mask, (0, 0, 50, 50))  # ignore is no class: bg dominates
    image = np.zeros((50, 50, 3), np.uint8)
    out = seeded(CatMaxRatioCrop(height=64, width=64), 0)(image=image, mask=mask)
    assert out["image"].shape[:2] == out["mask"].shape == (50, 50)


def photometric_params(seed: int) -> dict:
    transform = PhotoMetricDistortion()
    transform.set_random_seed(seed)
    return transform.get_params()


def test_photometric_ranges_and_probabilities() -> None:
    params = [photometric_params(seed) for seed in range(400)]
    for key, low, high in (
        ("brightness", -32, 32),
        ("contrast", 0.5, 1.5),
        ("saturation", 0.5, 1.5),
        ("hue", -18, 17),
    ):
        drawn = [p[key] for p in params if p[key] is not None]
        assert low <= min(drawn) and max(drawn) <= high
        assert 0.35 < len(drawn) / len(params) < 0.65  # each step in about half the cases
    hues = {p["hue"] for p in params if p["hue"] is not None}
    assert hues <= set(range(-18, 18)) and all(isinstance(h, int) for h in hues)
    assert 0.35 < np.mean([p["mode"] for p in params]) < 0.65


def mmseg_photometric(image: np.ndarray, p: dict) -> np.ndarray:
    """mmseg's order restated with the drawn values."""

    def convert(x, alpha=1.0, beta=0.0):
        return np.clip(x.astype(np.float32) * alpha + beta, 0, 255).astype(np.uint8)

    out = image.copy()
    if p["brightness"] is not None:
        out = convert(out, beta=p["brightness"])
    if p["mode"] == 1 and p["contrast"] is not None:
        out = convert(out, alpha=p["contrast"])
    if p["saturation"] is not None:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 1] = convert(hsv[..., 1], alpha=p["saturation"])
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if p["hue"] is not None:
        hsv = cv2.cvtColor(out, cv2.COLOR_RGB2HSV)
        hsv[..., 0] = (hsv[..., 0].astype(int) + p["hue"]) % 180
        out = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    if p["mode"] == 0 and p["contrast"] is not None:
        out = convert(out, alpha=p["contrast"])
    return out


def test_photometric_order_matches_mmseg() -> None:
    image = np.random.default_rng(1).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    transform = PhotoMetricDistortion()
    seen_modes = set()
    for seed in range(40):
        p = photometric_params(seed)
        out = transform.apply(image, **p)
        assert out.dtype == np.uint8 and out.shape == image.shape
        np.testing.assert_array_equal(out, mmseg_photometric(image, p))
        if p["contrast"] is not None and p["brightness"] is not None:
            seen_modes.add(p["mode"])
    assert seen_modes == {0, 1}  # contrast both before and after the colour steps
    forced = {"brightness": 40.0, "mode": 0, "contrast": 0.5, "saturation": None, "hue": 9}
    swapped = {**forced, "mode": 1}
    assert not np.array_equal(transform.apply(image, **forced), transform.apply(image, **swapped))
    with pytest.raises(TypeError, match="8-bit"):
        transform.apply(image.astype(np.float32), **forced)


def test_paper_pipeline_pads_masks_as_ignore() -> None:
    recipe = DOMAINS["orsi"].recipe("paper")
    assert recipe.augmentation.rescale == "keep_ratio" and recipe.normalization == "per_split"
    transform = train_transform(recipe.augmentation, (0.3, 0.3, 0.3), (0.2, 0.2, 0.2))
    image = np.full((100, 140, 3), 128, np.uint8)
    mask = np.zeros((100, 140), np.uint8)
    mask[20:60, 30:90] = 1
    padded = 0
    for seed in range(8):
        transform.set_random_seed(seed)
        out = transform(image=image, mask=mask)
        crop_mask = out["mask"].numpy()
        assert out["image"].shape == (3, 512, 512) and crop_mask.shape == (512, 512)
        ignored = crop_mask == IGNORE_INDEX
        padded += int(ignored.any())
        rows, cols = np.nonzero(~ignored)
        # mmseg pads at the bottom and right: the valid part is a top-left rectangle
        assert rows.min() == 0 and cols.min() == 0
        assert not ignored[: rows.max() + 1, : cols.max() + 1].any()
        assert (out["image"][:, ignored] == 0).all()  # the image is padded with 0 after Normalize
    assert padded > 0  # ratios below 1 rescale 100 x 140 to a short side under 512


def test_project_recipe_keeps_its_choices() -> None:
    project = DOMAINS["orsi"].recipe("project").augmentation
    assert (project.vertical_flip, project.rotate90, project.color_jitter) == (True, True, 0.2)
    assert not project.photometric and project.rescale == "short_side"
    with pytest.raises(ValueError, match="recipe='paper' is not defined for the cod domain"):
        DOMAINS["cod"].recipe("paper")
    with pytest.raises(ValueError, match="crop_size=500"):
        Augmentation(crop_size=500)
