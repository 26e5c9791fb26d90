"""Segmentor: backbone + head, with the loss and the inference mode chosen in config."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

INFERENCE_MODES = ("whole",)


class Segmentor(nn.Module):
    """A backbone producing a stride 4/8/16/32 pyramid and a head turning it into a mask.

    Args:
        backbone: module mapping images (B, 3, H, W) to four feature maps; it exposes
            ``out_channels``.
        head: head class (or factory) called with the backbone's ``out_channels``.
        inference: how :meth:`predict_proba` runs the network (``whole``).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Callable[[list[int]], nn.Module],
        inference: str = "whole",
    ) -> None:
        super().__init__()
        if inference not in INFERENCE_MODES:
            raise ValueError(
                f"Unknown inference mode {inference!r}; choose one of {', '.join(INFERENCE_MODES)}."
            )
        self.backbone = backbone
        self.head = head(list(backbone.out_channels))
        self.inference = inference

    def forward(self, images: torch.Tensor) -> Any:
        """Raw head outputs for a batch of normalised images."""
        return self.head(self.backbone(images))

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
        return self.head.predict(self(images), tuple(images.shape[-2:])).clamp_(0, 1)
