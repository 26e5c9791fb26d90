"""Point sampling for mask losses and matching (PointRend-style).

Mask losses on a few thousand sampled points instead of full-resolution masks cut memory by
orders of magnitude; importance sampling puts most points where the prediction is uncertain.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def point_sample(maps: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``maps`` (N, C, H, W) at ``coords`` (N, P, 2) normalised (x, y) in [0, 1].

    Returns (N, C, P).
    """
    grid = 2.0 * coords.unsqueeze(2) - 1.0
    return F.grid_sample(maps, grid.to(maps.dtype), align_corners=False).squeeze(3)


def uncertainty(logits: torch.Tensor) -> torch.Tensor:
    """Uncertainty of binary logits: highest (0) at the decision boundary, -|logit|."""
    return -logits.abs()


def importance_points(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
) -> torch.Tensor:
    """Points (N, num_points, 2) for mask logits (N, 1, H, W): mostly uncertain, some uniform.

    ``oversample_ratio * num_points`` candidates are drawn uniformly; the
    ``importance_sample_ratio * num_points`` most uncertain are kept and the rest are drawn
    uniformly again, so confident regions still contribute.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"oversample_ratio={oversample_ratio} must be >= 1 and importance_sample_ratio="
            f"{importance_sample_ratio} must lie in [0, 1]."
        )
    count = logits.shape[0]
    num_candidates = int(num_points * oversample_ratio)
    candidates = torch.rand(count, num_candidates, 2, device=logits.device)
    scores = uncertainty(point_sample(logits, candidates))[:, 0]
    num_uncertain = min(int(importance_sample_ratio * num_points), num_candidates)
    keep = scores.topk(num_uncertain, dim=1).indices
    chosen = candidates.gather(1, keep[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        extra = torch.rand(count, num_random, 2, device=logits.device)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen
