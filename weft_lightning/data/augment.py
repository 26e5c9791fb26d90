"""Training augmentations of the WEFT reference (mmseg 0.x) that albumentations lacks.

The paper's numbers come from an mmseg pipeline whose rescale rule, class-ratio crop and
photometric distortion have no exact albumentations counterpart. They are reproduced here as
albumentations transforms, drawing their randomness from the transform's own generators so that
``Compose.set_random_seed`` makes them reproducible:

- :class:`KeepRatioRescale`: ``Resize(img_scale, ratio_range)`` with mmcv's keep-ratio rule;
- :class:`CatMaxRatioCrop`: ``RandomCrop(crop_size, cat_max_ratio)``, which redraws crops where
  one class dominates;
- :class:`PhotoMetricDistortion`: brightness, contrast, saturation and hue in mmseg's order.

:func:`keep_ratio_size` (mmcv's rule) also sizes the views of the test-time protocol.
"""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np
from albumentations.augmentations.crops.transforms import BaseCrop
from albumentations.core.transforms_interface import DualTransform, ImageOnlyTransform

__all__ = ["CatMaxRatioCrop", "KeepRatioRescale", "PhotoMetricDistortion", "keep_ratio_size"]

HUE_PERIOD = 180  # OpenCV's 8-bit hue range


def keep_ratio_size(height: int, width: int, scale: tuple[float, float]) -> tuple[int, int]:
    """mmcv's keep-ratio rescale of an (H, W) image to a (long, short) ``scale``:
    factor ``min(max(scale) / max(H, W), min(scale) / min(H, W))``, sides rounded half up."""
    factor = min(max(scale) / max(height, width), min(scale) / min(height, width))
    return int(height * factor + 0.5), int(width * factor + 0.5)


