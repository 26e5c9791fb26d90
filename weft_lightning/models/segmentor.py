"""Segmentor: backbone + head, with the loss and the inference mode chosen in config.

Inference modes: ``whole`` runs the network once on the input; ``slide`` runs it on overlapping
crops and averages the probabilities where windows overlap (the paper: crop 512, stride 426);
``multiscale_flip`` averages the probabilities over resized (and horizontally flipped) copies of
the input, each computed with ``whole`` or ``slide``. Every mode returns maps at the input size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weft_lightning.models.checkpointing import checkpoint_once

INFERENCE_MODES = ("whole", "slide", "multiscale_flip")
SIZE_MULTIPLE = 32

Predictor = Callable[[torch.Tensor], torch.Tensor]


class Segmentor(nn.Module):
    """A backbone producing a stride 4/8/16/32 pyramid and a head turning it into a mask.

    Args:
        backbone: module mapping images (B, 3, H, W) to four feature maps; it exposes
            ``out_channels``.
        head: head class (or factory) called with the backbone's ``out_channels``.
        inference: how :meth:`predict_proba` runs the network (``whole``, ``slide`` or
            ``multiscale_flip``).
        crop_size: ``slide`` window (an int or (height, width)), a multiple of 32.
        stride: ``slide`` step (an int or (height, width)), at most the crop size.
        scales: ``multiscale_flip`` resize factors of the input.
        flip: ``multiscale_flip`` also averages horizontally flipped copies.
        multiscale_base: mode used at each scale of ``multiscale_flip`` (``whole`` or ``slide``).
        checkpoint_head: gradient checkpointing of the head in training: through the head's
            ``set_grad_checkpointing`` when it has one (Mask2Former: its deformable encoder
            layers), else of its whole forward pass.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Callable[[list[int]], nn.Module],
        inference: str = "whole",
        crop_size: int | tuple[int, int] = 512,
        stride: int | tuple[int, int] = 426,
        scales: Sequence[float] = (0.5, 1.0, 1.5),
        flip: bool = True,
        multiscale_base: str = "whole",
        checkpoint_head: bool = False,
    ) -> None:
        super().__init__()
        if inference not in INFERENCE_MODES:
            raise ValueError(
                f"Unknown inference mode {inference!r}; choose one of {', '.join(INFERENCE_MODES)}."
            )
        if multiscale_base not in ("whole", "slide"):
            raise ValueError(
                f"multiscale_base={multiscale_base!r} is not supported; use 'whole' or 'slide'."
            )
        self.backbone = backbone
        self.head = head(list(backbone.out_channels))
        self.inference = inference
        self.crop_size, self.stride = _check_window(crop_size, stride)
        self.scales = _check_scales(scales)
        self.flip = flip
        self.multiscale_base = multiscale_base
        self.checkpoint_head = checkpoint_head
        set_checkpointing = getattr(self.head, "set_grad_checkpointing", None)
        self._head_checkpoints_itself = callable(set_checkpointing)
        if self._head_checkpoints_itself:  # the head knows its memory-heavy parts (timm API)
            set_checkpointing(checkpoint_head)

    def forward(self, images: torch.Tensor) -> Any:
        """Raw head outputs for a batch of normalised images."""
        features = self.backbone(images)
        if self.checkpoint_head and not self._head_checkpoints_itself and torch.is_grad_enabled():
            return checkpoint_once(self.head, features, module=self.head)
        return self.head(features)

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head losses plus the backbone's auxiliary loss when it has one."""
        losses = self.head.loss(self(images), masks)
        auxiliary = getattr(self.backbone, "auxiliary_loss", None)
        extra = auxiliary() if callable(auxiliary) else None
        if extra is not None:
            losses["loss_aux"] = extra
            losses["loss"] = losses["loss"] + extra
        return losses

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Foreground probabilities (B, 1, H, W) in [0, 1] at the input size."""
        if self.inference == "slide":
            probs = self.predict_slide(images)
        elif self.inference == "multiscale_flip":
            base = self.predict_slide if self.multiscale_base == "slide" else self.predict_whole
            probs = multiscale_flip_inference(base, images, self.scales, self.flip)
        else:
            probs = self.predict_whole(images)
        return probs.clamp_(0, 1)

    def predict_whole(self, images: torch.Tensor) -> torch.Tensor:
        """One pass of the network over the whole input."""
        return self.head.predict(self(images), tuple(images.shape[-2:]))

    def predict_slide(self, images: torch.Tensor) -> torch.Tensor:
        """Overlapping-window inference with this segmentor's crop size and stride."""
        return slide_inference(self.predict_whole, images, self.crop_size, self.stride)


