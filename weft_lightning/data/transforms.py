"""Albumentations pipelines for training crops and evaluation resizing."""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
from albumentations.pytorch import ToTensorV2

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def train_transform(
    crop_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale_range: tuple[float, float] = (0.5, 2.0),
    rotate90: bool = True,
    vertical_flip: bool = True,
    color_jitter: float = 0.2,
) -> A.Compose:
    """Random scale around ``crop_size``, random crop, flips, 90° rotations and colour jitter."""
    steps: list[A.BasicTransform] = [
        A.SmallestMaxSize(max_size=crop_size),
        A.RandomScale(scale_limit=(scale_range[0] - 1.0, scale_range[1] - 1.0), p=1.0),
        A.PadIfNeeded(
            min_height=crop_size,
            min_width=crop_size,
            border_mode=cv2.BORDER_CONSTANT,
            fill=0,
            fill_mask=0,
        ),
        A.RandomCrop(height=crop_size, width=crop_size),
        A.HorizontalFlip(p=0.5),
    ]
    if vertical_flip:
        steps.append(A.VerticalFlip(p=0.5))
    if rotate90:
        steps.append(A.RandomRotate90(p=0.5))
    if color_jitter > 0:
        j = color_jitter
        steps.append(A.ColorJitter(brightness=j, contrast=j, saturation=j, hue=j / 4, p=0.8))
    steps += [A.Normalize(mean=mean, std=std), ToTensorV2()]
    return A.Compose(steps)


def eval_transform(
    size: int | tuple[int, int],
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> A.Compose:
    """Resize to the network's input size and normalise; metrics use the original mask."""
    height, width = (size, size) if isinstance(size, int) else size
    return A.Compose(
        [A.Resize(height=height, width=width), A.Normalize(mean=mean, std=std), ToTensorV2()]
    )
