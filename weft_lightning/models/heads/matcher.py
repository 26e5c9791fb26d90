"""Hungarian matching of predicted queries to ground-truth segments (Mask2Former).

Each target segment is assigned to exactly one query by minimising a weighted sum of a class
cost, a mask binary cross-entropy cost and a mask dice cost, the mask costs being evaluated on
the same random points for every pair; the assignment itself is
``scipy.optimize.linear_sum_assignment``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import nn

from weft_lightning.models.heads.point_sampling import (
    point_sample,
    uniform_points,
    valid_box,
    valid_weights,
)

Target = dict[str, torch.Tensor]


def pairwise_sigmoid_ce(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean binary cross-entropy of every prediction row (Q, P) against every target row (T, P),
    over the points whose ``weights`` (P,) are 1 (all points without weights)."""
    positive = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits), reduction="none")
    negative = F.binary_cross_entropy_with_logits(
        logits, torch.zeros_like(logits), reduction="none"
    )
    if weights is None:
        return (positive @ targets.T + negative @ (1 - targets).T) / logits.shape[1]
    positive, negative = positive * weights, negative * weights
    cost = positive @ targets.T + negative @ (1 - targets).T
    return cost / weights.sum().clamp_min(1.0)


def pairwise_dice(
    logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Dice loss (1 - soft dice, +1 smoothing) of every prediction row against every target row,
    over the points whose ``weights`` (P,) are 1."""
    probs = logits.sigmoid()
    if weights is not None:
        probs, targets = probs * weights, targets * weights
    numerator = 2 * probs @ targets.T
    denominator = probs.sum(-1)[:, None] + targets.sum(-1)[None, :]
    return 1 - (numerator + 1) / (denominator + 1)


class HungarianMatcher(nn.Module):
    """One-to-one assignment of queries to target segments, per image.

    Args:
        cost_class: weight of the class cost (minus the predicted probability of the class).
        cost_mask: weight of the mask sigmoid cross-entropy cost.
        cost_dice: weight of the mask dice cost.
        num_points: random points on which the mask costs are evaluated.
    """

    def __init__(
        self,
        cost_class: float = 2.0,
        cost_mask: float = 5.0,
        cost_dice: float = 5.0,
        num_points: int = 12544,
    ) -> None:
        super().__init__()
        if cost_class == 0 and cost_mask == 0 and cost_dice == 0:
            raise ValueError("HungarianMatcher needs at least one non-zero cost weight.")
        self.cost_class = cost_class
        self.cost_mask = cost_mask
        self.cost_dice = cost_dice
        self.num_points = num_points

    @torch.no_grad()
    def forward(
        self, pred_logits: torch.Tensor, pred_masks: torch.Tensor, targets: list[Target]
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Match predictions (B, Q, K+1) / (B, Q, h, w) to ``targets``.

        Each target is ``{"labels": (T,) long, "masks": (T, H, W) float}``, with
        ``"ignored"`` (H, W) float (1 on ignored pixels) when the image has any. Returns per image
        ``(query_index, target_index)`` long tensors of equal length ``min(Q, T)``.
        """
        return [
            self._match_one(logits.float(), masks.float(), target)
            for logits, masks, target in zip(pred_logits, pred_masks, targets, strict=True)
        ]

    def cost_matrix(
        self, logits: torch.Tensor, masks: torch.Tensor, target: Target
    ) -> torch.Tensor:
        """Cost (Q, T) of assigning each query to each target segment of one image.

        The mask costs use ``num_points`` random points; with ``target["ignored"]`` (H, W), 1
        on ignored pixels, the points are drawn inside the valid region and points touching
        ignored pixels count for nothing.
        """
        labels = target["labels"]
        probs = logits.softmax(-1)
        cost = -self.cost_class * probs[:, labels]
        ignored = target.get("ignored")
        boxes = None if ignored is None else valid_box(ignored == 0)[None]
        coords = uniform_points(1, self.num_points, masks.device, boxes)
        tgt = point_sample(target["masks"][:, None].float(), coords.expand(len(labels), -1, -1))
        out = point_sample(masks[:, None], coords.expand(masks.shape[0], -1, -1))
        tgt, out = tgt[:, 0], out[:, 0]
        weights = None if ignored is None else valid_weights(ignored[None, None], coords)[0]
        cost = cost + self.cost_mask * pairwise_sigmoid_ce(out, tgt, weights)
        return cost + self.cost_dice * pairwise_dice(out, tgt, weights)

    def _match_one(
        self, logits: torch.Tensor, masks: torch.Tensor, target: Target
    ) -> tuple[torch.Tensor, torch.Tensor]:
        if len(target["labels"]) == 0:
            empty = torch.empty(0, dtype=torch.long, device=logits.device)
            return empty, empty.clone()
        cost = self.cost_matrix(logits, masks, target)
        rows, cols = linear_sum_assignment(cost.cpu().numpy())
        device = logits.device
        return (
            torch.as_tensor(rows, dtype=torch.long, device=device),
            torch.as_tensor(cols, dtype=torch.long, device=device),
        )
