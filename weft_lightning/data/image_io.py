"""Images as the fields have them, read to the 8-bit RGB that the models take, every choice
explicit.

TIFF files (GeoTIFF included) are read with tifffile in their own bit depth and with all their
bands; other formats with Pillow. :class:`ImageReading` says which three bands the model sees
(``bands``; one band is repeated, RGB is taken as is) and how values wider than 8 bits become
0..255 (``scaling``): ``dtype`` (the type's full range, 0..65535 for uint16), ``range`` (a given
``value_range``, e.g. a 12-bit sensor's [0, 4095]) or ``percentile`` (per image and band, the
``percentiles`` stretched to 0..255). What the reader has to decide for a dataset (bands
dropped or repeated, alpha ignored, a scaling) is said once, by :func:`reading_note`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image

__all__ = ["ImageReading", "ImageReadingError", "read_raster", "reading_note", "to_rgb8"]

Scaling = Literal["dtype", "range", "percentile"]
_TIFF = (".tif", ".tiff")


class ImageReadingError(ValueError):
    """Images that the reading settings cannot apply to (e.g. a band they do not have)."""


@dataclass(frozen=True)
class ImageReading:
    """How image files become 8-bit RGB.

    Args:
        bands: the 0-based bands shown to the model as R, G, B (e.g. ``[2, 1, 0]``); None takes
            the first three (a single band is repeated).
        scaling: for images wider than 8 bits: ``dtype``, ``range`` or ``percentile``.
        value_range: (low, high) mapped to 0..255 by ``range``.
        percentiles: (low, high) percentiles mapped to 0..255 by ``percentile``.
    """

    bands: tuple[int, ...] | None = None
    scaling: Scaling = "dtype"
    value_range: tuple[float, float] | None = None
    percentiles: tuple[float, float] = (2.0, 98.0)

    def __post_init__(self) -> None:
        if self.bands is not None and (len(self.bands) != 3 or min(self.bands) < 0):
            raise ValueError(
                f"data.image_reading.bands={list(self.bands)} must name three bands (0-based)."
            )
        if self.scaling == "range" and self.value_range is None:
            raise ValueError("data.image_reading.scaling=range needs value_range: [low, high].")
        if self.value_range is not None and not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"data.image_reading.value_range={self.value_range} needs low < high.")


def read_raster(path: Path) -> tuple[np.ndarray, bool]:
    """The pixels of an image file as (H, W, C) in their own type, and whether the last band
    is an alpha channel."""
    if path.suffix.lower() in _TIFF:
        import tifffile

        array = np.asarray(tifffile.imread(path))
        if array.ndim == 3 and array.shape[0] < min(array.shape[1:]) and array.shape[0] <= 16:
            array = np.moveaxis(array, 0, -1)  # planar (bands, H, W)
        if array.ndim == 2:
            array = array[..., None]
        return array, False
    with Image.open(path) as image:
        image.load()
        alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La")
        if image.mode in ("P", "PA"):
            image = image.convert("RGBA" if alpha else "RGB")
        elif image.mode in ("CMYK", "YCbCr", "LAB", "HSV", "1"):
            image = image.convert("RGB")
        array = np.asarray(image)
    if array.ndim == 2:
        array = array[..., None]
    return array, alpha


def _scale(array: np.ndarray, reading: ImageReading) -> np.ndarray:
    """Values of any type on 0..255 (uint8 as they are)."""
    if array.dtype == np.uint8:
        return array
    values = array.astype(np.float64)
    if reading.scaling == "percentile":
        low, high = np.percentile(values, reading.percentiles, axis=(0, 1), keepdims=True)
    elif reading.scaling == "range":
        assert reading.value_range is not None
        low, high = reading.value_range
    elif np.issubdtype(array.dtype, np.integer):
        low, high = 0.0, float(np.iinfo(array.dtype).max)
    else:
        low, high = 0.0, 1.0  # float images in [0, 1]
    spread = np.maximum(np.asarray(high, np.float64) - low, 1e-12)
    return np.clip(np.round((values - low) / spread * 255.0), 0, 255).astype(np.uint8)


def to_rgb8(array: np.ndarray, alpha: bool, reading: ImageReading, path: Path) -> np.ndarray:
    """(H, W, 3) uint8 from a raster of :func:`read_raster`."""
    bands = array.shape[2] - (1 if alpha else 0)
    if reading.bands is not None:
        _check_bands(path, bands, reading.bands)
        chosen = array[..., list(reading.bands)]
    elif bands >= 3:
        chosen = array[..., :3]
    else:
        chosen = np.repeat(array[..., :1], 3, axis=2)
    return np.ascontiguousarray(_scale(chosen, reading))


def _check_bands(path: Path, bands: int, chosen: tuple[int, ...]) -> None:
    if max(chosen) >= bands:
        raise ImageReadingError(
            f"data.image_reading.bands={list(chosen)} names band {max(chosen)}, but {path} has "
            f"{bands} band(s) (0-{bands - 1}); choose three of those."
        )


def reading_note(path: Path, reading: ImageReading) -> str | None:
    """What reading a dataset whose first image is ``path`` decides, in one clause (None when
    it is plain 8-bit RGB); :class:`ImageReadingError` when ``reading.bands`` names a band the
    image does not have."""
    array, alpha = read_raster(path)
    bands = array.shape[2] - (1 if alpha else 0)
    notes = []
    if reading.bands is not None:
        _check_bands(path, bands, reading.bands)
        notes.append(f"bands {list(reading.bands)} of {bands} as RGB")
    elif bands == 1:
        notes.append("1 band repeated as RGB")
    elif bands == 2 or bands > 3:
        notes.append(f"the first 3 of {bands} bands as RGB (set data.image_reading.bands)")
    if alpha:
        notes.append("alpha ignored")
    if array.dtype != np.uint8:
        what = {
            "dtype": f"from the full {array.dtype} range",
            "range": f"from the range {list(reading.value_range or ())}",
            "percentile": f"per image from percentiles {list(reading.percentiles)}",
        }[reading.scaling]
        span = f"[{array.min()}, {array.max()}]"
        notes.append(f"{array.dtype} values (first image {span}) scaled to 8 bits {what}")
    return "; ".join(notes) or None
