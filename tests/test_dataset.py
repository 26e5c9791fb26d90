"""PairedFolderDataset: pairing by stem, mask decoding, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weft_lightning.data.dataset import PairedFolderDataset, pair_files


def _write_pair(root: Path, stem: str, image_ext: str, mask: Image.Image, mask_ext: str) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(np.full((mask.height, mask.width, 3), 90, np.uint8))
    image.save(root / "images" / f"{stem}{image_ext}")
    mask.save(root / "masks" / f"{stem}{mask_ext}")


def _square(mode: str, size: int = 32) -> Image.Image:
    array = np.zeros((size, size), np.uint8)
    array[8:24, 8:24] = 255
    gray = Image.fromarray(array)
    return gray if mode == "L" else gray.convert(mode)


def test_pairs_by_stem_across_extensions(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a", ".jpg", _square("L"), ".png")
    _write_pair(tmp_path, "b", ".png", _square("L"), ".bmp")
    _write_pair(tmp_path, "c", ".tif", _square("L"), ".png")
    pairs = pair_files(tmp_path / "images", tmp_path / "masks")
    assert [(p.image.name, p.mask.name) for p in pairs] == [
        ("a.jpg", "a.png"),
        ("b.png", "b.bmp"),
        ("c.tif", "c.png"),
    ]


def test_missing_mask_names_the_image(tmp_path: Path) -> None:
    _write_pair(tmp_path, "a", ".jpg", _square("L"), ".png")
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "lonely.jpg")
    with pytest.raises(FileNotFoundError, match=r"lonely\.jpg"):
        pair_files(tmp_path / "images", tmp_path / "masks")


@pytest.mark.parametrize(
    "mode,ext", [("L", ".png"), ("RGB", ".png"), ("RGBA", ".png"), ("RGB", ".jpg")]
)
def test_masks_are_binarised_above_128(tmp_path: Path, mode: str, ext: str) -> None:
    _write_pair(tmp_path, "x", ".jpg", _square(mode), ext)
    dataset = PairedFolderDataset(tmp_path / "images", tmp_path / "masks", keep_original=True)
    item = dataset[0]
    mask = PairedFolderDataset(tmp_path / "images", tmp_path / "masks")[0]["mask"][0].numpy()
    assert set(np.unique(mask)) <= {0, 1}
    assert mask[16, 16] == 1 and mask[0, 0] == 0
    assert mask.sum() == pytest.approx(16 * 16, abs=20)  # JPEG edges may move a few pixels
    assert item["size"] == (32, 32) and item["name"] == "x"
    assert set(np.unique(item["gt"])) <= {0, 255}


def test_undecodable_image_is_named(tmp_path: Path) -> None:
    _write_pair(tmp_path, "bad", ".jpg", _square("L"), ".png")
    (tmp_path / "images" / "bad.jpg").write_bytes(b"not an image")
    dataset = PairedFolderDataset(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(OSError, match=r"bad\.jpg"):
        dataset[0]