class KeepRatioRescale(DualTransform):
    """mmseg's ``Resize(img_scale, ratio_range)`` with ``keep_ratio``: a ratio is drawn in
    ``[low, high)``, the target scale is ``(int(img_scale[0] * ratio), int(img_scale[1] *
    ratio))`` and the image is rescaled to it with :func:`keep_ratio_size` (image bilinear,
    mask nearest, so label values such as 0/1/255 are kept).

    Args:
        img_scale: (long, short) scale at ratio 1.
        ratio_range: (low, high) range of the random ratio.
        p: probability of applying the transform.
    """

    def __init__(
        self,
        img_scale: tuple[int, int] = (2048, 512),
        ratio_range: tuple[float, float] = (0.5, 2.0),
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if min(img_scale) <= 0:
            raise ValueError(f"KeepRatioRescale: img_scale={img_scale} must be positive.")
        if not 0 < ratio_range[0] <= ratio_range[1]:
            raise ValueError(
                f"KeepRatioRescale: ratio_range={ratio_range} must be (low, high) with "
                "0 < low <= high."
            )
        self.img_scale = tuple(img_scale)
        self.ratio_range = tuple(ratio_range)

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        low, high = self.ratio_range
        ratio = self.py_random.random() * (high - low) + low
        scale = (int(self.img_scale[0] * ratio), int(self.img_scale[1] * ratio))
        height, width = params["shape"][:2]
        return {"ratio": ratio, "size": keep_ratio_size(height, width, scale)}

    def apply(self, img: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(img, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)

    def apply_to_mask(self, mask: np.ndarray, size: tuple[int, int], **params: Any) -> np.ndarray:
        return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_NEAREST)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("img_scale", "ratio_range")


class CatMaxRatioCrop(BaseCrop):
    """mmseg's ``RandomCrop(crop_size, cat_max_ratio)``.

    A box is drawn with a uniform offset in ``[0, max(H - height, 0)]`` x ``[0, max(W - width,
    0)]`` and clipped to the image (a smaller image gives a smaller crop; padding comes later).
    With ``cat_max_ratio < 1`` the box is kept as soon as the mask inside it holds more than one
    class (``ignore_index`` not counted) and no class covers ``cat_max_ratio`` of it; after
    ``max_tries`` failed boxes the next drawn box is used unchecked, as mmseg does.

    Args:
        height, width: crop size.
        cat_max_ratio: largest share of the crop one class may cover (1 disables the rule).
        ignore_index: mask value that is not a class.
        max_tries: boxes checked before one is taken unchecked.
        p: probability of applying the transform.
    """

    def __init__(
        self,
        height: int = 512,
        width: int = 512,
        cat_max_ratio: float = 0.75,
        ignore_index: int = 255,
        max_tries: int = 10,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        if height <= 0 or width <= 0:
            raise ValueError(f"CatMaxRatioCrop: crop size {height}x{width} must be positive.")
        if cat_max_ratio <= 0 or max_tries < 0:
            raise ValueError(
                f"CatMaxRatioCrop: cat_max_ratio={cat_max_ratio} must be > 0 and "
                f"max_tries={max_tries} >= 0."
            )
        self.height, self.width = height, width
        self.cat_max_ratio = cat_max_ratio
        self.ignore_index = ignore_index
        self.max_tries = max_tries

    def draw_box(self, shape: tuple[int, int]) -> tuple[int, int, int, int]:
        """A random box (x_min, y_min, x_max, y_max) of the crop size, clipped to ``shape``."""
        height, width = shape
        top = self.py_random.randint(0, max(height - self.height, 0))
        left = self.py_random.randint(0, max(width - self.width, 0))
        return left, top, min(left + self.width, width), min(top + self.height, height)

    def accepts(self, mask: np.ndarray, box: tuple[int, int, int, int]) -> bool:
        """The class-ratio rule: more than one class and none above ``cat_max_ratio``."""
        x_min, y_min, x_max, y_max = box
        labels, counts = np.unique(mask[y_min:y_max, x_min:x_max], return_counts=True)
        counts = counts[labels != self.ignore_index]
        return len(counts) > 1 and counts.max() / counts.sum() < self.cat_max_ratio

    def get_params_dependent_on_data(
        self, params: dict[str, Any], data: dict[str, Any]
    ) -> dict[str, Any]:
        shape = params["shape"][:2]
        box = self.draw_box(shape)
        mask = data.get("mask")
        if self.cat_max_ratio < 1 and mask is not None:
            for _ in range(self.max_tries):
                if self.accepts(mask, box):
                    break
                box = self.draw_box(shape)
        return {"crop_coords": box}

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("height", "width", "cat_max_ratio", "ignore_index", "max_tries")


class PhotoMetricDistortion(ImageOnlyTransform):
    """mmseg's ``PhotoMetricDistortion`` on 8-bit RGB images.

    In order: brightness (+ uniform(-delta, delta)) with probability 1/2; a coin decides whether
    contrast (x uniform(low, high), probability 1/2) comes now or last; saturation (HSV S channel
    x uniform(low, high)) with probability 1/2; hue (+ an integer in [-delta, delta), modulo
    180) with probability 1/2; then contrast if it did not come first. Each step clips to
    [0, 255] and truncates to 8 bits, as mmseg does. (mmseg converts BGR to HSV; the RGB to HSV
    conversion here gives the same values for the same colours.)

    Args:
        brightness_delta: largest brightness shift.
        contrast_range: range of the contrast factor.
        saturation_range: range of the saturation factor.
        hue_delta: largest hue shift (OpenCV's 0-180 hue scale).
        p: probability of applying the transform.
    """

    def __init__(
        self,
        brightness_delta: float = 32,
        contrast_range: tuple[float, float] = (0.5, 1.5),
        saturation_range: tuple[float, float] = (0.5, 1.5),
        hue_delta: int = 18,
        p: float = 1.0,
    ) -> None:
        super().__init__(p=p)
        for name, (low, high) in (("contrast", contrast_range), ("saturation", saturation_range)):
            if not 0 <= low <= high:
                raise ValueError(
                    f"PhotoMetricDistortion: {name}_range=({low}, {high}) must satisfy "
                    "0 <= low <= high."
                )
        if brightness_delta < 0 or hue_delta < 0:
            raise ValueError("PhotoMetricDistortion: brightness_delta and hue_delta must be >= 0.")
        self.brightness_delta = brightness_delta
        self.contrast_range = tuple(contrast_range)
        self.saturation_range = tuple(saturation_range)
        self.hue_delta = int(hue_delta)

    def get_params(self) -> dict[str, Any]:
        rng = self.py_random
        delta = self.brightness_delta

        def maybe(draw: Any) -> Any:
            return draw() if rng.randint(0, 1) else None

        brightness = maybe(lambda: rng.uniform(-delta, delta))
        mode = rng.randint(0, 1)
        contrast_first = maybe(lambda: rng.uniform(*self.contrast_range)) if mode == 1 else None
        saturation = maybe(lambda: rng.uniform(*self.saturation_range))
        hue = maybe(lambda: rng.randint(-self.hue_delta, self.hue_delta - 1))
        contrast_last = maybe(lambda: rng.uniform(*self.contrast_range)) if mode == 0 else None
        return {
            "brightness": brightness,
            "mode": mode,
            "contrast": contrast_first if mode == 1 else contrast_last,
            "saturation": saturation,
            "hue": hue,
        }

    def apply(
        self,
        img: np.ndarray,
        brightness: float | None = None,
        mode: int = 0,
        contrast: float | None = None,
        saturation: float | None = None,
        hue: int | None = None,
        **params: Any,
    ) -> np.ndarray:
        if img.dtype != np.uint8:
            raise TypeError(
                f"PhotoMetricDistortion works on 8-bit images, got {img.dtype}; apply it "
                "before Normalize."
            )
        if brightness is not None:
            img = _affine(img, beta=brightness)
        if mode == 1 and contrast is not None:
            img = _affine(img, alpha=contrast)
        if saturation is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 1] = _affine(hsv[..., 1], alpha=saturation)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if hue is not None:
            hsv = cv2.cvtColor(img, cv2.COLOR_RGB2HSV)
            hsv[..., 0] = ((hsv[..., 0].astype(np.int64) + hue) % HUE_PERIOD).astype(np.uint8)
            img = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
        if mode == 0 and contrast is not None:
            img = _affine(img, alpha=contrast)
        return img

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("brightness_delta", "contrast_range", "saturation_range", "hue_delta")


def _affine(img: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    """``clip(img * alpha + beta, 0, 255)`` truncated to uint8, in float32 as mmseg computes."""
    out = img.astype(np.float32) * np.float32(alpha) + np.float32(beta)
    return np.clip(out, 0, 255).astype(np.uint8)
