"""Expert-guided adapters that exchange information between the frozen ViT and the expert branch.

Per block group: the :class:`Injector` writes the multi-scale expert tokens ``c`` into the ViT
tokens ``x`` through deformable attention (refined by the :class:`EdgeAwareTokenRefiner`), the
frozen blocks run, and :class:`Extractor` layers update ``c`` with a convolutional FFN whose
spatial mixing is the :class:`SpatialExpertEnhancer`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath
from torch import nn

from weft_lightning.models.deform_attn import MSDeformAttn
from weft_lightning.models.experts import GroupCascade
from weft_lightning.models.grad_checkpointing import checkpoint_once
from weft_lightning.models.layers import conv_bn_relu, join_maps, split_maps

Shapes = Sequence[tuple[int, int]]


class EdgeAwareTokenRefiner(nn.Module):
    """``R(A) = A + gate * (1 + s * edge) * T`` with T a cosine-similarity token self-attention.

    T uses the L2-normalised tokens as queries and keys and the raw tokens as values, per head;
    ``edge`` marks tokens whose channel variance is high relative to the whole tensor (computed
    without gradient); the per-sample gate is a sigmoid of an affine map of the global mean.
    """

    def __init__(self, dim: int, num_heads: int = 4, edge_strength: float = 0.5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Refiner width {dim} must be divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.edge_strength = edge_strength
        self.gate = nn.Linear(1, 1)

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = a.shape
        head_dim = dim // self.num_heads
        keys = F.normalize(a, dim=-1).view(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        values = a.view(batch, tokens, self.num_heads, head_dim).transpose(1, 2)
        mixed = F.scaled_dot_product_attention(keys, keys, values, scale=1.0 / math.sqrt(head_dim))
        mixed = mixed.transpose(1, 2).reshape(batch, tokens, dim)
        mixed = mixed * (1.0 + self.edge_strength * self._edge(a))
        gate = torch.sigmoid(self.gate(a.mean(dim=(1, 2))[:, None].to(self.gate.weight.dtype)))
        return a + gate[:, :, None].to(a.dtype) * mixed

    @torch.no_grad()
    def _edge(self, a: torch.Tensor) -> torch.Tensor:
        """(B, N, 1) edge score from the standardised per-token channel variance.

        In training the variance is standardised over the whole batch, as the reference does;
        in evaluation over each image's own tokens (the reference tests one window at a time),
        so that a prediction never depends on the other images of its batch.
        """
        variance = a.float().var(dim=-1)
        if self.training:
            mean, std = variance.mean(), variance.std()
        else:
            mean, std = variance.mean(-1, keepdim=True), variance.std(-1, keepdim=True)
        score = (variance - mean) / (std + 1e-6)
        return torch.sigmoid(score)[..., None].to(a.dtype)


class Injector(nn.Module):
    """``x <- x + gamma * R(MSDeformAttn(LN(x), LN(c)))``; gamma starts at 0 (identity at init)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 16,
        n_points: int = 4,
        n_levels: int = 3,
        deform_ratio: float = 0.5,
        norm_eps: float = 1e-5,
        use_refiner: bool = True,
        refiner_heads: int = 4,
        edge_strength: float = 0.5,
    ) -> None:
        super().__init__()
        self.query_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.feat_norm = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = MSDeformAttn(dim, n_levels, num_heads, n_points, deform_ratio)
        self.refiner = (
            EdgeAwareTokenRefiner(dim, refiner_heads, edge_strength) if use_refiner else None
        )
        self.gamma = nn.Parameter(torch.zeros(dim))

    def reset_special_parameters(self) -> None:
        nn.init.zeros_(self.gamma)

    def forward(
        self,
        x: torch.Tensor,
        c: torch.Tensor,
        reference_points: torch.Tensor,
        spatial_shapes: torch.Tensor,
        level_start_index: torch.Tensor,
    ) -> torch.Tensor:
        a = self.attn(
            self.query_norm(x),
            reference_points,
            self.feat_norm(c),
            spatial_shapes,
            level_start_index,
        )
        if self.refiner is not None:
            a = self.refiner(a)
        return x + self.gamma * a


