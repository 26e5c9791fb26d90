"""Exact Euclidean distance transform and scipy's nearest-foreground tie rule, on the CPU.

The weighted F-measure needs, for every background pixel, the distance to the nearest foreground
pixel, and for pixels near the object, *which* foreground pixel is nearest, with ties broken as
``scipy.ndimage.distance_transform_edt`` breaks them: smallest column first, then smallest row.

Paths: squared distances come from OpenCV's exact (``DIST_MASK_PRECISE``) transform, whose
float32 output is squared and rounded back to the exact integer while the image diagonal is
below 2,000 pixels (float32 keeps that exact); larger images, or a missing OpenCV, use scipy.
Both run on the CPU. Nearest indices are only needed within distance sqrt(18) (the 7x7 window
of the measure), where a search over the few offsets of each exact squared distance, in scipy's
order, gives them exactly and cheaply.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

try:  # OpenCV ships with albumentations; scipy is the fallback.
    import cv2
except ImportError:  # pragma: no cover - exercised only without OpenCV
    cv2 = None  # type: ignore[assignment]

__all__ = ["BAND", "gaussian_7x7", "nearest_foreground", "squared_distance"]

BAND = 18  # squared radius that covers a 7x7 window (3^2 + 3^2)
_CV2_LIMIT = 2000**2  # below 4.19e6 a float32 distance squared rounds back to the exact integer
_GAUSS = np.exp(-(np.arange(-3, 4) ** 2) / (2 * 5.0**2))
_GAUSS = _GAUSS / _GAUSS.sum()  # fspecial('gaussian', 7, 5) is the outer product of this


def _offset_table() -> tuple[np.ndarray, np.ndarray]:
    """Per squared distance d <= BAND, its offsets (dy, dx) in scipy's tie order, padded."""
    table = np.zeros((BAND + 1, 8, 2), np.int64)
    valid = np.zeros((BAND + 1, 8), bool)
    span = range(-4, 5)
    for d in range(1, BAND + 1):
        offsets = sorted(
            ((dy, dx) for dy in span for dx in span if dy * dy + dx * dx == d),
            key=lambda o: (o[1], o[0]),
        )
        for k, offset in enumerate(offsets):
            table[d, k] = offset
            valid[d, k] = True
    return table, valid


_OFFSETS, _VALID = _offset_table()


def squared_distance(mask: np.ndarray) -> np.ndarray:
    """(H, W) int32 squared distance of each pixel to the nearest True pixel of mask.

    mask must hold at least one True pixel.
    """
    h, w = mask.shape
    if cv2 is not None and h * h + w * w < _CV2_LIMIT:
        dist: np.ndarray = cv2.distanceTransform(
            (~mask).astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE
        )
        dist *= dist
    else:
        dist = ndimage.distance_transform_edt(~mask)
        dist *= dist
    return np.rint(dist, out=dist).astype(np.int32)


def gaussian_7x7(image: np.ndarray) -> np.ndarray:
    """float64 'same' filtering with MATLAB's 7x7, sigma 5 Gaussian and zero padding.

    Two 1-D passes (OpenCV's, or scipy's without OpenCV); equal to the 2-D kernel to rounding.
    """
    if cv2 is not None:
        return cv2.sepFilter2D(image, cv2.CV_64F, _GAUSS, _GAUSS, borderType=cv2.BORDER_CONSTANT)
    smooth = ndimage.correlate1d(image, _GAUSS, axis=0, mode="constant")
    return ndimage.correlate1d(smooth, _GAUSS, axis=1, mode="constant")


def nearest_foreground(
    mask: np.ndarray, rows: np.ndarray, cols: np.ndarray, sq_dist: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Row and column of the nearest True pixel of mask for the given pixels.

    sq_dist holds their exact squared distances (1..BAND); among equidistant candidates the
    smallest column wins, then the smallest row, as in scipy.
    """
    padded = np.pad(mask, 4)
    cand_r = rows[:, None] + _OFFSETS[sq_dist, :, 0]
    cand_c = cols[:, None] + _OFFSETS[sq_dist, :, 1]
    hit = padded[cand_r + 4, cand_c + 4] & _VALID[sq_dist]
    first = hit.argmax(1)
    pick = np.arange(len(rows))
    return cand_r[pick, first], cand_c[pick, first]
