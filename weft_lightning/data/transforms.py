"""Data pipelines: one :class:`Augmentation` description, built for the CPU or the GPU.

Training (albumentations, in the data-loader workers): rescale, crop, flips / rotations,
colour, normalise, pad to the crop size with the mask padded as ignore
(:data:`~weft_lightning.constants.IGNORE_INDEX`), so that no loss sees the padding. Two rescale
rules exist:

- ``keep_ratio``, the WEFT reference's mmseg rule: the image is rescaled with its aspect ratio
  kept to ``img_scale`` times a random ratio, then a crop is drawn with the class-ratio rule
  (``cat_max_ratio``), normalised, and padded at the bottom and right;
- ``short_side``, the project's: the short side is brought to the crop size, scaled by a random
  factor, padded around the image to the crop size and cropped at random.

With ``gpu_augmentation`` the workers only rescale, crop, normalise and pad; flips, rotations and
colour jitter then run batched on the device with kornia (:mod:`weft_lightning.data.gpu_augment`),
built from the same description. Evaluation images are only normalised: the test-time protocol
(:mod:`weft_lightning.inference`) resizes them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

from weft_lightning.constants import IGNORE_INDEX, SIZE_MULTIPLE
from weft_lightning.data.augment import CatMaxRatioCrop, KeepRatioRescale, PhotoMetricDistortion

__all__ = ["Augmentation", "eval_transform", "train_transform"]

Rescale = Literal["keep_ratio", "short_side"]


@dataclass(frozen=True)
class Augmentation:
    """How a training pair becomes a crop.

    Args:
        crop_size: side of the training crops (pixels, a multiple of 32).
        rescale: ``keep_ratio`` (mmseg: to ``img_scale`` x a ratio in ``scale_range``, aspect
            ratio kept) or ``short_side`` (short side to ``crop_size``, then x a factor in
            ``scale_range``).
        img_scale: (long, short) target of the ``keep_ratio`` rescale.
        scale_range: range of the random rescale ratio.
        cat_max_ratio: ``keep_ratio`` crops are redrawn (up to 10 times) until no class covers
            more than this share of the crop; 1 disables the rule.
        horizontal_flip, vertical_flip: random flips with probability 0.5.
        rotate90: random multiples of 90 degrees with probability 0.5.
        photometric: mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue).
        color_jitter: strength of a ColorJitter with probability 0.8 (0 disables it).
        rotation_degrees: free random rotation range (GPU augmentation only; 0 disables it).
    """

    crop_size: int = 512
    rescale: Rescale = "short_side"
    img_scale: tuple[int, int] = (2048, 512)
    scale_range: tuple[float, float] = (0.5, 2.0)
    cat_max_ratio: float = 1.0
    horizontal_flip: bool = True
    vertical_flip: bool = False
    rotate90: bool = False
    photometric: bool = False
    color_jitter: float = 0.0
    rotation_degrees: float = 0.0

    def __post_init__(self) -> None:
        if self.crop_size <= 0 or self.crop_size % SIZE_MULTIPLE:
            raise ValueError(
                f"augmentation.crop_size={self.crop_size} must be a positive multiple of "
                f"{SIZE_MULTIPLE}."
            )
        low, high = self.scale_range
        if not 0 < low <= high:
            raise ValueError(
                f"augmentation.scale_range={list(self.scale_range)} must be (low, high) with "
                "0 < low <= high."
            )
        if self.photometric and self.color_jitter:
            raise ValueError(
                "augmentation: choose photometric (the paper's) or color_jitter, not both."
            )


def train_transform(
    augmentation: Augmentation,
    mean: Sequence[float],
    std: Sequence[float],
    on_gpu: bool = False,
) -> A.Compose:
    """The CPU training pipeline; with ``on_gpu`` it leaves flips, rotations and colour to
    :class:`~weft_lightning.data.gpu_augment.GPUAugmentation`."""
    aug = augmentation
    geometry = _keep_ratio_geometry(aug) if aug.rescale == "keep_ratio" else _short_side(aug)
    steps = [*geometry, *([] if on_gpu else _flips_and_colour(aug))]
    steps.append(A.Normalize(mean=mean, std=std))
    if aug.rescale == "keep_ratio":  # the reference pads after normalising, image with 0
        steps.append(_pad(aug.crop_size, "top_left"))
    steps.append(ToTensorV2())
    return A.Compose(steps)


def eval_transform(mean: Sequence[float], std: Sequence[float]) -> A.Compose:
    """Normalise an evaluation image at its original size; the protocol resizes it later."""
    return A.Compose([A.Normalize(mean=mean, std=std), ToTensorV2()])


def _keep_ratio_geometry(aug: Augmentation) -> list[A.BasicTransform]:
    size = aug.crop_size
    return [
        KeepRatioRescale(img_scale=aug.img_scale, ratio_range=aug.scale_range),
        CatMaxRatioCrop(
            height=size, width=size, cat_max_ratio=aug.cat_max_ratio, ignore_index=IGNORE_INDEX
        ),
    ]


def _short_side(aug: Augmentation) -> list[A.BasicTransform]:
    low, high = aug.scale_range
    return [
        A.SmallestMaxSize(max_size=aug.crop_size),
        A.RandomScale(scale_limit=(low - 1.0, high - 1.0), p=1.0),
        _pad(aug.crop_size, "center"),
        A.RandomCrop(height=aug.crop_size, width=aug.crop_size),
    ]


def _pad(size: int, position: Literal["center", "top_left"]) -> A.PadIfNeeded:
    """Pad to ``size``: the image with 0, the mask with the ignore value."""
    return A.PadIfNeeded(
        min_height=size,
        min_width=size,
        position=position,
        border_mode=cv2.BORDER_CONSTANT,
        fill=0,
        fill_mask=IGNORE_INDEX,
    )


def _flips_and_colour(aug: Augmentation) -> list[A.BasicTransform]:
    if aug.rotation_degrees:
        raise ValueError("augmentation.rotation_degrees needs data.gpu_augmentation=true.")
    steps: list[A.BasicTransform] = []
    if aug.horizontal_flip:
        steps.append(A.HorizontalFlip(p=0.5))
    if aug.vertical_flip:
        steps.append(A.VerticalFlip(p=0.5))
    if aug.rotate90:
        steps.append(A.RandomRotate90(p=0.5))
    if aug.photometric:
        steps.append(PhotoMetricDistortion())
    if aug.color_jitter > 0:
        j = aug.color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 4, p=0.8))
    return steps
