"""Convert foreign backbone checkpoints into weights that a timm ViT (and FrozenViT) loads.

Uni-Perceiver (the paper's backbone) is a pre-norm ViT with LayerScale, qkv bias, no class
token, a LayerNorm after the position embedding and no final norm. Its encoder maps one-to-one
onto the timm ``VisionTransformer`` that ``configs/model/vit/uniperceiver_l16.yaml`` defines
(the one place the platform states that ViT's options), except for three
tensors that are all added to every patch token and are therefore folded into the position
table: the spatial table, row 0 of the temporal table and the patch-projection bias (timm's
pre-norm ViT has no projection bias). Bicubic resizing keeps a constant offset unchanged, so
the folded table gives the reference result at every input size.

Command line: ``weft convert uniperceiver IN.pth OUT.safetensors``
(:mod:`weft_lightning.cli.convert`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from weft_lightning.models.weights import strip_prefixes

_EMBED = "visual_embed."
_EMBED_KEYS = {
    "visual_embed.patch_embed.proj.weight",
    "visual_embed.patch_embed.proj.bias",
    "visual_embed.patch_embed.spatial_pos_embed.weight",
    "visual_embed.patch_embed.temporal_pos_embed.weight",
    "visual_embed.embeddings_norm.weight",
    "visual_embed.embeddings_norm.bias",
}
_LAYER_KEYS = {
    "norm1.weight": "norm1.weight",
    "norm1.bias": "norm1.bias",
    "self_attn.in_proj.weight": "attn.qkv.weight",
    "self_attn.in_proj.bias": "attn.qkv.bias",
    "self_attn.out_proj.weight": "attn.proj.weight",
    "self_attn.out_proj.bias": "attn.proj.bias",
    "gamma_1": "ls1.gamma",
    "norm2.weight": "norm2.weight",
    "norm2.bias": "norm2.bias",
    "linear1.weight": "mlp.fc1.weight",
    "linear1.bias": "mlp.fc1.bias",
    "linear2.weight": "mlp.fc2.weight",
    "linear2.bias": "mlp.fc2.bias",
    "gamma_2": "ls2.gamma",
}
_LAYER = re.compile(r"^layers\.(\d+)\.(.+)$")


class CheckpointLayoutError(ValueError):
    """The checkpoint's keys do not have the expected layout."""


def convert_uniperceiver(
    state: dict[str, torch.Tensor], ignore: Sequence[str] = ()
) -> dict[str, torch.Tensor]:
    """Uni-Perceiver encoder state dict -> timm ``VisionTransformer`` state dict.

    Keys may carry ``module.``/``backbone.`` prefixes; keys starting with any of ``ignore``
    (after the prefixes are removed) are dropped. Unknown or missing keys raise one
    :class:`CheckpointLayoutError` that lists them.
    """
    state = strip_prefixes(dict(state), ("module.", "backbone."))
    state = {k: v for k, v in state.items() if not (ignore and k.startswith(tuple(ignore)))}
    depth = _check_layout(state)
    out = _convert_embedding(state)
    for index in range(depth):
        for source, target in _LAYER_KEYS.items():
            out[f"blocks.{index}.{target}"] = state[f"layers.{index}.{source}"]
    return {key: value.detach().float().contiguous().clone() for key, value in out.items()}


def _check_layout(state: dict[str, torch.Tensor]) -> int:
    """Number of layers; raises with every unknown and missing key listed."""
    layers: dict[int, set[str]] = {}
    unknown = []
    for key in state:
        match = _LAYER.match(key)
        if match and match.group(2) in _LAYER_KEYS:
            layers.setdefault(int(match.group(1)), set()).add(match.group(2))
        elif key not in _EMBED_KEYS:
            unknown.append(key)
    depth = max(layers, default=-1) + 1
    missing = sorted(_EMBED_KEYS - state.keys())
    for index in range(depth):
        missing += [f"layers.{index}.{k}" for k in _LAYER_KEYS if k not in layers.get(index, ())]
    if unknown or missing or depth == 0:
        raise CheckpointLayoutError(
            "Not a Uni-Perceiver encoder checkpoint: "
            f"unknown keys {_listing(unknown)}; missing keys {_listing(missing)}"
            f"{'; no `layers.N.*` keys' if depth == 0 else ''}. Drop extra parts with "
            "`--ignore PREFIX` (e.g. text embeddings) or check that the file is the encoder."
        )
    return depth


def _convert_embedding(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    spatial = state[f"{_EMBED}patch_embed.spatial_pos_embed.weight"]
    side = math.isqrt(spatial.shape[0])
    if side * side != spatial.shape[0]:
        raise CheckpointLayoutError(
            f"spatial_pos_embed has {spatial.shape[0]} rows, not a square grid of positions."
        )
    temporal = state[f"{_EMBED}patch_embed.temporal_pos_embed.weight"][0]
    bias = state[f"{_EMBED}patch_embed.proj.bias"]
    return {
        "patch_embed.proj.weight": state[f"{_EMBED}patch_embed.proj.weight"],
        "pos_embed": (spatial + temporal + bias).unsqueeze(0),
        "norm_pre.weight": state[f"{_EMBED}embeddings_norm.weight"],
        "norm_pre.bias": state[f"{_EMBED}embeddings_norm.bias"],
    }


def _listing(keys: Sequence[str], limit: int = 12) -> str:
    if not keys:
        return "none"
    shown = ", ".join(keys[:limit])
    return f"[{shown}{f', ... ({len(keys)} in all)' if len(keys) > limit else ''}]"


def timm_kwargs_for(converted: dict[str, torch.Tensor]) -> dict[str, object]:
    """The sizes (width, depth, MLP ratio, patch, pretraining image size) of converted weights;
    the model's other options come from its config."""
    dim = converted["pos_embed"].shape[-1]
    depth = 1 + max(int(k.split(".")[1]) for k in converted if k.startswith("blocks."))
    hidden = converted["blocks.0.mlp.fc1.weight"].shape[0]
    patch = converted["patch_embed.proj.weight"].shape[-1]
    grid = math.isqrt(converted["pos_embed"].shape[1])
    return {
        "embed_dim": dim,
        "depth": depth,
        "mlp_ratio": hidden / dim,
        "patch_size": patch,
        "img_size": grid * patch,
    }


def save_weights(weights: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """Write ``.safetensors`` (with metadata) or, for any other suffix, a plain torch state dict."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(weights, str(path), metadata=metadata)
    else:
        torch.save(weights, path)
