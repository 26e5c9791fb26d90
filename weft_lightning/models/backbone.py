"""FrozenViT: a timm plain ViT seen as patch embedding + 4 block groups, with frozen weights.

Patch-14 models (DINOv2) are aligned to the stride-16 token grid of the method by resizing the
input image to ``(H / 16 * 14, W / 16 * 14)`` before the patch embedding, so an ``H x W`` input
always yields an ``H/16 x W/16`` token grid, whatever the patch size. Position embeddings are
resized (bicubic) to the token grid by timm's ``dynamic_img_size`` mode.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

TOKEN_STRIDE = 16


class FrozenViT(nn.Module):
    """A timm ViT whose blocks are split into equal consecutive groups and whose weights are frozen.

    Args:
        model_name: any timm plain ViT (``vit_*``, ``deit*``, ``vit_*_dinov2*``, ...).
        pretrained: download the hub weights (needs network access).
        checkpoint_path: local ``.pth``/``.safetensors``/``.bin`` weights for the timm model.
        drop_path_rate: stochastic depth of the frozen blocks; it stays active in training.
        num_groups: number of equal consecutive block groups (4 for WEFT).
        frozen: freeze every backbone parameter (``False`` for full fine-tuning baselines).
        model_kwargs: extra keyword arguments for ``timm.create_model`` (depth, embed_dim, ...).
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
    ) -> None:
        super().__init__()
        self.model_name = model_name
        kwargs = dict(model_kwargs or {})
        kwargs.setdefault("dynamic_img_size", True)
        self.vit = _create_timm_vit(model_name, pretrained, drop_path_rate, kwargs)
        if checkpoint_path:
            load_backbone_weights(self.vit, Path(checkpoint_path))
        blocks = list(self.vit.blocks)
        if len(blocks) % num_groups:
            raise ValueError(
                f"{model_name} has {len(blocks)} blocks, which cannot be split into "
                f"{num_groups} equal groups; choose a depth divisible by {num_groups}."
            )
        size = len(blocks) // num_groups
        self.group_slices = [(i * size, (i + 1) * size) for i in range(num_groups)]
        self.embed_dim: int = self.vit.embed_dim
        self.num_heads: int = self.vit.blocks[0].attn.num_heads
        self.patch_size: int = _patch_size(self.vit)
        self.num_prefix_tokens: int = getattr(self.vit, "num_prefix_tokens", 0)
        self.frozen = frozen
        if frozen:
            self.vit.requires_grad_(False)

    @property
    def out_channels(self) -> list[int]:
        """Channels of the four pyramid levels returned by :meth:`forward`."""
        return [self.embed_dim] * 4

    @property
    def num_blocks(self) -> int:
        return len(self.vit.blocks)

    def group(self, index: int) -> Sequence[nn.Module]:
        """The blocks of group ``index``."""
        start, stop = self.group_slices[index]
        return self.vit.blocks[start:stop]

    def embed(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, tuple[int, int]]:
        """Patch tokens and prefix tokens after position embedding and the embedding norm.

        Returns ``(patch_tokens (B, N, D), prefix_tokens (B, P, D), (gh, gw))`` with
        ``gh = H / 16`` and ``gw = W / 16``.
        """
        height, width = images.shape[-2:]
        if height % TOKEN_STRIDE or width % TOKEN_STRIDE:
            raise ValueError(
                f"Input size {height}x{width} is not a multiple of {TOKEN_STRIDE}; "
                "resize or pad images to multiples of 32."
            )
        grid = (height // TOKEN_STRIDE, width // TOKEN_STRIDE)
        if self.patch_size != TOKEN_STRIDE:
            size = (grid[0] * self.patch_size, grid[1] * self.patch_size)
            images = F.interpolate(images, size=size, mode="bilinear", align_corners=False)
        x = self.vit.patch_embed(images)
        x = self.vit._pos_embed(x)
        x = self.vit.patch_drop(x)
        x = self.vit.norm_pre(x)
        prefix, tokens = x[:, : self.num_prefix_tokens], x[:, self.num_prefix_tokens :]
        return tokens, prefix, grid

    def run_group(
        self, index: int, tokens: torch.Tensor, prefix: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run block group ``index`` on ``[prefix; tokens]`` and split the result again."""
        x = torch.cat([prefix, tokens], dim=1)
        for block in self.group(index):
            x = block(x)
        return x[:, self.num_prefix_tokens :], x[:, : self.num_prefix_tokens]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Parameter-free pyramid: each group's output map resampled to strides 4, 8, 16, 32."""
        tokens, prefix, grid = self.embed(images)
        maps = []
        for index in range(len(self.group_slices)):
            tokens, prefix = self.run_group(index, tokens, prefix)
            maps.append(tokens_to_map(tokens, grid))
        scales = (4.0, 2.0, 1.0, 0.5)
        return [
            F.interpolate(m, scale_factor=s, mode="bilinear", align_corners=False) if s != 1 else m
            for m, s in zip(maps, scales, strict=False)
        ]


def tokens_to_map(tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, N, D) tokens on a ``grid`` -> (B, D, gh, gw) map."""
    batch, _, dim = tokens.shape
    return tokens.transpose(1, 2).reshape(batch, dim, grid[0], grid[1])


def map_to_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """(B, D, h, w) map -> (B, h*w, D) tokens."""
    return feature_map.flatten(2).transpose(1, 2)


def _patch_size(vit: nn.Module) -> int:
    size = vit.patch_embed.patch_size
    return int(size[0] if isinstance(size, tuple | list) else size)


def _create_timm_vit(
    model_name: str, pretrained: bool, drop_path_rate: float, kwargs: dict[str, Any]
) -> nn.Module:
    try:
        return timm.create_model(
            model_name, pretrained=pretrained, drop_path_rate=drop_path_rate, num_classes=0, **kwargs
        )
    except RuntimeError as error:
        if "Unknown model" in str(error):
            raise ValueError(
                f"timm has no model named {model_name!r}; see `timm.list_models('vit_*')`."
            ) from error
        raise
    except OSError as error:  # hub not reachable / weights not cached
        raise RuntimeError(
            f"Could not download pretrained weights for {model_name!r} ({error}). Without network "
            "access, set `pretrained: false` and give a local file with `checkpoint_path: FILE`."
        ) from error


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors`` or a torch file without running code from it.

    A torch file may hold the state dict itself or under ``state_dict`` / ``model``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint file {path} does not exist.")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Could not read {path} as a weights-only torch checkpoint ({error}). Convert it to "
            ".safetensors or save a plain state dict."
        ) from error
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__}).")
    return obj


def load_backbone_weights(vit: nn.Module, path: Path) -> None:
    """Load a local state dict into the timm model; mismatched keys raise one clear error."""
    state = read_state_dict(path)
    for prefix in ("module.", "backbone.", "vit."):
        if state and all(key.startswith(prefix) for key in state):
            state = {key[len(prefix) :]: value for key, value in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith("head.")}
    if "pos_embed" in state and hasattr(vit, "pos_embed") and vit.pos_embed is not None:
        state["pos_embed"] = _resize_pos_embed(state["pos_embed"], vit)
    result = vit.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith("head.")]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"Weights in {path} do not fit the backbone: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys "
            f"{result.unexpected_keys[:10]}. Check `model_name` and `model_kwargs`."
        )


def _resize_pos_embed(pos_embed: torch.Tensor, vit: nn.Module) -> torch.Tensor:
    if pos_embed.shape == vit.pos_embed.shape:
        return pos_embed
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    grid = vit.patch_embed.grid_size
    return resample_abs_pos_embed(pos_embed, list(grid), num_prefix_tokens=prefix)
