"""Hungarian matcher: planted assignments, optimality and the pairwise costs."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F

from weft_lightning.models.heads.criterion import dice_loss
from weft_lightning.models.heads.matcher import HungarianMatcher, pairwise_dice, pairwise_sigmoid_ce


def planted_case() -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    """Six queries; query 4 predicts target 0 (a background segment) and query 1 target 1."""
    torch.manual_seed(0)
    target_masks = torch.zeros(2, 32, 32)
    target_masks[1, 8:20, 4:28] = 1.0
    target_masks[0] = 1 - target_masks[1]
    logits = torch.randn(6, 3) * 0.1
    masks = torch.randn(6, 8, 8) * 0.1
    small = F.interpolate(target_masks[:, None], size=(8, 8), mode="nearest")[:, 0]
    logits[4, 0], masks[4] = 5.0, 20 * small[0] - 10
    logits[1, 1], masks[1] = 5.0, 20 * small[1] - 10
    return logits, masks, {"labels": torch.tensor([0, 1]), "masks": target_masks}


def test_matcher_finds_the_planted_assignment() -> None:
    logits, masks, target = planted_case()
    matcher = HungarianMatcher(num_points=512)
    [(queries, targets)] = matcher(logits[None], masks[None], [target])
    assert dict(zip(targets.tolist(), queries.tolist(), strict=True)) == {0: 4, 1: 1}
    swapped = {"labels": target["labels"].flip(0), "masks": target["masks"].flip(0)}
    [(queries, targets)] = matcher(logits[None], masks[None], [swapped])
    assert dict(zip(targets.tolist(), queries.tolist(), strict=True)) == {0: 1, 1: 4}


def test_matcher_assignment_is_optimal_for_its_costs() -> None:
    torch.manual_seed(1)
    logits, masks = torch.randn(4, 3), torch.randn(4, 8, 8)
    target = {"labels": torch.tensor([0, 1]), "masks": (torch.rand(2, 16, 16) > 0.5).float()}
    matcher = HungarianMatcher(num_points=128)
    torch.manual_seed(7)
    cost = matcher.cost_matrix(logits, masks, target)
    torch.manual_seed(7)
    [(queries, targets)] = matcher(logits[None], masks[None], [target])
    found = cost[queries, targets].sum()
    best = min(cost[list(p), [0, 1]].sum() for p in itertools.permutations(range(4), 2))
    assert torch.isclose(found, best)


def test_pairwise_costs_match_the_per_pair_losses() -> None:
    torch.manual_seed(2)
    logits = torch.randn(3, 50)
    targets = (torch.rand(2, 50) > 0.5).float()
    ce = pairwise_sigmoid_ce(logits, targets)
    dice = pairwise_dice(logits, targets)
    for i, j in itertools.product(range(3), range(2)):
        expected_ce = F.binary_cross_entropy_with_logits(logits[i], targets[j])
        assert torch.isclose(ce[i, j], expected_ce, atol=1e-5)
        assert torch.isclose(dice[i, j], dice_loss(logits[i : i + 1], targets[j : j + 1], 1.0))


def test_images_without_targets_match_nothing() -> None:
    logits, masks, _ = planted_case()
    empty = {"labels": torch.zeros(0, dtype=torch.long), "masks": torch.zeros(0, 32, 32)}
    [(queries, targets)] = HungarianMatcher(num_points=64)(logits[None], masks[None], [empty])
    assert queries.numel() == 0 and targets.numel() == 0
