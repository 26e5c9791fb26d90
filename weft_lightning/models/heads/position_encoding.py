"""Sine position encoding of 2-D feature maps (DETR / Mask2Former style).

Attention layers are permutation-invariant, so every map position gets a fixed encoding of its
normalised (y, x) location made of sines and cosines at geometrically spaced frequencies.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinePositionEncoding(nn.Module):
    """Fixed 2-D sine/cosine encoding with ``2 * num_pos_feats`` channels (y half, then x half).

    Args:
        num_pos_feats: channels per axis; use half the model width.
        temperature: base of the geometric frequency progression.
        normalize: map coordinates to ``(0, scale]`` so the encoding does not depend on map size.
        scale: range of the normalised coordinates (2π covers one full period).
    """

    def __init__(
        self,
        num_pos_feats: int = 64,
        temperature: float = 10000.0,
        normalize: bool = True,
        scale: float = 2 * math.pi,
    ) -> None:
        super().__init__()
        if num_pos_feats % 2:
            raise ValueError(
                f"num_pos_feats={num_pos_feats} must be even (sine and cosine pairs); "
                "use a model width divisible by 4."
            )
        self.num_pos_feats = num_pos_feats
        self.temperature = temperature
        self.normalize = normalize
        self.scale = scale

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        """Encoding (B, 2 * num_pos_feats, H, W) for a map (B, C, H, W), in float32."""
        batch, _, height, width = feature_map.shape
        device = feature_map.device
        y = torch.arange(1, height + 1, dtype=torch.float32, device=device)
        x = torch.arange(1, width + 1, dtype=torch.float32, device=device)
        if self.normalize:
            eps = 1e-6
            y = y / (height + eps) * self.scale
            x = x / (width + eps) * self.scale
        exponent = 2 * (torch.arange(self.num_pos_feats, device=device) // 2) / self.num_pos_feats
        freqs = self.temperature ** exponent.float()
        pos_y = _interleave(y[:, None] / freqs)  # (H, F)
        pos_x = _interleave(x[:, None] / freqs)  # (W, F)
        grid_y = pos_y[:, None, :].expand(height, width, -1)
        grid_x = pos_x[None, :, :].expand(height, width, -1)
        encoding = torch.cat([grid_y, grid_x], dim=-1).permute(2, 0, 1)
        return encoding.unsqueeze(0).expand(batch, -1, -1, -1)


def _interleave(angles: torch.Tensor) -> torch.Tensor:
    """(L, F) angles -> (L, F) with sin on even and cos on odd channels."""
    return torch.stack([angles[:, 0::2].sin(), angles[:, 1::2].cos()], dim=-1).flatten(1)
