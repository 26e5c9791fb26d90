"""Fine-tuning baselines for fair ablations against WEFT: same ViT, head, data and schedule.

Every baseline is a *backbone* (``forward(images) -> [f1, f2, f3, f4]`` at strides 4, 8, 16, 32
and ``out_channels``) around a :class:`FrozenViT`, selected by ``class_path`` in the config:

============================  =============================================================
``FullFineTuning``            every ViT weight trains, layer-wise LR decay (``lr_scales``)
``FrozenBackbone``            nothing in the backbone trains (the head only)
``LoRABackbone``              low-rank updates of the attention qkv and output projections
``VPTBackbone``               deep visual prompts: learned tokens prepended at every block
``AdaptFormerBackbone``       bottleneck adapters parallel to every MLP
``ViTAdapterBackbone``        WEFT's adapters with a plain conv prior, no refiner/enhancer
``weft.WEFTBackbone``         the method itself
============================  =============================================================

The ViT-only baselines turn the four block-group outputs into the pyramid without parameters
(bilinear resampling of the stride-16 maps), so that only the method's own parameters differ.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from weft_lightning.models.backbone import FrozenViT, simple_pyramid
from weft_lightning.models.layers import tokens_to_map
from weft_lightning.models.weft import WEFTBackbone


class PlainViTBackbone(nn.Module):
    """The ViT's four block-group outputs as a parameter-free stride 4/8/16/32 pyramid.

    Args:
        vit: the timm ViT split into block groups.
    """

    def __init__(self, vit: FrozenViT) -> None:
        super().__init__()
        self.vit = vit
        self.grad_checkpointing = False

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block group in the backward pass instead of keeping its activations
        (saves memory when the ViT trains)."""
        self.grad_checkpointing = enable

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four pyramid levels (the ViT width)."""
        return [self.vit.embed_dim] * 4

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Images (B, 3, H, W), sides multiples of 32 -> [f1, f2, f3, f4]."""
        tokens, prefix, grid = self.vit.embed(images)
        maps = []
        for index in range(len(self.vit.group_slices)):
            if self.grad_checkpointing and torch.is_grad_enabled():
                tokens, prefix = checkpoint(
                    self.run_group, index, tokens, prefix, use_reentrant=False
                )
            else:
                tokens, prefix = self.run_group(index, tokens, prefix)
            maps.append(tokens_to_map(tokens, grid))
        return simple_pyramid(maps)

    def run_group(
        self, index: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One block group; baselines that change what runs inside the blocks override it."""
        return self.vit.run_group(index, tokens, prefix)


class FrozenBackbone(PlainViTBackbone):
    """Linear-probing style baseline: the ViT stays frozen and only the head trains."""

    def __init__(self, vit: FrozenViT) -> None:
        super().__init__(vit)
        vit.requires_grad_(False)
        vit.frozen = True


class FullFineTuning(PlainViTBackbone):
    """Every ViT parameter trains, with layer-wise learning-rate decay.

    The parameter of layer ``l`` (0 = embeddings, ``i + 1`` = block ``i``) gets the learning
    rate ``base_lr * layer_decay ** (num_blocks + 1 - l)``; parameters outside the ViT (none
    here, the head in the segmentor) keep ``base_lr``. The optimiser reads the factors from
    :meth:`lr_scales`.
    """

    def __init__(self, vit: FrozenViT, layer_decay: float = 0.9) -> None:
        super().__init__(vit)
        vit.requires_grad_(True)
        vit.layer_lr_scales(layer_decay)  # validates layer_decay
        vit.frozen = False
        self.layer_decay = layer_decay

    def lr_scales(self) -> dict[str, float]:
        """Learning-rate factor of every trainable parameter, keyed by name in this backbone."""
        return {f"vit.{k}": v for k, v in self.vit.layer_lr_scales(self.layer_decay).items()}


class LoRALinear(nn.Linear):
    """A frozen ``nn.Linear`` plus a trainable low-rank update ``(alpha / r) * B @ A``.

    It shares the weight and bias of the layer it wraps (state-dict keys stay the same, with
    ``lora_a``/``lora_b`` added). ``B`` starts at zero, so training starts from the base model.
    In eval mode the update is merged into the weight before the matmul (one matmul, as in
    deployment); :meth:`merged_linear` gives a plain layer with the update folded in.
    """

    def __init__(
        self, base: nn.Linear, rank: int = 8, alpha: float | None = None, dropout: float = 0.0
    ) -> None:
        nn.Module.__init__(self)
        if rank < 1:
            raise ValueError(f"LoRA rank must be >= 1, got {rank}.")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight, self.bias = base.weight, base.bias
        factory: dict[str, Any] = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_a = nn.Parameter(torch.empty(rank, self.in_features, **factory))
        self.lora_b = nn.Parameter(torch.zeros(self.out_features, rank, **factory))
        nn.init.kaiming_uniform_(self.lora_a, a=math.sqrt(5))
        self.scaling = (alpha if alpha is not None else rank) / rank
        self.dropout = nn.Dropout(dropout)

    def delta_weight(self) -> torch.Tensor:
        """The low-rank update of the weight (out, in)."""
        return (self.lora_b @ self.lora_a) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return F.linear(x, self.weight + self.delta_weight(), self.bias)
        update = F.linear(F.linear(self.dropout(x), self.lora_a), self.lora_b)
        return F.linear(x, self.weight, self.bias) + update * self.scaling

    @torch.no_grad()
    def merged_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` whose weight holds the base weight plus the update."""
        linear = nn.Linear(self.in_features, self.out_features, bias=self.bias is not None).to(
            self.weight
        )
        linear.weight.copy_(self.weight + self.delta_weight())
        if self.bias is not None:
            linear.bias.copy_(self.bias)
        return linear.requires_grad_(False)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, rank={self.lora_a.shape[0]}, scaling={self.scaling:g}"


class LoRABackbone(PlainViTBackbone):
    """Frozen ViT with LoRA on every block's attention projections.

    Args:
        vit: the frozen ViT.
        rank, alpha, dropout: LoRA rank ``r``, scale numerator (``alpha / r``; default
            ``alpha = r``) and input dropout of the low-rank path.
        targets: ``qkv`` (the fused qkv, or separate q/k/v projections) and/or ``proj``.
    """

    def __init__(
        self,
        vit: FrozenViT,
        rank: int = 8,
        alpha: float | None = None,
        dropout: float = 0.0,
        targets: Sequence[str] = ("qkv", "proj"),
    ) -> None:
        super().__init__(vit)
        unknown = set(targets) - {"qkv", "proj"}
        if unknown or not targets:
            raise ValueError(f"LoRA targets must be among 'qkv', 'proj'; got {list(targets)}.")
        vit.requires_grad_(False)
        for block in vit.vit.blocks:
            _add_lora(block.attn, targets, rank, alpha, dropout)

    def lora_layers(self) -> list[LoRALinear]:
        return [m for m in self.modules() if isinstance(m, LoRALinear)]

    @torch.no_grad()
    def merge(self) -> None:
        """Fold every update into its layer for deployment (the LoRA parameters disappear)."""
        for module in list(self.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, LoRALinear):
                    setattr(module, name, child.merged_linear())


def _add_lora(
    attn: Any, targets: Sequence[str], rank: int, alpha: float | None, dropout: float
) -> None:
    # attn: a timm attention module (Attention, EvaAttention, SAM's): its layers differ by family
    names = []
    if "qkv" in targets:
        names += [n for n in ("qkv", "q_proj", "k_proj", "v_proj") if _linear(attn, n)]
    if "proj" in targets and _linear(attn, "proj"):
        names.append("proj")
    if not names:
        raise ValueError(f"{type(attn).__name__} has no qkv/proj linear layers for LoRA.")
    for name in names:
        setattr(attn, name, LoRALinear(getattr(attn, name), rank, alpha, dropout))
    if getattr(attn, "q_bias", None) is not None and hasattr(attn, "qkv_bias_separate"):
        attn.qkv_bias_separate = True  # EVA: call qkv as a module (same result) so LoRA runs


def _linear(module: nn.Module, name: str) -> bool:
    return isinstance(getattr(module, name, None), nn.Linear)


class VPTBackbone(PlainViTBackbone):
    """Deep visual prompt tuning: ``num_prompts`` learned tokens enter every block.

    Each block gets its own prompts after the class/register tokens; their outputs are
    dropped before the next block. Needs a ``VisionTransformer`` (EVA's rotary embedding and
    SAM's windowed NHWC attention have no place for extra tokens).
    """

    def __init__(
        self,
        vit: FrozenViT,
        num_prompts: int = 10,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(vit)
        if vit.family != "vit":
            raise ValueError(
                f"VPT needs a timm VisionTransformer; {vit.model_name!r} is a {vit.family} model."
            )
        vit.requires_grad_(False)
        self.prompts = nn.Parameter(torch.empty(vit.num_blocks, num_prompts, vit.embed_dim))
        bound = math.sqrt(6.0 / (3 * vit.patch_size**2 + vit.embed_dim))
        nn.init.uniform_(self.prompts, -bound, bound)
        self.dropout = nn.Dropout(dropout)

    def run_group(
        self, index: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start, stop = self.vit.group_slices[index]
        keep = prefix.shape[1]
        for block in range(start, stop):
            prompts = self.dropout(self.prompts[block]).expand(tokens.shape[0], -1, -1)
            extended = torch.cat([prefix, prompts.to(prefix.dtype)], dim=1)
            tokens, extended = self.vit.run_blocks(block, block + 1, tokens, extended)
            prefix = extended[:, :keep]
        return tokens, prefix


class BottleneckAdapter(nn.Module):
    """AdaptFormer's adapter: ``scale * up(ReLU(down(x)))``, ``up`` zero-initialised.

    Attached to a block with :meth:`attach`: it reads the input of the block's second norm
    (the MLP branch input) and adds its output to the block output, i.e. it runs parallel to
    the MLP. The hooks are bound methods, so copies of the model stay consistent.
    """

    def __init__(self, dim: int, bottleneck: int = 64, scale: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(dim, bottleneck)
        self.up = nn.Linear(bottleneck, dim)
        self.scale = scale
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self._input: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(F.relu(self.down(x))) * self.scale

    def attach(self, block: nn.Module) -> None:
        """Run parallel to ``block``'s MLP (``block.norm2`` must exist)."""
        cast(nn.Module, block.norm2).register_forward_hook(self._capture)
        block.register_forward_hook(self._add)

    def _capture(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
        self._input = args[0]

    def _add(self, module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
        if self._input is None:
            raise RuntimeError("AdaptFormer adapter found no MLP input in its block.")
        x, self._input = self._input, None
        return output + self(x).reshape(output.shape).to(output.dtype)


class AdaptFormerBackbone(PlainViTBackbone):
    """Frozen ViT with a bottleneck adapter parallel to the MLP of every block (AdaptFormer)."""

    def __init__(
        self,
        vit: FrozenViT,
        bottleneck: int = 64,
        scale: float = 0.1,
    ) -> None:
        super().__init__(vit)
        vit.requires_grad_(False)
        self.adapters = nn.ModuleList(
            BottleneckAdapter(vit.embed_dim, bottleneck, scale) for _ in range(vit.num_blocks)
        )
        for adapter, block in zip(self.adapters, vit.vit.blocks, strict=True):
            cast(BottleneckAdapter, adapter).attach(block)


class ViTAdapterBackbone(WEFTBackbone):
    """ViT-Adapter-style baseline: WEFT's injector/extractor stages around the same frozen ViT,
    with a plain convolutional spatial prior instead of the wavelet experts and without the
    edge-aware refiner and the spatial expert enhancer."""

    def __init__(
        self,
        vit: FrozenViT,
        conv_channels: int = 64,
        deform_heads: int = 16,
        deform_points: int = 4,
        deform_ratio: float = 0.5,
        ffn_ratio: float = 0.25,
        extra_extractors: int = 2,
        drop_path_rate: float | None = None,
    ) -> None:
        super().__init__(
            vit,
            conv_channels=conv_channels,
            deform_heads=deform_heads,
            deform_points=deform_points,
            deform_ratio=deform_ratio,
            ffn_ratio=ffn_ratio,
            extra_extractors=extra_extractors,
            drop_path_rate=drop_path_rate,
            use_experts=False,
            use_refiner=False,
            use_enhancer=False,
        )
