"""Ground-truth masks as users have them, decoded to the field's 8-bit convention.

Every benchmark toolbox reads a mask as 8-bit grayscale and calls a pixel foreground when it is
strictly above 128. This module turns the formats found in the wild into that 8-bit map:

- 8-bit ``L`` (and 1-bit) masks as they are;
- RGB / RGBA / LA masks by their luminance (ITU-R 601 weights); alpha is ignored;
- palette PNGs through their palette when the palette is grey, as OpenCV would read them; a
  coloured palette is a class-index mask, so index 0 is background and any other index is 255;
- 16-bit PNG/TIFF on the 8-bit scale of their own range: values up to 255 (an 8-bit mask saved
  in a 16-bit file, e.g. 0/255) as they are, wider ranges by their high byte (``v >> 8``, as
  libpng and OpenCV reduce them to 8 bits, so 0/65535 is 0/255);
- float TIFFs in [0, 1] scaled by 255, other float ranges clipped to [0, 255];
- JPEG masks with compression artefacts as decoded: the > 128 threshold cleans them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["FOREGROUND_THRESHOLD", "MaskDecodeError", "binarize", "mask_to_u8", "read_mask"]

FOREGROUND_THRESHOLD = 128
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")


class MaskDecodeError(OSError):
    """A mask file that cannot be read as a segmentation mask."""


def _palette_to_u8(mask: Image.Image) -> np.ndarray:
    """Grey palettes map through their colours; coloured palettes are class indices (0 = bg)."""
    index = np.asarray(mask)
    colours = np.asarray(mask.getpalette() or [], dtype=np.uint8).reshape(-1, 3)
    used = np.unique(index)
    used = used[used < len(colours)]
    grey = colours[used]
    if len(grey) and (grey == grey[:, :1]).all():
        return np.asarray(mask.convert("L"))
    return np.where(index > 0, 255, 0).astype(np.uint8)


def _integer_to_u8(values: np.ndarray) -> np.ndarray:
    """Values up to 255 as they are (an 8-bit mask in a 16- or 32-bit file keeps its meaning);
    wider ranges by their 16-bit high byte."""
    if values.max(initial=0) > 255:
        return (np.clip(values, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
    return np.clip(values, 0, 255).astype(np.uint8)


def _float_to_u8(values: np.ndarray) -> np.ndarray:
    """Float masks in [0, 1] scale by 255; other ranges are taken as 8-bit values."""
    values = np.nan_to_num(values.astype(np.float64))
    if values.min(initial=0) >= 0 and values.max(initial=0) <= 1:
        values = values * 255
    return np.clip(np.round(values), 0, 255).astype(np.uint8)


def mask_to_u8(mask: Image.Image) -> np.ndarray:
    """Convert a decoded PIL mask of any mode to 8-bit grayscale (H, W) uint8."""
    mode = mask.mode
    if mode == "L":
        return np.asarray(mask)
    if mode == "P" or mode == "PA":
        return _palette_to_u8(mask.convert("P") if mode == "PA" else mask)
    if mode in _SIXTEEN_BIT or mode == "I":
        return _integer_to_u8(np.asarray(mask, dtype=np.int64))
    if mode == "F":
        return _float_to_u8(np.asarray(mask))
    if mode in ("LA", "La"):
        return np.asarray(mask.getchannel("L"))
    if mode in ("RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"):
        mask = mask.convert("RGB")
    return np.asarray(mask.convert("L"))


def read_mask(path: str | Path) -> np.ndarray:
    """Decode the mask file at path to 8-bit grayscale (H, W) uint8.

    Raises MaskDecodeError naming the file when it is missing, empty, not an image, truncated
    or of a layout that is not a single mask.
    """
    path = Path(path)
    try:
        with Image.open(path) as mask:
            mask.load()
            if getattr(mask, "n_frames", 1) > 1:
                raise MaskDecodeError(
                    f"Mask {path} holds {mask.n_frames} frames; save one mask per file."
                )
            return mask_to_u8(mask)
    except MaskDecodeError:
        raise
    except FileNotFoundError as error:
        raise MaskDecodeError(f"Mask {path} does not exist.") from error
    except UnidentifiedImageError as error:
        size = path.stat().st_size if path.exists() else 0
        what = "is empty (0 bytes)" if size == 0 else "is not an image file PIL can read"
        raise MaskDecodeError(f"Mask {path} {what}; replace it with a PNG mask.") from error
    except (OSError, ValueError, SyntaxError) as error:
        raise MaskDecodeError(
            f"Cannot decode mask {path} ({error}); the file may be truncated or corrupt. "
            "Replace it with an intact PNG mask."
        ) from error


def binarize(mask_u8: np.ndarray) -> np.ndarray:
    """Foreground is strictly above 128 in the 8-bit mask (the field's convention): bool (H, W)."""
    if mask_u8.dtype != np.uint8:
        raise TypeError(f"binarize expects an 8-bit mask (uint8), got {mask_u8.dtype}")
    return mask_u8 > FOREGROUND_THRESHOLD