def slide_windows(
    size: tuple[int, int], crop: tuple[int, int], stride: tuple[int, int]
) -> list[tuple[slice, slice]]:
    """Windows of at most ``crop`` covering an image of ``size``; the last one per axis is
    shifted back to end at the border, so every window lies inside the image."""
    axes = []
    for length, window, step in zip(size, crop, stride, strict=True):
        window = min(window, length)
        count = max(length - window + step - 1, 0) // step + 1
        ends = [min(i * step + window, length) for i in range(count)]
        axes.append([slice(end - window, end) for end in ends])
    return [(rows, cols) for rows in axes[0] for cols in axes[1]]


def slide_inference(
    predict: Predictor, images: torch.Tensor, crop: tuple[int, int], stride: tuple[int, int]
) -> torch.Tensor:
    """Run ``predict`` on every window and average the probabilities where windows overlap."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    total = images.new_zeros((images.shape[0], 1, *size), dtype=torch.float32)
    count = images.new_zeros((1, 1, *size), dtype=torch.float32)
    for rows, cols in slide_windows(size, crop, stride):
        total[..., rows, cols] += predict(images[..., rows, cols]).float()
        count[..., rows, cols] += 1
    return total / count


def multiscale_flip_inference(
    predict: Predictor, images: torch.Tensor, scales: Sequence[float], flip: bool
) -> torch.Tensor:
    """Average of ``predict`` over the input resized by each scale (and its mirror image),
    every result resized back to the input size."""
    size = (int(images.shape[-2]), int(images.shape[-1]))
    total = images.new_zeros((images.shape[0], 1, *size), dtype=torch.float32)
    passes = 0
    for scale in scales:
        scaled = _resize(images, _scaled_size(size, scale))
        for mirrored in (False, True) if flip else (False,):
            view = scaled.flip(-1) if mirrored else scaled
            probs = predict(view).float()
            probs = probs.flip(-1) if mirrored else probs
            total += _resize(probs, size)
            passes += 1
    return total / passes


def _scaled_size(size: tuple[int, int], scale: float) -> tuple[int, int]:
    """``size * scale`` rounded to the nearest multiple of 32 (at least 32)."""
    return tuple(max(SIZE_MULTIPLE, round(s * scale / SIZE_MULTIPLE) * SIZE_MULTIPLE) for s in size)


def _resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def _pair(value: int | Sequence[int], name: str) -> tuple[int, int]:
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v > 0 for v in pair):
        raise ValueError(f"{name}={value!r} must be a positive int or (height, width) pair.")
    return pair


def _check_window(
    crop_size: int | Sequence[int], stride: int | Sequence[int]
) -> tuple[tuple[int, int], tuple[int, int]]:
    crop, step = _pair(crop_size, "crop_size"), _pair(stride, "stride")
    if any(c % SIZE_MULTIPLE for c in crop):
        raise ValueError(f"crop_size={crop_size!r} must be a multiple of {SIZE_MULTIPLE}.")
    if any(s > c for s, c in zip(step, crop, strict=True)):
        raise ValueError(
            f"stride={stride!r} is larger than crop_size={crop_size!r}: windows would leave "
            "gaps; use a stride at most the crop size."
        )
    return crop, step


def _check_scales(scales: Sequence[float]) -> tuple[float, ...]:
    values = tuple(float(s) for s in scales)
    if not values or any(s <= 0 for s in values):
        raise ValueError(f"scales={list(scales)!r} must be a non-empty list of positive factors.")
    return values
