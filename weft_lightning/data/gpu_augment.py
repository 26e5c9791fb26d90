"""GPUAugmentation: the flips, rotations and colour jitter of an :class:`Augmentation`, batched
on the device with kornia.

Works on normalised images: they are mapped back to [0, 1] for the colour jitter and normalised
again. Masks (B, 1, H, W) follow the image geometry with nearest resampling; pixels that a free
rotation brings in from outside the crop become ignored (:data:`IGNORE_INDEX`), like padding.
"""

from __future__ import annotations

from collections.abc import Sequence

import kornia.augmentation as K
import torch
from kornia.constants import DataKey
from torch import nn

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.data.transforms import Augmentation

__all__ = ["GPUAugmentation"]


class GPUAugmentation(nn.Module):
    """Batched flips, 90° and free rotations and colour jitter of ``augmentation``.

    Args:
        augmentation: the recipe; its rescale and crop already happened in the workers.
        mean, std: the normalisation the images carry.
    """

    mean: torch.Tensor  # buffers
    std: torch.Tensor

    def __init__(
        self, augmentation: Augmentation, mean: Sequence[float], std: Sequence[float]
    ) -> None:
        super().__init__()
        if augmentation.photometric:
            raise ValueError(
                "augmentation.photometric (mmseg's PhotoMetricDistortion) runs in the data "
                "workers only; set data.gpu_augmentation=false or use color_jitter."
            )
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        aug = augmentation
        steps: list[K.GeometricAugmentationBase2D] = []
        if aug.horizontal_flip:
            steps.append(K.RandomHorizontalFlip(p=0.5))
        if aug.vertical_flip:
            steps.append(K.RandomVerticalFlip(p=0.5))
        if aug.rotate90:
            steps.append(K.RandomRotation90(times=(0, 3), p=0.5))
        if aug.rotation_degrees > 0:
            steps.append(K.RandomRotation(aug.rotation_degrees, p=0.5))
        nearest = {"resample": "nearest", "align_corners": None}
        self.geometry = (
            K.AugmentationSequential(
                *steps,
                data_keys=["input", "mask"],
                extra_args={DataKey.MASK: nearest},
            )
            if steps
            else None
        )
        j = aug.color_jitter
        self.colour = K.ColorJiggle(j, j, j, j / 4, p=0.8) if j > 0 else None

    @torch.no_grad()
    def forward(
        self, images: torch.Tensor, masks: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augment a normalised image batch (B, 3, H, W) and its masks (B, 1, H, W) alike."""
        dtype = images.dtype
        images = images.float()
        if self.geometry is not None:
            # shifted by one so that the zeros a rotation brings in mark pixels of no label
            images, shifted = self.geometry(images, masks.float() + 1)
            shifted = shifted.round()
            masks = torch.where(shifted == 0, float(IGNORE_INDEX), shifted - 1)
        if self.colour is not None:
            rgb = (images * self.std + self.mean).clamp(0, 1)
            images = (self.colour(rgb) - self.mean) / self.std
        return images.to(dtype), masks
