"""Point sampling for mask losses and matching (PointRend-style).

Mask losses on a few thousand sampled points instead of full-resolution masks cut memory by
orders of magnitude; importance sampling puts most points where the prediction is uncertain.

Ignored pixels (padding) are never sampled where it can be avoided: points are drawn inside the
bounding box of the valid pixels, and :func:`valid_weights` gives a zero weight to any point
whose bilinear sample would touch an ignored pixel.
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


def valid_box(valid: torch.Tensor) -> torch.Tensor:
    """Normalised box (x0, y0, x1, y1) in [0, 1] around the True pixels of ``valid`` (H, W)."""
    rows = valid.any(dim=1).nonzero()
    cols = valid.any(dim=0).nonzero()
    if len(rows) == 0:
        return valid.new_tensor([0.0, 0.0, 1.0, 1.0], dtype=torch.float32)
    height, width = valid.shape
    return torch.stack(
        [
            cols[0, 0] / width,
            rows[0, 0] / height,
            (cols[-1, 0] + 1) / width,
            (rows[-1, 0] + 1) / height,
        ]
    ).float()


def uniform_points(
    count: int, num_points: int, device: torch.device, boxes: torch.Tensor | None = None
) -> torch.Tensor:
    """``count`` sets of ``num_points`` uniform points (count, P, 2), inside ``boxes`` (count, 4)
    when given."""
    points = torch.rand(count, num_points, 2, device=device)
    if boxes is None:
        return points
    return boxes[:, None, :2] + points * (boxes[:, None, 2:] - boxes[:, None, :2])


def valid_weights(ignored: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """(N, P) weights: 1 where the bilinear sample of a point sees no ignored pixel, else 0.

    ``ignored`` is (N, 1, H, W) float, 1 on ignored pixels.
    """
    return (point_sample(ignored, coords)[:, 0] == 0).float()


def importance_points(
    logits: torch.Tensor,
    num_points: int,
    oversample_ratio: float = 3.0,
    importance_sample_ratio: float = 0.75,
    ignored: torch.Tensor | None = None,
) -> torch.Tensor:
    """Points (N, num_points, 2) for mask logits (N, 1, H, W): mostly uncertain, some uniform.

    ``oversample_ratio * num_points`` candidates are drawn uniformly; the
    ``importance_sample_ratio * num_points`` most uncertain are kept and the rest are drawn
    uniformly again, so confident regions still contribute. With ``ignored`` (N, 1, H', W'),
    1 on pixels no loss may see, points are drawn inside the valid pixels' bounding box and
    candidates touching ignored pixels are chosen last.
    """
    if oversample_ratio < 1 or not 0 <= importance_sample_ratio <= 1:
        raise ValueError(
            f"oversample_ratio={oversample_ratio} must be >= 1 and importance_sample_ratio="
            f"{importance_sample_ratio} must lie in [0, 1]."
        )
    count = logits.shape[0]
    boxes = None
    if ignored is not None:
        boxes = torch.stack([valid_box(mask[0] == 0) for mask in ignored])
    num_candidates = int(num_points * oversample_ratio)
    candidates = uniform_points(count, num_candidates, logits.device, boxes)
    scores = uncertainty(point_sample(logits, candidates))[:, 0]
    if ignored is not None:
        scores = scores.masked_fill(valid_weights(ignored, candidates) == 0, float("-inf"))
    num_uncertain = min(int(importance_sample_ratio * num_points), num_candidates)
    keep = scores.topk(num_uncertain, dim=1).indices
    chosen = candidates.gather(1, keep[..., None].expand(-1, -1, 2))
    num_random = num_points - num_uncertain
    if num_random > 0:
        extra = uniform_points(count, num_random, logits.device, boxes)
        chosen = torch.cat([chosen, extra], dim=1)
    return chosen
