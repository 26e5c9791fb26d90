"""Mask decoding: every format users have, read to 8 bits and binarised at > 128."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from weft_lightning.data.masks import MaskDecodeError, binarize, read_mask

KVASIR = Path(__file__).resolve().parent / "data" / "samples" / "Kvasir-SEG"


@pytest.fixture()
def truth() -> np.ndarray:
    """A 0/255 mask with a rectangle and a disc, plus one grey value on each side of 128."""
    mask = np.zeros((40, 48), np.uint8)
    mask[5:20, 6:30] = 255
    yy, xx = np.mgrid[:40, :48]
    mask[(yy - 28) ** 2 + (xx - 34) ** 2 < 50] = 255
    mask[0, 0], mask[0, 1] = 128, 129
    return mask


def test_8bit_grayscale_is_read_as_is(tmp_path: Path, truth: np.ndarray) -> None:
    Image.fromarray(truth, "L").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), truth)


def test_binarize_is_strictly_above_128(truth: np.ndarray) -> None:
    fg = binarize(truth)
    assert fg.dtype == bool
    assert not fg[0, 0] and fg[0, 1]
    assert fg.sum() == (truth > 128).sum()
    with pytest.raises(TypeError, match="uint8"):
        binarize(truth.astype(np.float32))


def test_rgb_mask_is_luminance_like_opencv(tmp_path: Path, truth: np.ndarray) -> None:
    rgb = np.stack([truth, truth // 2, truth], -1)
    rgb[10, 10] = (255, 0, 0)
    Image.fromarray(rgb, "RGB").save(tmp_path / "m.png")
    ours = read_mask(tmp_path / "m.png")
    oracle = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE)
    assert np.abs(ours.astype(int) - oracle).max() <= 1
    np.testing.assert_array_equal(binarize(ours), oracle > 128)


def test_rgba_alpha_is_ignored(tmp_path: Path, truth: np.ndarray) -> None:
    alpha = np.where(truth > 0, 0, 255).astype(np.uint8)
    rgba = np.stack([truth, truth, truth, alpha], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), truth)
    la = np.stack([truth, alpha], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "la.png"), truth)


def test_grey_palette_reads_through_the_palette(tmp_path: Path, truth: np.ndarray) -> None:
    index = (truth > 128).astype(np.uint8)
    image = Image.fromarray(index, "L").convert("P")
    image.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    image.putdata(index.ravel().tolist())
    image.save(tmp_path / "m.png")
    assert Image.open(tmp_path / "m.png").mode == "P"
    ours = read_mask(tmp_path / "m.png")
    np.testing.assert_array_equal(ours, np.where(truth > 128, 255, 0))
    oracle = cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_GRAYSCALE)
    np.testing.assert_array_equal(ours, oracle)


def test_coloured_palette_is_a_class_index_mask(tmp_path: Path, truth: np.ndarray) -> None:
    """VOC-style palette (index 1 = dark red) must not read as background."""
    index = (truth > 128).astype(np.uint8)
    image = Image.new("P", (index.shape[1], index.shape[0]))
    image.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
    image.putdata(index.ravel().tolist())
    image.save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png"), np.where(truth > 128, 255, 0))


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_a_16bit_file_holding_an_8bit_mask_keeps_its_meaning(
    tmp_path: Path, truth: np.ndarray, suffix: str
) -> None:
    """0/255 saved in a 16-bit file scores like its 8-bit copy (its high byte is all zero)."""
    path = tmp_path / f"m{suffix}"
    cv2.imwrite(str(path), truth.astype(np.uint16))
    assert Image.open(path).mode.startswith("I")
    np.testing.assert_array_equal(read_mask(path), truth)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16bit_masks_keep_their_high_byte(tmp_path: Path, truth: np.ndarray, suffix: str) -> None:
    wide = truth.astype(np.uint16) * 257
    wide[0, 2] = 33023  # high byte 128: background
    wide[0, 3] = 33024  # high byte 129: foreground
    path = tmp_path / f"m{suffix}"
    cv2.imwrite(str(path), wide)
    assert Image.open(path).mode.startswith("I")
    ours = read_mask(path)
    assert ours.dtype == np.uint8
    np.testing.assert_array_equal(ours, (wide >> 8).astype(np.uint8))
    assert not binarize(ours)[0, 2] and binarize(ours)[0, 3]
    if suffix == ".png":
        oracle = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        np.testing.assert_array_equal(ours, oracle)


def test_float_tiff_in_unit_range_is_scaled(tmp_path: Path, truth: np.ndarray) -> None:
    Image.fromarray(truth.astype(np.float32) / 255, "F").save(tmp_path / "m.tif")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.tif"), truth)


def test_one_bit_mask(tmp_path: Path, truth: np.ndarray) -> None:
    Image.fromarray(truth > 128).save(tmp_path / "m.png")
    np.testing.assert_array_equal(binarize(read_mask(tmp_path / "m.png")), truth > 128)


def test_jpeg_artefacts_binarise_cleanly(tmp_path: Path, truth: np.ndarray) -> None:
    clean = np.where(truth > 128, 255, 0).astype(np.uint8)
    Image.fromarray(np.stack([clean] * 3, -1)).save(tmp_path / "m.jpg", quality=70)
    decoded = read_mask(tmp_path / "m.jpg")
    assert len(np.unique(decoded)) > 2  # artefacts are there
    assert (binarize(decoded) != (clean > 0)).mean() < 0.01


def test_kvasir_jpeg_masks_binarise_to_clean_masks(tmp_path: Path) -> None:
    masks = sorted((KVASIR / "masks").glob("*.jpg"))
    assert len(masks) == 8
    for original in masks[:8]:
        path = Path(shutil.copy(original, tmp_path))
        assert Image.open(path).mode == "RGB"
        decoded = read_mask(path)
        fg = binarize(decoded)
        assert len(np.unique(decoded)) > 2, path.name  # artefacts present
        assert 0.005 < fg.mean() < 0.9, path.name
        np.testing.assert_array_equal(fg, cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 128)
        # the binary mask is clean: almost no isolated foreground speckles
        speckles = fg & ~cv2.erode(fg.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        assert speckles.sum() < 0.2 * fg.sum(), path.name


def test_errors_name_the_file(tmp_path: Path, truth: np.ndarray) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not a mask\n")
    Image.fromarray(truth).save(tmp_path / "whole.png")
    data = (tmp_path / "whole.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    cases = {"empty.png": "empty", "text.png": "not an image", "cut.png": "truncated"}
    for name, reason in cases.items():
        with pytest.raises(MaskDecodeError, match=reason) as info:
            read_mask(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)
    with pytest.raises(MaskDecodeError, match="does not exist"):
        read_mask(tmp_path / "missing.png")
