"""FrozenViT: a timm plain ViT seen as patch embedding + 4 block groups, with frozen weights.

Supported timm families: ``VisionTransformer`` (``vit_*``, ``deit*``, DINOv2 with or without
registers, MAE, ...), ``Eva`` (EVA-02: rotary position embeddings that the blocks take as
``rope=``) and ``VisionTransformerSAM`` (``samvit_*``: windowed attention on NHWC maps).

Patch-14 models (DINOv2, EVA-02) are aligned to the stride-16 token grid of the method by
resizing the input image to ``(H / 16 * 14, W / 16 * 14)`` before the patch embedding, so an
``H x W`` input always yields an ``H/16 x W/16`` token grid, whatever the patch size. Absolute
position embeddings are resized (bicubic) to the token grid; rotary embeddings are built for it.

The modules after the last block (final norm, pooling, classifier, SAM neck) are never used by
the method and are removed once the weights are loaded, so that every parameter left is used.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from timm.models import model_entrypoint, split_model_name_tag
from timm.models.eva import Eva
from timm.models.vision_transformer import VisionTransformer
from timm.models.vision_transformer_sam import VisionTransformerSAM
from torch import nn
from torch.utils.checkpoint import checkpoint

from weft_lightning.models.frozen_block import lean_frozen_block, supports_lean_backward
from weft_lightning.models.layers import tokens_to_map
from weft_lightning.models.weights import load_backbone_weights

TOKEN_STRIDE = 16
UNUSED_TAIL = ("norm", "fc_norm", "head_drop", "head", "neck")
SUPPORTED_TIMM_MODULES = ("vision_transformer", "deit", "eva", "vision_transformer_sam")
_BLOCK = re.compile(r"(?:^|\.)blocks\.(\d+)\.")
_EMBEDDING = ("patch_embed", "pos_embed", "cls_token", "reg_token", "norm_pre")


class FrozenViT(nn.Module):
    """A timm ViT whose blocks are split into equal consecutive groups and whose weights are frozen.

    Args:
        model_name: a timm plain ViT (``vit_*``, ``deit*``, ``vit_*_dinov2``, ``eva02_*``,
            ``samvit_*``), optionally with a pretrained tag (``vit_base_patch16_224.mae``).
        pretrained: download the hub weights (needs network access).
        checkpoint_path: local ``.pth``/``.safetensors``/``.bin`` weights for the timm model.
        drop_path_rate: stochastic depth of the frozen blocks; it stays active in training.
        num_groups: number of equal consecutive block groups (4 for WEFT).
        frozen: freeze every backbone parameter (``False`` for full fine-tuning baselines).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (depth, embed_dim, ...).
        norm_eps: if given, the epsilon of every LayerNorm of the model (timm uses 1e-6; weights
            trained with PyTorch's default LayerNorm, such as Uni-Perceiver, need 1e-5).
        pos_embed_antialias: resize absolute position tables with antialiased bicubic (timm's
            way); ``False`` gives plain bicubic, as the Uni-Perceiver reference does.
    """

    def __init__(
        self,
        model_name: str = "vit_small_patch16_224",
        pretrained: bool = False,
        checkpoint_path: str | None = None,
        drop_path_rate: float = 0.0,
        num_groups: int = 4,
        frozen: bool = True,
        model_kwargs: dict[str, Any] | None = None,
        norm_eps: float | None = None,
        pos_embed_antialias: bool = True,
    ) -> None:
        super().__init__()
        self.model_name = model_name
        # a timm VisionTransformer, Eva or VisionTransformerSAM: attributes differ by family
        self.vit: Any = _create_timm_vit(model_name, pretrained, drop_path_rate, model_kwargs or {})
        self.family = _family(self.vit, model_name)
        if checkpoint_path:
            load_backbone_weights(self.vit, Path(checkpoint_path))
        _remove_unused_tail(self.vit)
        if norm_eps is not None:
            _set_layer_norm_eps(self.vit, norm_eps)
        self.group_slices = _group_slices(len(self.vit.blocks), num_groups, model_name)
        self.embed_dim: int = self.vit.embed_dim
        self.num_heads: int = self.vit.blocks[0].attn.num_heads
        self.patch_size: int = _patch_size(self.vit)
        self.num_prefix_tokens: int = getattr(self.vit, "num_prefix_tokens", 0)
        self.pos_embed_antialias = pos_embed_antialias
        self.frozen = frozen
        self.vit.requires_grad_(not frozen)
        self._grid: tuple[int, int] | None = None
        self._rope: torch.Tensor | None = None

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four pyramid levels returned by :meth:`forward`."""
        return [self.embed_dim] * 4

    @property
    def num_blocks(self) -> int:
        return len(self.vit.blocks)

    def layer_id(self, name: str) -> int:
        """Depth of a parameter named relative to this module: 0 = embeddings, ``i + 1`` = block
        ``i``, ``num_blocks + 1`` = anything after the blocks (final norms)."""
        match = _BLOCK.search(name)
        if match:
            return int(match.group(1)) + 1
        if name.removeprefix("vit.").startswith(_EMBEDDING):
            return 0
        return self.num_blocks + 1

    def layer_lr_scales(self, layer_decay: float) -> dict[str, float]:
        """Layer-wise learning-rate factors ``layer_decay ** (num_blocks + 1 - layer_id)`` of the
        trainable parameters, keyed by name relative to this module ({} when frozen)."""
        if not 0 < layer_decay <= 1:
            raise ValueError(f"layer_decay must be in (0, 1], got {layer_decay}.")
        top = self.num_blocks + 1
        return {
            name: layer_decay ** (top - self.layer_id(name))
            for name, param in self.named_parameters()
            if param.requires_grad
        }

    def group(self, index: int) -> Sequence[nn.Module]:
        """The blocks of group ``index``."""
        start, stop = self.group_slices[index]
        return self.vit.blocks[start:stop]

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Patch tokens and prefix tokens after position embedding and the embedding norm.

        Returns ``(patch_tokens (B, N, D), prefix_tokens (B, P, D), (gh, gw))`` with
        ``gh = H / 16`` and ``gw = W / 16``. The grid (and the rotary embedding of EVA models)
        is kept for the following :meth:`run_group` calls.
        """
        grid = _token_grid(images)
        if self.patch_size != TOKEN_STRIDE:
            size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        x = self.vit.patch_embed(images)
        self._rope = None
        if self.family == "sam":
            x = self._sam_pos_embed(x)
        elif self.family == "eva":
            x, self._rope = self.vit._pos_embed(x)
        else:
            x = self._vit_pos_embed(x)
        x = self.vit.norm_pre(x)
        self._grid = grid
        prefix, tokens = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        return tokens, prefix, grid

    def run_group(
        self, index: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run block group ``index`` on ``[prefix; tokens]`` and split the result again."""
        start, stop = self.group_slices[index]
        return self.run_blocks(start, stop, tokens, prefix)

    def run_group_checkpointed(
        self, index: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`run_group` with gradient checkpointing for training.

        Frozen standard ViT blocks use the lean per-block recomputation of
        :mod:`~weft_lightning.models.frozen_block` (same gradients, about 40 % less recompute);
        other blocks (trainable, EVA, SAM, ...) checkpoint the whole group.
        """
        start, stop = self.group_slices[index]
        blocks = self.vit.blocks[start:stop]
        if self.family == "sam" or not all(supports_lean_backward(b) for b in blocks):
            return checkpoint(self.run_group, index, tokens, prefix, use_reentrant=False)
        num_prefix = prefix.shape[1]
        x = torch.cat([prefix, tokens], dim=1)
        for block in blocks:
            x = lean_frozen_block(block, x)
        return x[:, num_prefix:], x[:, :num_prefix]

    def run_blocks(
        self, start: int, stop: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run blocks ``start`` to ``stop - 1`` on the tokens of the last :meth:`embed` grid.

        ``prefix`` may hold more tokens than the model's own prefix (deep prompts): every
        prefix token travels through the blocks and comes back in the returned prefix.
        """
        if self._grid is None:
            raise RuntimeError("FrozenViT.embed must run before its blocks.")
        if self.family == "sam":
            batch, _, dim = tokens.shape
            x = tokens.reshape(batch, self._grid[0], self._grid[1], dim)
            for block in self.vit.blocks[start:stop]:
                x = block(x)
            return x.flatten(1, 2), prefix
        num_prefix = prefix.shape[1]
        x = torch.cat([prefix, tokens], dim=1)
        for index in range(start, stop):
            x = self._run_block(index, x)
        return x[:, num_prefix:], x[:, :num_prefix]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-free pyramid: each group's output map resampled to strides 4, 8, 16, 32."""
        tokens, prefix, grid = self.embed(images)
        maps = []
        for index in range(len(self.group_slices)):
            tokens, prefix = self.run_group(index, tokens, prefix)
            maps.append(tokens_to_map(tokens, grid))
        return simple_pyramid(maps)

    def _run_block(self, index: int, x: torch.Tensor) -> torch.Tensor:
        block = self.vit.blocks[index]
        if self.family != "eva":
            return block(x)
        rope = self._rope
        if rope is not None and getattr(self.vit, "rope_mixed", False):
            rope = rope[index]
        return block(x, rope=rope)

    def _vit_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        """timm's VisionTransformer position embedding with a choice of resize antialiasing."""
        vit = self.vit
        if x.ndim == 3 or vit.pos_embed is None:  # fixed-size model or no table: timm's own way
            return vit._pos_embed(x)
        from timm.layers import resample_abs_pos_embed

        batch, height, width, dim = x.shape
        x = x.reshape(batch, height * width, dim)
        pos = resample_abs_pos_embed(
            vit.pos_embed,
            new_size=(height, width),
            old_size=vit.patch_embed.grid_size,
            num_prefix_tokens=0 if vit.no_embed_class else vit.num_prefix_tokens,
            antialias=self.pos_embed_antialias,
        )
        prefix = [t.expand(batch, -1, -1) for t in (vit.cls_token, vit.reg_token) if t is not None]
        if vit.no_embed_class:
            x = torch.cat([*prefix, x + pos], dim=1)
        else:
            x = torch.cat([*prefix, x], dim=1) + pos
        return vit.pos_drop(x)

    def _sam_pos_embed(self, x: torch.Tensor) -> torch.Tensor:
        from timm.layers import resample_abs_pos_embed_nhwc

        if self.vit.pos_embed is not None:
            x = x + resample_abs_pos_embed_nhwc(self.vit.pos_embed, list(x.shape[1:3]))
        return self.vit.pos_drop(x).flatten(1, 2)


def simple_pyramid(maps: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Four stride-16 maps -> strides 4, 8, 16, 32 by bilinear resampling (no parameters)."""
    scales = (4.0, 2.0, 1.0, 0.5)
    return [
        F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else m
        for m, s in zip(maps, scales, strict=True)
    ]


def _token_grid(images: torch.Tensor) -> tuple[int, int]:
    height, width = images.shape[-2:]
    if height % TOKEN_STRIDE or width % TOKEN_STRIDE:
        raise ValueError(
            f"Input size {height}x{width} is not a multiple of {TOKEN_STRIDE}; "
            "resize or pad images to multiples of 32."
        )
    return height // TOKEN_STRIDE, width // TOKEN_STRIDE


def _group_slices(depth: int, num_groups: int, model_name: str) -> list[tuple[int, int]]:
    if num_groups < 1 or depth % num_groups:
        raise ValueError(
            f"{model_name} has {depth} blocks, which cannot be split into {num_groups} equal "
            f"groups; choose a depth divisible by {num_groups} (model_kwargs: {{depth: ...}})."
        )
    size = depth // num_groups
    return [(i * size, (i + 1) * size) for i in range(num_groups)]


def _patch_size(vit: Any) -> int:  # a timm ViT
    size = vit.patch_embed.patch_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def _family(vit: nn.Module, model_name: str) -> str:
    if isinstance(vit, VisionTransformerSAM):
        return "sam"
    if isinstance(vit, Eva):
        return "eva"
    if isinstance(vit, VisionTransformer):
        return "vit"
    raise ValueError(
        f"{model_name!r} is a {type(vit).__name__}, not a plain ViT that FrozenViT supports; use a "
        "timm VisionTransformer (vit_*, deit*, *_dinov2), Eva (eva02_*) or samvit_* model."
    )


def _create_timm_vit(
    model_name: str, pretrained: bool, drop_path_rate: float, model_kwargs: dict[str, Any]
) -> Any:  # a timm ViT of one of the supported families
    arch, _ = split_model_name_tag(model_name)
    if not timm.is_model(arch):
        raise ValueError(
            f"timm has no model named {model_name!r}; see `timm.list_models('vit_*')`."
        )
    module = model_entrypoint(arch).__module__.rsplit(".", 1)[-1]
    if module not in SUPPORTED_TIMM_MODULES:
        raise ValueError(
            f"{model_name!r} (timm.models.{module}) is not a plain ViT that FrozenViT supports; "
            "use a timm VisionTransformer (vit_*, deit*, *_dinov2), Eva (eva02_*) or samvit_*."
        )
    kwargs = dict(model_kwargs)
    if module != "vision_transformer_sam":  # SAM resizes its position table itself
        kwargs.setdefault("dynamic_img_size", True)
    try:
        return timm.create_model(
            model_name,
            pretrained=pretrained,
            drop_path_rate=drop_path_rate,
            num_classes=0,
            **kwargs,
        )
    except OSError as error:  # hub not reachable / weights not cached
        raise RuntimeError(
            f"Could not download pretrained weights for {model_name!r} from the hub ({error}). "
            "Without network access, set `pretrained: false` and give local weights with "
            "`checkpoint_path: FILE` (.pth, .safetensors or .bin)."
        ) from error


def _remove_unused_tail(vit: Any) -> None:  # a timm ViT
    """Replace the modules after the last block by identities (they are never run)."""
    for name in UNUSED_TAIL:
        if isinstance(getattr(vit, name, None), nn.Module):
            setattr(vit, name, nn.Identity())
    if isinstance(getattr(vit, "attn_pool", None), nn.Module):
        vit.attn_pool = None


def _set_layer_norm_eps(vit: nn.Module, eps: float) -> None:
    for module in vit.modules():
        if isinstance(module, nn.LayerNorm):
            module.eps = eps
