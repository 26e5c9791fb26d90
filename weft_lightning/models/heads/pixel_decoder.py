"""Mask2Former pixel decoder: deformable-attention encoder over the coarse levels + FPN fusion.

The three coarsest pyramid levels are projected to a common width, refined jointly by a stack
of multi-scale deformable-attention encoder layers, and the result is fused top-down with the
finer level(s) to produce stride-4 mask features. The refined coarse levels are also returned
for the masked-attention transformer decoder.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from weft_lightning.models.deform_attn import MSDeformAttn, flatten_levels, grid_reference_points
from weft_lightning.models.heads.position_encoding import SinePositionEncoding


def conv_norm(
    in_channels: int, out_channels: int, kernel_size: int, groups: int, relu: bool = False
) -> nn.Sequential:
    """Bias-free convolution + GroupNorm (+ ReLU), Kaiming-uniform (a=1) initialised."""
    conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
    nn.init.kaiming_uniform_(conv.weight, a=1)
    layers = [conv, nn.GroupNorm(groups, out_channels)]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class DeformEncoderLayer(nn.Module):
    """Post-norm encoder layer: multi-scale deformable self-attention then a ReLU FFN."""

    def __init__(
        self, dim: int, ffn_dim: int, heads: int, points: int, levels: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.attn = MSDeformAttn(dim, levels, heads, points)
        self.norm1 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn_dim)
        self.linear2 = nn.Linear(ffn_dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        src: torch.Tensor,
        pos: torch.Tensor,
        reference_points: torch.Tensor,
        shapes: torch.Tensor,
        start_index: torch.Tensor,
    ) -> torch.Tensor:
        """Refine flattened multi-level tokens ``src`` (B, L, C) with position encodings ``pos``."""
        attended = self.attn(src + pos, reference_points, src, shapes, start_index)
        src = self.norm1(src + self.dropout(attended))
        hidden = self.dropout(F.relu(self.linear1(src)))
        return self.norm2(src + self.dropout(self.linear2(hidden)))


class DeformPixelDecoder(nn.Module):
    """Pyramid (fine to coarse) -> stride-4 mask features + refined coarse levels.

    Args:
        in_channels: channels of the input levels, finest first (strides 4, 8, 16, 32).
        conv_dim: common width of the encoder and FPN.
        mask_dim: width of the mask features.
        enc_layers, enc_ffn, enc_heads, enc_points: deformable encoder size.
        num_levels: how many of the coarsest levels go through the encoder.
        norm_groups: GroupNorm groups; must divide ``conv_dim``.
        dropout: encoder dropout.
    """

    def __init__(
        self,
        in_channels: list[int],
        conv_dim: int = 96,
        mask_dim: int = 96,
        enc_layers: int = 6,
        enc_ffn: int = 320,
        enc_heads: int = 8,
        enc_points: int = 4,
        num_levels: int = 3,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_sizes(in_channels, conv_dim, num_levels, norm_groups)
        self.grad_checkpointing = False  # recompute each encoder layer in the backward pass
        coarse = list(reversed(in_channels[-num_levels:]))  # coarsest first
        self.fine_channels = list(reversed(in_channels[:-num_levels]))  # coarse-to-fine order
        self.input_proj = nn.ModuleList(
            self._input_projection(c, conv_dim, norm_groups) for c in coarse
        )
        self.level_embed = nn.Parameter(torch.empty(num_levels, conv_dim))
        self.position = SinePositionEncoding(conv_dim // 2, normalize=True)
        self.encoder = nn.ModuleList(
            DeformEncoderLayer(conv_dim, enc_ffn, enc_heads, enc_points, num_levels, dropout)
            for _ in range(enc_layers)
        )
        self.lateral = nn.ModuleList(
            conv_norm(c, conv_dim, 1, norm_groups) for c in self.fine_channels
        )
        self.output = nn.ModuleList(
            conv_norm(conv_dim, conv_dim, 3, norm_groups, relu=True) for _ in self.fine_channels
        )
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, 1)
        self.num_levels = num_levels
        self.mask_dim = mask_dim
        self._reset_parameters()

    @staticmethod
    def _input_projection(channels: int, dim: int, groups: int) -> nn.Sequential:
        conv = nn.Conv2d(channels, dim, 1)
        nn.init.xavier_uniform_(conv.weight)
        assert conv.bias is not None
        nn.init.zeros_(conv.bias)
        return nn.Sequential(conv, nn.GroupNorm(groups, dim))

    def _reset_parameters(self) -> None:
        for param in self.encoder.parameters():
            if param.dim() > 1:
                nn.init.xavier_uniform_(param)
        for module in self.encoder.modules():
            if isinstance(module, MSDeformAttn):
                module.reset_parameters()
        nn.init.normal_(self.level_embed)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        assert self.mask_features.bias is not None
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Return ``(mask_features (B, mask_dim, H/4, W/4), [coarse maps, coarsest first])``."""
        coarse = list(reversed(features[-self.num_levels :]))
        maps = [proj(f) for proj, f in zip(self.input_proj, coarse, strict=True)]
        refined = self.encode(maps)
        fine = list(reversed(features[: -self.num_levels]))
        out = refined[-1]
        for lateral, output, feature in zip(self.lateral, self.output, fine, strict=True):
            top_down = F.interpolate(
                out, size=feature.shape[-2:], mode="bilinear", align_corners=False
            )
            out = output(lateral(feature) + top_down)
        return self.mask_features(out), refined

    def encode(self, maps: list[torch.Tensor]) -> list[torch.Tensor]:
        """Run the deformable encoder jointly over ``maps`` and split the result per level."""
        src, shapes, start = flatten_levels(maps)
        pos = torch.cat(
            [
                (self.position(m) + self.level_embed[i][None, :, None, None]).flatten(2)
                for i, m in enumerate(maps)
            ],
            dim=2,
        ).transpose(1, 2)
        sizes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
        reference = grid_reference_points(sizes, device=src.device).expand(src.shape[0], -1, -1, -1)
        pos = pos.to(src.dtype)
        for layer in self.encoder:
            if self.grad_checkpointing and torch.is_grad_enabled():
                src = checkpoint(layer, src, pos, reference, shapes, start, use_reentrant=False)
            else:
                src = layer(src, pos, reference, shapes, start)
        chunks = src.split([h * w for h, w in sizes], dim=1)
        return [
            chunk.transpose(1, 2).reshape(src.shape[0], -1, h, w)
            for chunk, (h, w) in zip(chunks, sizes, strict=True)
        ]


def _check_sizes(in_channels: list[int], conv_dim: int, num_levels: int, groups: int) -> None:
    if len(in_channels) < num_levels:
        raise ValueError(
            f"The pixel decoder needs at least {num_levels} input levels, got in_channels="
            f"{in_channels}; give the backbone's four pyramid widths."
        )
    if conv_dim % groups:
        raise ValueError(
            f"hidden_dim={conv_dim} must be divisible by norm_groups={groups} (GroupNorm); "
            "change one of them."
        )
