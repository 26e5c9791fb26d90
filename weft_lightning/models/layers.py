"""Small layers and layout helpers shared by the backbones, the WEFT branch and the heads.

Layouts: a *map* is (B, C, H, W); *tokens* are (B, N, C) with N = H * W in row-major order;
several maps of a pyramid are *joined* as one token sequence, level after level.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "conv_bn_relu",
    "join_maps",
    "map_to_tokens",
    "resize_bilinear",
    "split_maps",
    "tokens_to_map",
]

Shapes = Sequence[tuple[int, int]]


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, D) tokens on a ``grid`` -> (B, D, gh, gw) map."""
    batch, _, dim = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, dim, grid[0], grid[1])


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map -> (B, h*w, D) tokens."""
    return feature_map.flatten(2).transpose(1, 2)


def split_maps(tokens: torch.Tensor, shapes: Shapes) -> list[torch.Tensor]:
    """(B, sum(h*w), C) tokens -> one (B, C, h, w) map per shape."""
    parts = tokens.split([h * w for h, w in shapes], dim=1)
    return [tokens_to_map(part, shape) for part, shape in zip(parts, shapes, strict=True)]


def join_maps(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Maps (B, C, h_l, w_l) -> (B, sum(h_l*w_l), C) tokens; inverse of :func:`split_maps`."""
    return torch.cat([map_to_tokens(m) for m in maps], dim=1)


def resize_bilinear(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Bilinear resize to ``size`` (half-pixel centres, no antialiasing, as OpenCV's
    INTER_LINEAR and mmseg's ``resize``); the tensor itself when it already has that size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def conv_bn_relu(
    in_channels: int,
    out_channels: int,
    kernel_size: int = 1,
    stride: int = 1,
    groups: int = 1,
    bias: bool = True,
    conv: nn.Module | None = None,
) -> nn.Sequential:
    """Convolution (or the given ``conv``, e.g. a wavelet convolution) + BatchNorm + ReLU."""
    if conv is None:
        conv = nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            stride,
            kernel_size // 2,
            groups=groups,
            bias=bias,
        )
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels), nn.ReLU(inplace=True))