class DirectionalLaplacian(nn.Conv2d):
    """Learnable depthwise 3x3 second-derivative filter (rows ``[1, -2, 1]``), reflect padded."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, groups=channels, bias=False)
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        kernel = torch.tensor([1.0, -2.0, 1.0]).expand(3, 3)
        with torch.no_grad():
            self.weight.copy_(kernel.expand_as(self.weight))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = "reflect" if min(x.shape[-2:]) > 1 else "replicate"
        return F.conv2d(F.pad(x, (1, 1, 1, 1), mode=mode), self.weight, groups=self.groups)


class SpatialExpertEnhancer(nn.Module):
    """Mix each scale map with its Laplacian, max-pool and multi-kernel cascade branches.

    ``m <- GELU(m + w_l * lap(m) + w_p * pool(m) + w_q * sum_k MS_k(m))`` with
    ``(w_l, w_p, w_q) = softmax`` of three learnable scalars per scale. The Laplacian and the
    ``MS_k`` cascades are shared by the scales.
    """

    def __init__(
        self, channels: int, kernel_sizes: Sequence[int] = (3, 5, 7), num_scales: int = 3
    ) -> None:
        super().__init__()
        quarter = channels // 4
        self.laplacian = DirectionalLaplacian(channels)
        self.cascades = nn.ModuleList(
            GroupCascade(channels, conv_bn_relu(quarter, quarter, k, groups=quarter))
            for k in kernel_sizes
        )
        self.mix = nn.Parameter(torch.ones(num_scales, 3))

    def reset_special_parameters(self) -> None:
        nn.init.ones_(self.mix)
        self.laplacian.reset_special_parameters()

    def forward(self, tokens: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        maps = split_maps(tokens, shapes)
        weights = self.mix.softmax(dim=-1).to(tokens.dtype)
        out = []
        for index, m in enumerate(maps):
            edge = self.laplacian(m)
            pooled = m  # adaptive max-pool to the map's own size: each window is one pixel
            multi = sum(cascade(m) for cascade in self.cascades)
            w = weights[index]
            out.append(F.gelu(m + w[0] * edge + w[1] * pooled + w[2] * multi))
        return join_maps(out)


class DepthwiseMixer(nn.Module):
    """Plain shared depthwise 3x3 conv over each scale map (ablation of the enhancer)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, groups=channels)

    def forward(self, tokens: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        return join_maps([self.conv(m) for m in split_maps(tokens, shapes)])


class Extractor(nn.Module):
    """``c <- c + DropPath(fc2(GELU(enhancer(fc1(LN(c))))))`` on the multi-scale expert tokens."""

    def __init__(
        self,
        dim: int,
        ffn_ratio: float = 0.25,
        drop_path: float = 0.0,
        norm_eps: float = 1e-5,
        use_enhancer: bool = True,
        enhancer_kernels: Sequence[int] = (3, 5, 7),
    ) -> None:
        super().__init__()
        hidden = int(dim * ffn_ratio)
        self.norm = nn.LayerNorm(dim, eps=norm_eps)
        self.fc1 = nn.Linear(dim, hidden)
        self.mixer: nn.Module = (
            SpatialExpertEnhancer(hidden, enhancer_kernels)
            if use_enhancer
            else DepthwiseMixer(hidden)
        )
        self.fc2 = nn.Linear(hidden, dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, c: torch.Tensor, shapes: Shapes) -> torch.Tensor:
        hidden = F.gelu(self.mixer(self.fc1(self.norm(c)), shapes))
        return c + self.drop_path(self.fc2(hidden))


class InteractionStage(nn.Module):
    """Injector -> frozen block group -> Extractor(s); with gradient checkpointing on, each
    adapter is recomputed in the backward pass (the block-group runner checkpoints the frozen
    blocks itself)."""

    def __init__(
        self,
        injector: Injector | None,
        extractors: Sequence[Extractor],
    ) -> None:
        super().__init__()
        self.injector = injector
        self.extractors = nn.ModuleList(extractors)
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each adapter in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    def forward(
        self,
        x: torch.Tensor,
        prefix: torch.Tensor,
        c: torch.Tensor,
        run_blocks: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
        deform_inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        c_shapes: Shapes,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns the updated ViT tokens, prefix tokens and expert tokens."""
        if self.injector is not None:
            x = self._run(self.injector, x, c, *deform_inputs)
        x, prefix = run_blocks(x, prefix)  # checkpoints the frozen blocks itself
        for extractor in self.extractors:
            c = self._run(extractor, c, c_shapes)
        return x, prefix, c

    def _run(self, module: nn.Module, *args: Any) -> Any:
        """Call ``module``, through a checkpoint when checkpointing and training. Each extractor
        has its own: one recomputation of several would hold all their activations at once."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_once(module, *args, module=module)
        return module(*args)
