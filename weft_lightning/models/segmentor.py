"""Segmentor: a backbone producing a 4-level pyramid and a head turning it into class scores.

The segmentor is the network alone: its training loss, and the class scores of a batch of crops
at the crop size. How a whole image becomes a probability map (views, windows, combination) is
the test-time protocol's job (:mod:`weft_lightning.inference`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import torch
from torch import nn

from weft_lightning.models.contracts import (
    Backbone,
    GradCheckpointing,
    HasAuxiliaryLoss,
    Head,
    check_backbone,
    check_head,
)
from weft_lightning.models.grad_checkpointing import checkpoint_once


class Segmentor(nn.Module):
    """A backbone producing a stride 4/8/16/32 pyramid and a head turning it into a mask.

    Args:
        backbone: a :class:`~weft_lightning.models.contracts.Backbone`: images (B, 3, H, W) to
            four feature maps, with ``out_channels``.
        head: head class (or factory) called with the backbone's ``out_channels``, giving a
            :class:`~weft_lightning.models.contracts.Head`.
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
        check_backbone(backbone)
        self.backbone = backbone
        self.head = head(list(cast(Backbone, backbone).out_channels))
        check_head(self.head)
        self.checkpoint_backbone = checkpoint_backbone
        if checkpoint_backbone:
            if not isinstance(backbone, GradCheckpointing):
                raise ValueError(
                    f"checkpoint_backbone=true: {type(backbone).__name__} has no "
                    "set_grad_checkpointing; use checkpoint_backbone=false."
                )
            backbone.set_grad_checkpointing(True)
        self.checkpoint_head = checkpoint_head
        # a head that knows its memory-heavy parts checkpoints them itself (timm's API)
        self._head_checkpoints_itself = isinstance(self.head, GradCheckpointing)
        if isinstance(self.head, GradCheckpointing):
            self.head.set_grad_checkpointing(checkpoint_head)

    def forward(self, images: torch.Tensor) -> Any:
        """Raw head outputs for a batch of normalised images."""
        features = self.backbone(images)
        if self.checkpoint_head and not self._head_checkpoints_itself and torch.is_grad_enabled():
            return checkpoint_once(self.head, features, module=self.head)
        return self.head(features)

    def loss(self, images: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head losses plus the backbone's auxiliary loss when it has one."""
        losses = cast(Head, self.head).loss(self(images), masks)
        backbone = self.backbone
        extra = backbone.auxiliary_loss() if isinstance(backbone, HasAuxiliaryLoss) else None
        if extra is not None:
            losses["loss_aux"] = extra
            losses["loss"] = losses["loss"] + extra
        return losses

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores (B, K, H, W) of a batch of crops, at the crops' size."""
        return cast(Head, self.head).scores(
            self(images), cast("tuple[int, int]", tuple(images.shape[-2:]))
        )

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) from (averaged, resized) class scores."""
        return cast(Head, self.head).probability(scores)
