"""Augmentation: albumentations pipelines on the CPU, and an optional kornia pipeline on the GPU.

With GPU augmentation on, the CPU workers only rescale, crop and normalise; flips, rotations and
colour jitter then run batched on the device after transfer, image and mask with the same
geometry (masks resampled nearest, so they stay binary).
"""

from __future__ import annotations

from collections.abc import Sequence

import albumentations as A
import cv2
import kornia.augmentation as K
import torch
from albumentations.pytorch import ToTensorV2
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "GPUAugmentation", "eval_transform", "train_transform"]


def train_transform(
    crop_size: int,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    scale_range: tuple[float, float] = (0.5, 2.0),
    rotate90: bool = True,
    vertical_flip: bool = True,
    color_jitter: float = 0.2,
    geometric_on_gpu: bool = False,
) -> A.Compose:
    """Random scale around ``crop_size``, random crop, flips, 90° rotations and colour jitter.

    ``geometric_on_gpu`` leaves flips, rotations and jitter to :class:`GPUAugmentation`.
    """
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
    ]
    if not geometric_on_gpu:
        steps.append(A.HorizontalFlip(p=0.5))
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


class GPUAugmentation(nn.Module):
    """Batched flips, 90° (and optionally free) rotations and colour jitter with kornia.

    Works on normalised images: they are mapped back to [0, 1] for the colour jitter and
    normalised again. Masks (B, 1, H, W) follow the image geometry with nearest resampling.

    Args:
        mean, std: the normalisation the images carry.
        rotate90: random multiples of 90°.
        vertical_flip: random vertical flips (horizontal flips are always on).
        color_jitter: brightness/contrast/saturation strength (0 disables it; hue is a quarter).
        rotation_degrees: free random rotation range ± degrees (0 disables it).
    """

    def __init__(
        self,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        rotate90: bool = True,
        vertical_flip: bool = True,
        color_jitter: float = 0.2,
        rotation_degrees: float = 0.0,
    ) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        steps: list[nn.Module] = [K.RandomHorizontalFlip(p=0.5)]
        if vertical_flip:
            steps.append(K.RandomVerticalFlip(p=0.5))
        if rotate90:
            steps.append(K.RandomRotation90(times=(0, 3), p=0.5))
        if rotation_degrees > 0:
            steps.append(K.RandomRotation(rotation_degrees, p=0.5))
        nearest = {"resample": "nearest", "align_corners": None}
        self.geometry = K.AugmentationSequential(
            *steps, data_keys=["input", "mask"], extra_args={"mask": nearest}
        )
        j = color_jitter
        self.colour = K.ColorJiggle(j, j, j, j / 4, p=0.8) if j > 0 else None

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a normalised image batch (B, 3, H, W) and its masks (B, 1, H, W) alike."""
        dtype = images.dtype
        images, masks = self.geometry(images.float(), masks.float())
        if self.colour is not None:
            rgb = (images * self.std + self.mean).clamp(0, 1)
            images = (self.colour(rgb) - self.mean) / self.std
        return images.to(dtype), masks.round()
