"""Segmentor: a backbone producing a 4-level pyramid and a head turning it into class scores.

The segmentor is the network alone: its training loss, and the class scores of a batch of crops
at the crop size. How a whole image becomes a probability map (views, windows, combination) is
the test-time protocol's job (:mod:`weft_lightning.inference`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from weft_lightning.models.checkpointing import checkpoint_once


class Segmentor(nn.Module):
    """A backbone producing a stride 4/8/16/32 pyramid and a head turning it into a mask.

    Args:
        backbone: module mapping images (B, 3, H, W) to four feature maps; it exposes
            ``out_channels``.
        head: head class (or factory) called with the backbone's ``out_channels``.
        checkpoint_backbone: gradient checkpointing of the backbone in training, through its
            ``set_grad_checkpointing`` (WEFT: frozen blocks, adapters and expert branch).
        checkpoint_head: gradient checkpointing of the head in training: through the head's
            ``set_grad_checkpointing`` when it has one (Mask2Former: its deformable encoder
            layers), else of its whole forward pass.
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: Callable[[list[int]], nn.Module],
        checkpoint_backbone: bool = False,
        checkpoint_head: bool = False,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head(list(backbone.out_channels))
        self.checkpoint_backbone = checkpoint_backbone
        if checkpoint_backbone:
            set_backbone_checkpointing = getattr(backbone, "set_grad_checkpointing", None)
            if not callable(set_backbone_checkpointing):
                raise ValueError(
                    f"checkpoint_backbone=true: {type(backbone).__name__} has no "
                    "set_grad_checkpointing; use checkpoint_backbone=false."
                )
            set_backbone_checkpointing(True)
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

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K, H, W) of a batch of crops, at the crops' size."""
        return self.head.scores(self(images), tuple(images.shape[-2:]))

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) from (averaged, resized) class scores."""
        return self.head.probability(scores)
