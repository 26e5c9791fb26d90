"""WEFTBackbone: a frozen ViT, wavelet experts and expert-guided adapters -> 4-scale pyramid.

Data flow: the expert extractor turns the image into ``c1`` (1/4) and multi-scale tokens ``c``
(1/8, 1/16, 1/32); for each of the ViT's 4 block groups an :class:`InteractionStage` injects
``c`` into the ViT tokens, runs the frozen blocks and updates ``c``; finally the ViT stage maps
are added to the expert maps and batch-normalised into features at strides 4, 8, 16, 32.
Prefix tokens (class / register) run through the blocks but never meet the adapters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import nn

from weft_lightning.models.adapter import Extractor, Injector, InteractionStage
from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.deform_attn import MSDeformAttn, grid_reference_points, level_layout
from weft_lightning.models.expert_branch import WaveletExpertExtractor
from weft_lightning.models.experts import Dispatch, ExpertMixture
from weft_lightning.models.layers import resize_bilinear, split_maps, tokens_to_map

GroupRunner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


class WEFTBackbone(nn.Module):
    """Frozen ViT + wavelet expert extractor + interaction stages (defaults: the paper preset).

    Args:
        vit: the frozen timm ViT, split into 4 block groups.
        conv_channels: width C of the expert branch.
        kernel_sizes: one wavelet expert per kernel size (7 experts in the paper).
        top_k: experts mixed per sample.
        dispatch: ``dense`` (the reference), ``sparse`` (each expert on its samples only) or
            ``fused`` (same values as ``dense``, all experts in one pass: ~2.5x faster expert
            mixture on GPU, slower on CPU; its batch norms are not converted to SyncBatchNorm).
        balance_loss_weight: router load-balancing loss weight (0 = off, the paper).
        wavelet: pywt wavelet of the experts' WTConv.
        deform_heads, deform_points, deform_ratio: injector deformable attention.
        ffn_ratio: hidden width of the extractor FFN as a fraction of D.
        extra_extractors: additional extractors after the last stage's one.
        refiner_heads, edge_strength: edge-aware token refiner.
        enhancer_kernels: kernel sizes of the enhancer's multi-scale cascades.
        drop_path_rate: extractor stochastic depth; None takes the ViT's rate.
        injector_norm_eps, extractor_norm_eps: LayerNorm eps of the adapters.
        use_experts: False = plain conv spatial prior instead of the wavelet experts (ablation).
        use_refiner, use_enhancer, use_injector: ablation switches of the adapter parts.
    """

    def __init__(
        self,
        vit: FrozenViT,
        conv_channels: int = 64,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7, 9, 11, 13),
        top_k: int = 4,
        dispatch: Dispatch = "dense",
        balance_loss_weight: float = 0.0,
        wavelet: str = "db1",
        deform_heads: int = 16,
        deform_points: int = 4,
        deform_ratio: float = 0.5,
        ffn_ratio: float = 0.25,
        extra_extractors: int = 2,
        refiner_heads: int = 4,
        edge_strength: float = 0.5,
        enhancer_kernels: Sequence[int] = (3, 5, 7),
        drop_path_rate: float | None = None,
        injector_norm_eps: float = 1e-5,
        extractor_norm_eps: float = 1e-5,
        use_experts: bool = True,
        use_refiner: bool = True,
        use_enhancer: bool = True,
        use_injector: bool = True,
        vit_layer_decay: float = 0.9,
    ) -> None:
        super().__init__()
        if len(vit.group_slices) != 4:
            raise ValueError(
                f"WEFTBackbone needs the ViT split into 4 block groups, got "
                f"{len(vit.group_slices)}; build FrozenViT with num_groups=4."
            )
        dim = vit.embed_dim
        self.vit = vit
        self.grad_checkpointing = False
        self.vit_layer_decay = vit_layer_decay
        vit.layer_lr_scales(vit_layer_decay)  # validates the decay
        rate = _vit_drop_path(vit) if drop_path_rate is None else drop_path_rate
        self.spatial_prior = WaveletExpertExtractor(
            embed_dim=dim,
            channels=conv_channels,
            kernel_sizes=kernel_sizes,
            top_k=top_k,
            dispatch=dispatch,
            balance_loss_weight=balance_loss_weight,
            wavelet=wavelet,
            use_experts=use_experts,
        )
        injector_options: dict[str, Any] = dict(
            num_heads=deform_heads,
            n_points=deform_points,
            n_levels=3,
            deform_ratio=deform_ratio,
            norm_eps=injector_norm_eps,
            use_refiner=use_refiner,
            refiner_heads=refiner_heads,
            edge_strength=edge_strength,
        )
        extractor_options: dict[str, Any] = dict(
            ffn_ratio=ffn_ratio,
            drop_path=rate,
            norm_eps=extractor_norm_eps,
            use_enhancer=use_enhancer,
            enhancer_kernels=enhancer_kernels,
        )
        self.stages = nn.ModuleList()
        for index in range(4):
            count = 1 + (extra_extractors if index == 3 else 0)
            self.stages.append(
                InteractionStage(
                    Injector(dim, **injector_options) if use_injector else None,
                    [Extractor(dim, **extractor_options) for _ in range(count)],
                )
            )
        self.norms = nn.ModuleList(nn.BatchNorm2d(dim) for _ in range(4))
        self.reset_parameters()

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four pyramid levels (the ViT width)."""
        return [self.vit.embed_dim] * 4

    def lr_scales(self) -> dict[str, float]:
        """Layer-wise LR factors of the ViT's parameters when it trains ({} while frozen)."""
        return {f"vit.{k}": v for k, v in self.vit.layer_lr_scales(self.vit_layer_decay).items()}

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the frozen blocks (lean per-block backward), the adapters and the expert
        branch in the backward pass instead of keeping their activations."""
        self.grad_checkpointing = enable
        self.spatial_prior.set_grad_checkpointing(enable)
        for stage in self.stages:
            cast(InteractionStage, stage).set_grad_checkpointing(enable)

    def trainable_modules(self) -> list[nn.Module]:
        """The WEFT parts (everything except the frozen ViT)."""
        return [self.spatial_prior, self.stages, self.norms]

    def reset_parameters(self) -> None:
        """Reference initialisation (trunc-normal Linear, fan-out Conv, unit norms, specials)."""
        for part in self.trainable_modules():
            part.apply(init_weft_module)
            for module in part.modules():
                if isinstance(module, MSDeformAttn):
                    module.reset_parameters()
                elif hasattr(module, "reset_special_parameters"):
                    cast(Any, module).reset_special_parameters()

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W), sides multiples of 32 -> [f1, f2, f3, f4] at strides 4..32."""
        return self._pyramid(*self.forward_stages(images, lift_c1=False))

    def forward_stages(
        self, images: torch.Tensor, lift_c1: bool = True
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(c1, [c2, c3, c4] maps, [x1..x4] ViT stage maps)`` before the pyramid fusion
        (``lift_c1=False``: ``c1`` at the expert branch's width, before its 1x1 lift)."""
        _check_input(images)
        self._mixture_losses()  # drop balance terms of a forward that was never collected
        c1, c, c_shapes = self.spatial_prior(images, lift_finest=lift_c1)
        x, prefix, grid = self.vit.embed(images)
        deform_inputs = self._deform_inputs(grid, c_shapes, images.device)
        stage_maps = []
        for index, stage in enumerate(self.stages):
            x, prefix, c = stage(x, prefix, c, self._group_runner(index), deform_inputs, c_shapes)
            stage_maps.append(tokens_to_map(x, grid))
        return c1, split_maps(c, c_shapes), stage_maps

    def _group_runner(self, index: int) -> GroupRunner:
        """Block group ``index`` as a function of (tokens, prefix); checkpointed when gradient
        checkpointing is on."""

        def run(tokens: torch.Tensor, prefix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            if self.grad_checkpointing and torch.is_grad_enabled():
                return self.vit.run_group_checkpointed(index, tokens, prefix)
            return self.vit.run_group(index, tokens, prefix)

        return run

    @staticmethod
    def _deform_inputs(
        grid: tuple[int, int], c_shapes: Sequence[tuple[int, int]], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        reference = grid_reference_points([grid], device=device)
        spatial_shapes, start = level_layout(c_shapes, device=device)
        return reference, spatial_shapes, start

    def _pyramid(
        self, c1: torch.Tensor, coarse: list[torch.Tensor], stage_maps: list[torch.Tensor]
    ) -> list[torch.Tensor]:
        """Lift ``c1`` to the ViT width, add the ViT stage maps, batch-normalise each level."""
        c2, c3, c4 = coarse
        x1, x2, x3, x4 = stage_maps
        c1 = self.spatial_prior.lift(c1)  # a fresh tensor: sum in place, one wide map alive
        c1 = c1.add_(resize_bilinear(c2, c1.shape[-2:])).add_(resize_bilinear(x1, c1.shape[-2:]))
        c2 = c2 + resize_bilinear(x2, c2.shape[-2:])
        c3 = c3 + resize_bilinear(x3, c3.shape[-2:])
        c4 = c4 + resize_bilinear(x4, c4.shape[-2:])
        return [norm(f) for norm, f in zip(self.norms, (c1, c2, c3, c4), strict=True)]

    def _mixture_losses(self) -> torch.Tensor | None:
        mixture = self.spatial_prior.mixture
        return mixture.pop_auxiliary_loss() if isinstance(mixture, ExpertMixture) else None

    def auxiliary_loss(self) -> torch.Tensor | None:
        """Router load-balancing loss of the last forward (None when disabled)."""
        return self._mixture_losses()

    def routing_stats(self, reset: bool = True) -> dict[str, float]:
        """Expert selection shares and mean weights since the last reset ({} without experts)."""
        mixture = self.spatial_prior.mixture
        return mixture.routing_stats(reset) if isinstance(mixture, ExpertMixture) else {}


def init_weft_module(module: nn.Module) -> None:
    """Reference rule: Linear trunc-normal(0.02), Conv normal(0, sqrt(2/fan_out)), norms 1 and 0."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        kernel = module.kernel_size[0] * module.kernel_size[1]
        fan_out = kernel * module.out_channels // module.groups
        nn.init.normal_(module.weight, 0.0, math.sqrt(2.0 / fan_out))
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm | nn.GroupNorm | nn.modules.batchnorm._BatchNorm):
        if module.weight is not None:
            nn.init.ones_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def _vit_drop_path(vit: FrozenViT) -> float:
    """The ViT's stochastic-depth rate (that of its last block)."""
    last = vit.vit.blocks[-1]
    return float(getattr(getattr(last, "drop_path1", None), "drop_prob", 0.0))


def _check_input(images: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"WEFTBackbone expects images (B, 3, H, W), got {tuple(images.shape)}.")
    height, width = images.shape[-2:]
    if height % 32 or width % 32:
        raise ValueError(
            f"Input size {height}x{width} is not a multiple of 32; resize or pad the images "
            "(e.g. crop_size and test sizes multiples of 32)."
        )
