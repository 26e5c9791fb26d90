"""Mask2Former head for binary (background / foreground) segmentation.

The head of the WEFT paper: a deformable-attention pixel decoder, a masked-attention transformer
decoder with deep supervision, Hungarian matching and point-sampled mask losses. The binary mask
becomes up to two target segments (background, foreground); the foreground probability map is
``sum_q softmax(class_q)[foreground] * sigmoid(mask_q)``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.models.heads.criterion import SetCriterion
from weft_lightning.models.heads.matcher import HungarianMatcher, Target
from weft_lightning.models.heads.pixel_decoder import DeformPixelDecoder
from weft_lightning.models.heads.transformer_decoder import MaskedAttentionDecoder


class Mask2FormerHead(nn.Module):
    """Mask2Former on a 4-level pyramid (strides 4, 8, 16, 32); defaults are the paper's sizes.

    Args:
        in_channels: the backbone's ``out_channels`` (finest level first).
        hidden_dim: width of pixel decoder, queries and mask features.
        num_queries: learned queries.
        num_classes: 2 (background and foreground segments) or 1 (foreground segment only).
        enc_layers, enc_ffn, enc_points: deformable pixel-decoder encoder size.
        dec_layers, dec_ffn: masked-attention decoder size.
        nheads: attention heads of encoder and decoder.
        norm_groups: GroupNorm groups of the pixel decoder.
        class_weight, mask_weight, dice_weight: loss and matching-cost weights.
        no_object_weight: cross-entropy weight of the "no object" class.
        num_points: sampled points for matching and mask losses.
        oversample_ratio, importance_sample_ratio: importance sampling of the loss points.
        deep_supervision: also supervise the predictions before and between decoder layers.
    """

    def __init__(
        self,
        in_channels: list[int],
        hidden_dim: int = 96,
        num_queries: int = 100,
        num_classes: int = 2,
        enc_layers: int = 6,
        enc_ffn: int = 320,
        dec_layers: int = 9,
        dec_ffn: int = 768,
        nheads: int = 8,
        enc_points: int = 4,
        norm_groups: int = 32,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
        deep_supervision: bool = True,
    ) -> None:
        super().__init__()
        _check_options(in_channels, hidden_dim, num_classes, nheads, dec_layers)
        self.num_classes = num_classes
        self.deep_supervision = deep_supervision
        self.pixel_decoder = DeformPixelDecoder(
            list(in_channels),
            conv_dim=hidden_dim,
            mask_dim=hidden_dim,
            enc_layers=enc_layers,
            enc_ffn=enc_ffn,
            enc_heads=nheads,
            enc_points=enc_points,
            norm_groups=norm_groups,
        )
        self.decoder = MaskedAttentionDecoder(
            in_channels=hidden_dim,
            num_classes=num_classes,
            hidden_dim=hidden_dim,
            num_queries=num_queries,
            heads=nheads,
            ffn_dim=dec_ffn,
            dec_layers=dec_layers,
            mask_dim=hidden_dim,
        )
        matcher = HungarianMatcher(class_weight, mask_weight, dice_weight, num_points)
        self.criterion = SetCriterion(
            num_classes,
            matcher,
            class_weight=class_weight,
            mask_weight=mask_weight,
            dice_weight=dice_weight,
            no_object_weight=no_object_weight,
            num_points=num_points,
            oversample_ratio=oversample_ratio,
            importance_sample_ratio=importance_sample_ratio,
        )

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each deformable encoder layer of the pixel decoder in the backward pass
        (the largest activations of the head) instead of keeping its activations."""
        self.pixel_decoder.grad_checkpointing = enable

    @property
    def foreground_class(self) -> int:
        """Index of the foreground class among the class logits."""
        return self.num_classes - 1

    def forward(self, features: list[torch.Tensor]) -> dict:
        """Pyramid -> ``{"pred_logits" (B,Q,K+1), "pred_masks" (B,Q,H/4,W/4), "aux_outputs"}``."""
        mask_features, multi_scale = self.pixel_decoder(features)
        return self.decoder(multi_scale, mask_features)

    def loss(self, outputs: dict, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Set-prediction losses against binary ``masks`` (B, 1, H, W), computed in float32."""
        if not self.deep_supervision:
            outputs = {k: v for k, v in outputs.items() if k != "aux_outputs"}
        targets = self.targets(masks)
        with torch.autocast(device_type=masks.device.type, enabled=False):
            return self.criterion(_to_float(outputs), targets)

    def targets(self, masks: torch.Tensor) -> list[Target]:
        """Background (label 0) and foreground (label ``num_classes - 1``) segments per image;
        empty segments are dropped, so an all-background image has only the background one.

        Pixels equal to ``IGNORE_INDEX`` (padding) belong to no segment; an image that has any
        also gets ``"ignored"`` (H, W) float, 1 there, so that matching and losses skip them.
        """
        if masks.dim() != 4 or masks.shape[1] != 1:
            raise ValueError(f"masks must be (B, 1, H, W), got shape {tuple(masks.shape)}.")
        targets = []
        for mask in masks[:, 0]:
            ignored = mask == IGNORE_INDEX
            fg = (mask > 0.5) & ~ignored
            segments = [(self.foreground_class, fg)]
            if self.num_classes == 2:
                segments.insert(0, (0, ~fg & ~ignored))
            kept = [(label, seg) for label, seg in segments if seg.any()]
            labels = torch.tensor([label for label, _ in kept], dtype=torch.long, device=fg.device)
            stacked = (
                torch.stack([seg for _, seg in kept]).float()
                if kept
                else fg.new_zeros((0, *fg.shape), dtype=torch.float32)
            )
            target: Target = {"labels": labels, "masks": stacked}
            if bool(ignored.any()):
                target["ignored"] = ignored.float()
            targets.append(target)
        return targets

    def scores(self, outputs: dict, size: tuple[int, int]) -> torch.Tensor:
        """Class scores (B, num_classes, *size) of the last layer's predictions:
        ``s_c = sum_q softmax(class_q)[c] * sigmoid(mask_q)`` (the reference's semantic
        inference; the scores of a pixel need not sum to one).

        Mask logits are resized to ``size`` before the sigmoid, one image at a time to bound
        memory at large sizes.
        """
        class_probs = outputs["pred_logits"].float().softmax(-1)[..., : self.num_classes]
        maps = []
        for weights, masks in zip(class_probs, outputs["pred_masks"], strict=True):
            logits = F.interpolate(
                masks[None].float(), size=tuple(size), mode="bilinear", align_corners=False
            )[0]
            maps.append(torch.einsum("qc,qhw->chw", weights, logits.sigmoid()))
        return torch.stack(maps)

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) from (averaged, resized) class scores.

        Two classes: the softmax over background and foreground, ``sigmoid(s_fg - s_bg)``, so
        ``p > 0.5`` exactly where ``s_fg > s_bg`` (the reference's argmax); one class: the
        foreground score itself, clipped to [0, 1].
        """
        if self.num_classes == 2:
            return torch.sigmoid(scores[:, 1:2] - scores[:, 0:1])
        return scores[:, -1:].clamp(0.0, 1.0)


def _to_float(outputs: dict) -> dict:
    """Copy of the head outputs with every tensor in float32 (also inside ``aux_outputs``)."""
    converted: dict[str, Any] = {
        k: v.float() for k, v in outputs.items() if isinstance(v, torch.Tensor)
    }
    converted["aux_outputs"] = [_to_float(layer) for layer in outputs.get("aux_outputs", [])]
    return converted


def _check_options(
    in_channels: list[int], hidden_dim: int, num_classes: int, nheads: int, dec_layers: int
) -> None:
    if len(in_channels) != 4:
        raise ValueError(
            f"Mask2FormerHead needs the 4 pyramid levels (strides 4, 8, 16, 32), got "
            f"in_channels={list(in_channels)}."
        )
    if num_classes not in (1, 2):
        raise ValueError(
            f"num_classes={num_classes} is not supported: use 2 (background + foreground "
            "segments) or 1 (foreground only)."
        )
    if hidden_dim % nheads or hidden_dim % 4:
        raise ValueError(
            f"hidden_dim={hidden_dim} must be divisible by nheads={nheads} and by 4 "
            "(sine position encoding)."
        )
    if dec_layers < 1:
        raise ValueError(f"dec_layers={dec_layers} must be at least 1.")
