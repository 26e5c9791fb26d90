"""PairedFolderDataset: pairing by stem, mask decoding, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weft_lightning.data.catalog import LayoutError
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
    with pytest.raises(LayoutError, match=r"lonely\.jpg"):
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


def _multiband_copies(root: Path, count: int = 3) -> tuple[Path, Path, Path]:
    """The same scenes as 8-bit RGB PNGs and as 4-band uint16 GeoTIFF-style planar TIFFs."""
    import tifffile

    rgb, tif, masks = root / "rgb", root / "tif", root / "masks"
    for folder in (rgb, tif, masks):
        folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        image = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
        Image.fromarray(image).save(rgb / f"s{i}.png")
        wide = image.astype(np.uint16) * 257  # the same values on the 16-bit scale
        nir = rng.integers(0, 65536, (24, 32, 1), dtype=np.uint16)
        planar = np.moveaxis(np.concatenate([wide, nir], axis=2), -1, 0)
        tifffile.imwrite(tif / f"s{i}.tif", planar, photometric="minisblack")
        Image.fromarray((image[..., 0] > 128).astype(np.uint8) * 255).save(masks / f"s{i}.png")
    return rgb, tif, masks


def test_a_4band_uint16_tiff_reads_like_its_8bit_copy_when_bands_and_scaling_are_given(
    tmp_path: Path,
) -> None:
    from weft_lightning.data.image_io import ImageReading
    from weft_lightning.data.transforms import eval_transform

    rgb, tif, masks = _multiband_copies(tmp_path)
    transform = eval_transform((0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    plain = PairedFolderDataset(rgb, masks, transform, keep_original=True)
    reading = ImageReading(bands=(0, 1, 2), scaling="range", value_range=(0, 65535))
    with pytest.warns(UserWarning, match=r"bands \[0, 1, 2\] of 4 as RGB; uint16 values") as notes:
        wide = PairedFolderDataset(tif, masks, transform, keep_original=True, reading=reading)
        items = [wide[i] for i in range(len(wide))]
    assert len([n for n in notes if "Dataset" in str(n.message)]) == 1  # once, not per image
    for i, item in enumerate(items):
        np.testing.assert_array_equal(item["image"].numpy(), plain[i]["image"].numpy())
        np.testing.assert_array_equal(item["gt"], plain[i]["gt"])


def test_an_unset_band_choice_is_said_once_and_a_missing_band_is_an_error(tmp_path: Path) -> None:
    from weft_lightning.data.image_io import ImageReading, ImageReadingError

    _, tif, masks = _multiband_copies(tmp_path)
    with pytest.warns(UserWarning, match="the first 3 of 4 bands as RGB"):
        PairedFolderDataset(tif, masks)
    with pytest.raises(ImageReadingError, match=r"names band 7, but .*s0\.tif has 4 band\(s\)"):
        PairedFolderDataset(tif, masks, reading=ImageReading(bands=(0, 1, 7)))
