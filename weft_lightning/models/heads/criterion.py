"""Set-prediction losses of Mask2Former: class cross-entropy, mask BCE and dice on sampled points.

Queries are first matched one-to-one to target segments (:class:`HungarianMatcher`); matched
queries learn their segment's class and mask, unmatched queries learn the "no object" class
(down-weighted). Mask losses use importance-sampled points, and every decoder layer's
prediction is supervised the same way (deep supervision).
"""

from __future__ import annotations

from typing import cast

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from weft_lightning.models.heads.matcher import HungarianMatcher, Target
from weft_lightning.models.heads.point_sampling import (
    importance_points,
    point_sample,
    valid_weights,
)

Outputs = dict[str, torch.Tensor]


def sigmoid_ce_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Binary cross-entropy averaged over points (N, P) (over the points of weight 1 when
    ``weights`` are given), summed over masks, divided by num_masks."""
    loss = F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
    if weights is None:
        return loss.mean(1).sum() / num_masks
    return ((loss * weights).sum(1) / weights.sum(1).clamp_min(1.0)).sum() / num_masks


def dice_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    num_masks: float,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Soft dice loss with +1 smoothing per mask (N, P) (over the points of weight 1 when
    ``weights`` are given), summed and divided by num_masks."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, targets = probs * weights, targets * weights
    numerator = 2 * (probs * targets).sum(-1)
    denominator = probs.sum(-1) + targets.sum(-1)
    return (1 - (numerator + 1) / (denominator + 1)).sum() / num_masks


class SetCriterion(nn.Module):
    """Mask2Former losses for one prediction set and its auxiliary (deep-supervision) sets.

    Args:
        num_classes: target classes; index ``num_classes`` is "no object".
        matcher: assigns queries to targets.
        class_weight, mask_weight, dice_weight: loss weights.
        no_object_weight: cross-entropy weight of the "no object" class.
        num_points: points per mask for the mask losses.
        oversample_ratio, importance_sample_ratio: importance sampling of those points.
    """

    class_weights: torch.Tensor  # non-persistent buffer

    def __init__(
        self,
        num_classes: int,
        matcher: HungarianMatcher,
        class_weight: float = 2.0,
        mask_weight: float = 5.0,
        dice_weight: float = 5.0,
        no_object_weight: float = 0.1,
        num_points: int = 12544,
        oversample_ratio: float = 3.0,
        importance_sample_ratio: float = 0.75,
    ) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.matcher = matcher
        self.weights = {"loss_ce": class_weight, "loss_mask": mask_weight, "loss_dice": dice_weight}
        self.num_points = num_points
        self.oversample_ratio = oversample_ratio
        self.importance_sample_ratio = importance_sample_ratio
        class_weights = torch.ones(num_classes + 1)
        class_weights[-1] = no_object_weight
        self.register_buffer("class_weights", class_weights, persistent=False)

    def forward(self, outputs: dict, targets: list[Target]) -> dict[str, torch.Tensor]:
        """Losses in float32: ``loss`` (weighted sum over all layers), the last layer's
        unweighted ``loss_ce`` / ``loss_mask`` / ``loss_dice`` and ``loss_deep`` (the weighted
        sum over the earlier, deeply supervised layers)."""
        num_masks = _global_count(targets, outputs["pred_logits"].device)
        parts = self.layer_losses(outputs, targets, num_masks)
        final = self.weighted(parts)
        aux = [
            self.weighted(self.layer_losses(layer, targets, num_masks))
            for layer in outputs.get("aux_outputs", [])
        ]
        aux_total = torch.stack(aux).sum() if aux else final.new_zeros(())
        reported = {k: v.detach() for k, v in parts.items()}
        return {"loss": final + aux_total, **reported, "loss_deep": aux_total.detach()}

    def weighted(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """Weighted sum of one layer's losses."""
        return cast(torch.Tensor, sum(self.weights[k] * v for k, v in losses.items()))

    def layer_losses(
        self, outputs: Outputs, targets: list[Target], num_masks: float
    ) -> dict[str, torch.Tensor]:
        """Unweighted class, mask and dice losses of one prediction set."""
        logits = outputs["pred_logits"].float()
        masks = outputs["pred_masks"].float()
        indices = self.matcher(logits, masks, targets)
        return {
            "loss_ce": self.class_loss(logits, targets, indices),
            **self.mask_losses(masks, targets, indices, num_masks),
        }

    def class_loss(
        self,
        logits: torch.Tensor,
        targets: list[Target],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
    ) -> torch.Tensor:
        """Weighted cross-entropy over all queries; unmatched ones target "no object"."""
        classes = torch.full(
            logits.shape[:2], self.num_classes, dtype=torch.long, device=logits.device
        )
        for image, (query_idx, target_idx) in enumerate(indices):
            classes[image, query_idx] = targets[image]["labels"][target_idx]
        return F.cross_entropy(logits.transpose(1, 2), classes, self.class_weights)

    def mask_losses(
        self,
        masks: torch.Tensor,
        targets: list[Target],
        indices: list[tuple[torch.Tensor, torch.Tensor]],
        num_masks: float,
    ) -> dict[str, torch.Tensor]:
        """Mask BCE and dice of matched queries on importance-sampled points."""
        images = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
        pred = masks[images, torch.cat([q for q, _ in indices])]  # one gather: one backward
        if pred.shape[0] == 0:
            zero = masks.sum() * 0.0
            return {"loss_mask": zero, "loss_dice": zero.clone()}
        true = torch.cat([targets[i]["masks"][t] for i, (_, t) in enumerate(indices)])
        ignored = _matched_ignored(targets, indices)
        pred = pred[:, None]
        with torch.no_grad():
            coords = importance_points(
                pred, self.num_points, self.oversample_ratio, self.importance_sample_ratio, ignored
            )
            labels = point_sample(true[:, None].float(), coords)[:, 0]
            weights = None if ignored is None else valid_weights(ignored, coords)
        point_logits = point_sample(pred, coords)[:, 0]
        return {
            "loss_mask": sigmoid_ce_loss(point_logits, labels, num_masks, weights),
            "loss_dice": dice_loss(point_logits, labels, num_masks, weights),
        }


def _matched_ignored(
    targets: list[Target], indices: list[tuple[torch.Tensor, torch.Tensor]]
) -> torch.Tensor | None:
    """(N, 1, H, W) ignore maps of the matched segments, or None when no image has any."""
    if all(t.get("ignored") is None for t in targets):
        return None
    maps = []
    for image, (_, target_idx) in enumerate(indices):
        ignored = targets[image].get("ignored")
        if ignored is None:
            ignored = targets[image]["masks"].new_zeros(targets[image]["masks"].shape[-2:])
        maps.append(ignored[None, None].expand(len(target_idx), -1, -1, -1))
    return torch.cat(maps)


def _global_count(targets: list[Target], device: torch.device) -> float:
    """Number of target segments, averaged over processes under DDP, at least 1."""
    count = torch.tensor(
        float(sum(len(t["labels"]) for t in targets)), dtype=torch.float32, device=device
    )
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        world = dist.get_world_size()
    return max(count.item() / world, 1.0)
