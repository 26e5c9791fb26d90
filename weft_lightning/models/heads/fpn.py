"""A light FPN head with the structure loss (weighted BCE + weighted IoU) for fast runs."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.models.layers import conv_bn_relu


def box_filter(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size`` x ``size`` window (zero padding counted), as two 1-D passes.

    Equal to ``avg_pool2d(x, size, stride=1, padding=size // 2)`` and much faster on the CPU.
    """
    pad = size // 2
    x = F.avg_pool2d(x, (size, 1), stride=1, padding=(pad, 0))
    return F.avg_pool2d(x, (1, size), stride=1, padding=(0, pad))


def structure_loss(
    logits: torch.Tensor, masks: torch.Tensor, ignore_index: int = IGNORE_INDEX
) -> dict[str, torch.Tensor]:
    """Boundary-weighted BCE + weighted IoU (the usual loss of salient-object heads), in float32.

    ``masks`` hold 0 (background), 1 (foreground) or ``ignore_index`` (padding): ignored pixels
    weigh nothing, so neither their labels nor the predictions there change the loss.
    """
    logits, masks = logits.float(), masks.float()
    valid = masks != ignore_index
    some_ignored = not bool(valid.all())
    if some_ignored:
        masks = masks * valid
    weight = 1 + 5 * torch.abs(box_filter(masks, 31) - masks)
    if some_ignored:
        weight = weight * valid
    bce = F.binary_cross_entropy_with_logits(logits, masks, reduction="none")
    wbce = (weight * bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3)).clamp_min(1e-6)
    probs = torch.sigmoid(logits)
    inter = (probs * masks * weight).sum(dim=(2, 3))
    union = ((probs + masks) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return {"loss": (wbce + wiou).mean(), "loss_bce": wbce.mean(), "loss_iou": wiou.mean()}


class FPNHead(nn.Module):
    """Top-down FPN over the stride 4/8/16/32 pyramid, fused at stride 4 into one mask logit map.

    Args:
        in_channels: channels of the four input levels (given by the segmentor).
        channels: width of the head.
    """

    def __init__(self, in_channels: list[int], channels: int = 128) -> None:
        super().__init__()
        self.lateral = nn.ModuleList(conv_bn_relu(c, channels, 1, bias=False) for c in in_channels)
        self.smooth = nn.ModuleList(
            conv_bn_relu(channels, channels, 3, bias=False) for _ in in_channels
        )
        self.fuse = conv_bn_relu(channels * len(in_channels), channels, 3, bias=False)
        self.classifier = nn.Conv2d(channels, 1, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        """Mask logits (B, 1, H/4, W/4)."""
        laterals = [lateral(f) for lateral, f in zip(self.lateral, features, strict=True)]
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + F.interpolate(
                laterals[i], size=laterals[i - 1].shape[-2:], mode="bilinear", align_corners=False
            )
        size = laterals[0].shape[-2:]
        outs = [
            F.interpolate(smooth(x), size=size, mode="bilinear", align_corners=False)
            for smooth, x in zip(self.smooth, laterals, strict=True)
        ]
        return self.classifier(self.fuse(torch.cat(outs, dim=1)))

    def loss(self, outputs: torch.Tensor, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Structure loss of the upsampled logits against masks (B, 1, H, W) with ignore."""
        logits = F.interpolate(
            outputs.float(), size=masks.shape[-2:], mode="bilinear", align_corners=False
        )
        return structure_loss(logits, masks)

    def scores(self, outputs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """Foreground probability (B, 1, *size): the only score this head has."""
        logits = F.interpolate(outputs.float(), size=size, mode="bilinear", align_corners=False)
        return torch.sigmoid(logits)

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """The (averaged) score is already the foreground probability."""
        return scores.clamp(0, 1)
