"""Multi-scale deformable attention (Deformable-DETR) in pure PyTorch.

Each query looks at ``n_points`` learned offsets around its reference point on each of
``n_levels`` feature maps and averages the bilinearly sampled values with learned weights.
Sampling uses :func:`torch.nn.functional.grid_sample`, so it runs on any device without a custom
kernel; it is computed in float32 (also under bf16 autocast) because sampling locations in bf16
are off by up to half a pixel on large maps. With ``checkpoint_samples`` the sampled values are
recomputed in the backward pass instead of being kept, as the reference CUDA kernel does.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from weft_lightning.models.layers import join_maps


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention with a value width of ``d_model * ratio``.

    Args:
        d_model: width of queries, inputs and output.
        n_levels: number of feature levels in ``input_flatten``.
        n_heads: attention heads; the value width must be divisible by it.
        n_points: sampling points per head and level.
        ratio: value width as a fraction of ``d_model`` (0.5 in ViT-Adapter style injectors).
        checkpoint_samples: in training, recompute the sampled values in the backward pass
            instead of keeping them (less memory, one more sampling pass). Leave it off inside
            a layer that is checkpointed as a whole (WEFT's injectors and Mask2Former's encoder
            layers under gradient checkpointing): that checkpoint already keeps no samples, and
            the option would sample a third time.
    """

    def __init__(
        self,
        d_model: int = 256,
        n_levels: int = 4,
        n_heads: int = 8,
        n_points: int = 4,
        ratio: float = 1.0,
        checkpoint_samples: bool = False,
    ) -> None:
        super().__init__()
        value_dim = int(d_model * ratio)
        if value_dim % n_heads:
            raise ValueError(
                f"MSDeformAttn value width d_model*ratio={value_dim} must be divisible by "
                f"n_heads={n_heads}; change d_model, ratio or n_heads."
            )
        self.d_model = d_model
        self.n_levels = n_levels
        self.n_heads = n_heads
        self.n_points = n_points
        self.value_dim = value_dim
        self.checkpoint_samples = checkpoint_samples
        self.sampling_offsets = nn.Linear(d_model, n_heads * n_levels * n_points * 2)
        self.attention_weights = nn.Linear(d_model, n_heads * n_levels * n_points)
        self.value_proj = nn.Linear(d_model, value_dim)
        self.output_proj = nn.Linear(value_dim, d_model)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Deformable-DETR init: offsets start on a circle per head, uniform attention."""
        nn.init.constant_(self.sampling_offsets.weight, 0.0)
        angles = torch.arange(self.n_heads, dtype=torch.float32) * (2.0 * math.pi / self.n_heads)
        directions = torch.stack([angles.cos(), angles.sin()], dim=-1)
        directions = directions / directions.abs().max(dim=-1, keepdim=True).values
        scale = torch.arange(1, self.n_points + 1, dtype=torch.float32).view(1, 1, -1, 1)
        bias = directions.view(self.n_heads, 1, 1, 2) * scale
        bias = bias.expand(self.n_heads, self.n_levels, self.n_points, 2)
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(bias.reshape(-1))
        nn.init.constant_(self.attention_weights.weight, 0.0)
        nn.init.constant_(self.attention_weights.bias, 0.0)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.constant_(self.value_proj.bias, 0.0)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.constant_(self.output_proj.bias, 0.0)

    def forward(
        self,
        query: torch.Tensor,
        reference_points: torch.Tensor,
        input_flatten: torch.Tensor,
        input_spatial_shapes: torch.Tensor,
        input_level_start_index: torch.Tensor,
        input_padding_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend from ``query`` (B, Lq, C) to the flattened levels ``input_flatten`` (B, Lin, C).

        ``reference_points`` is (B, Lq, L, 2) with normalised (x, y) in [0, 1] (the level axis may
        be 1 to share points across levels) or (B, Lq, L, 4) boxes (cx, cy, w, h).
        ``input_spatial_shapes`` is (L, 2) long (H, W); ``input_padding_mask`` (B, Lin) is True
        where an input position is padding. Returns (B, Lq, C).
        """
        batch, num_queries, _ = query.shape
        _check_layout(input_flatten, input_spatial_shapes, self.n_levels)
        value = self.value_proj(input_flatten)
        if input_padding_mask is not None:
            value = value.masked_fill(input_padding_mask[..., None], 0.0)
        value = value.view(batch, -1, self.n_heads, self.value_dim // self.n_heads)
        offsets = self.sampling_offsets(query).view(
            batch, num_queries, self.n_heads, self.n_levels, self.n_points, 2
        )
        weights = self.attention_weights(query).view(
            batch, num_queries, self.n_heads, self.n_levels * self.n_points
        )
        weights = weights.float().softmax(-1)
        weights = weights.view(batch, num_queries, self.n_heads, self.n_levels, self.n_points)
        locations = sampling_locations(reference_points, offsets, input_spatial_shapes)
        if self.checkpoint_samples and torch.is_grad_enabled() and value.requires_grad:
            # like the reference CUDA kernel, keep value and locations, not the samples: the
            # sampled points (B * heads, d, Lq, L * P) would be the largest activation here
            output = checkpoint(
                deform_attn_core, value, input_spatial_shapes, locations, weights,
                use_reentrant=False,
            )  # fmt: skip
        else:
            output = deform_attn_core(value, input_spatial_shapes, locations, weights)
        return self.output_proj(output.to(query.dtype))


def sampling_locations(
    reference_points: torch.Tensor, offsets: torch.Tensor, spatial_shapes: torch.Tensor
) -> torch.Tensor:
    """Normalised sampling locations (B, Lq, heads, L, points, 2) in float32."""
    reference_points = reference_points.float()
    offsets = offsets.float()
    if reference_points.shape[-1] == 2:
        normaliser = torch.stack([spatial_shapes[:, 1], spatial_shapes[:, 0]], dim=-1)
        normaliser = normaliser.to(device=offsets.device, dtype=torch.float32)
        return (
            reference_points[:, :, None, :, None, :]
            + offsets / normaliser[None, None, None, :, None, :]
        )
    if reference_points.shape[-1] == 4:
        centres = reference_points[:, :, None, :, None, :2]
        sizes = reference_points[:, :, None, :, None, 2:]
        return centres + offsets / offsets.shape[4] * sizes * 0.5
    raise ValueError(
        "reference_points must end in 2 (x, y) or 4 (cx, cy, w, h) coordinates, got shape "
        f"{tuple(reference_points.shape)}."
    )


def deform_attn_core(
    value: torch.Tensor,
    spatial_shapes: torch.Tensor,
    locations: torch.Tensor,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Sample ``value`` (B, Lin, heads, d) at ``locations`` and sum with ``weights``.

    ``locations`` is (B, Lq, heads, L, P, 2) in [0, 1], ``weights`` (B, Lq, heads, L, P).
    Returns (B, Lq, heads * d) in float32.
    """
    batch, _, heads, head_dim = value.shape
    _, num_queries, _, levels, points, _ = locations.shape
    sizes = [int(h) * int(w) for h, w in spatial_shapes.tolist()]
    value_levels = value.float().split(sizes, dim=1)
    # split into levels by unbind, whose backward stacks the level gradients into one tensor
    grids = (2.0 * locations - 1.0).unbind(3)
    # (B, Lq, heads, L, P) -> L x (B*heads, 1, Lq, P)
    weights = weights.float().transpose(1, 2).reshape(batch * heads, 1, num_queries, levels, points)
    level_weights = weights.unbind(3)
    output = None
    for level, (height, width) in enumerate(spatial_shapes.tolist()):
        # (B, HW, heads, d) -> (B*heads, d, H, W)
        level_value = value_levels[level].flatten(2).transpose(1, 2)
        level_value = level_value.reshape(batch * heads, head_dim, int(height), int(width))
        # (B, Lq, heads, P, 2) -> (B*heads, Lq, P, 2)
        grid = grids[level].transpose(1, 2).flatten(0, 1)
        sampled = F.grid_sample(
            level_value, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )  # (B*heads, d, Lq, P), weighted level by level: no (..., L*P) tensor is built
        part = (sampled * level_weights[level]).sum(-1)
        output = part if output is None else output + part
    assert output is not None  # at least one level
    return output.view(batch, heads * head_dim, num_queries).transpose(1, 2)


def level_layout(
    shapes: Sequence[tuple[int, int]], device: torch.device | str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(spatial_shapes (L, 2) long, level_start_index (L,) long)`` for maps of ``shapes``.

    On the ``meta`` device (shape-only runs such as ``weft info``) the layout stays on the CPU so
    that its values remain readable.
    """
    if torch.device(device or "cpu").type == "meta":
        device = "cpu"
    spatial_shapes = torch.as_tensor(list(shapes), dtype=torch.long, device=device).view(-1, 2)
    areas = spatial_shapes.prod(1)
    start = torch.cat([areas.new_zeros(1), areas.cumsum(0)[:-1]])
    return spatial_shapes, start


def grid_reference_points(
    shapes: Sequence[tuple[int, int]], device: torch.device | str | None = None
) -> torch.Tensor:
    """Pixel-centre reference points (1, sum(H*W), 1, 2) in normalised (x, y) of every level.

    The level axis of size 1 broadcasts over the levels in :class:`MSDeformAttn`.
    """
    points = []
    for height, width in shapes:
        ys, xs = torch.meshgrid(
            (torch.arange(height, dtype=torch.float32, device=device) + 0.5) / height,
            (torch.arange(width, dtype=torch.float32, device=device) + 0.5) / width,
            indexing="ij",
        )
        points.append(torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1))
    return torch.cat(points, dim=0)[None, :, None, :]


def flatten_levels(
    maps: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten maps (B, C, H_l, W_l) into ``(input_flatten (B, Lin, C), shapes, start_index)``."""
    shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]
    flat = join_maps(maps)
    spatial_shapes, start = level_layout(shapes, device=flat.device)
    return flat, spatial_shapes, start


def _check_layout(flat: torch.Tensor, spatial_shapes: torch.Tensor, n_levels: int) -> None:
    if spatial_shapes.shape != (n_levels, 2):
        raise ValueError(
            f"input_spatial_shapes must be ({n_levels}, 2) for n_levels={n_levels}, got "
            f"{tuple(spatial_shapes.shape)}."
        )
    total = int(spatial_shapes.prod(1).sum())
    if total != flat.shape[1]:
        raise ValueError(
            f"input_flatten has {flat.shape[1]} positions but input_spatial_shapes describe "
            f"{total}; flatten the levels in the order of input_spatial_shapes."
        )
