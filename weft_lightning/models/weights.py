"""Weight files of backbones: read without running code, strip wrapper prefixes, map an original
release's key layout to timm's and load it into a timm ViT with one clear error on a mismatch."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["load_backbone_weights", "read_state_dict", "strip_prefixes"]


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Read weights from ``.safetensors`` or a torch file without running code from it.

    A torch file may hold the state dict itself or under ``state_dict`` / ``model``.
    """
    path = Path(path)
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


def strip_prefixes(
    state: dict[str, torch.Tensor], prefixes: Sequence[str] = ("module.", "backbone.", "vit.")
) -> dict[str, torch.Tensor]:
    """Remove wrapper prefixes (``module.`` from DDP, ``backbone.``, ...) shared by every key."""
    changed = True
    while changed and state:
        changed = False
        for prefix in prefixes:
            if all(key.startswith(prefix) for key in state):
                state = {key[len(prefix) :]: value for key, value in state.items()}
                changed = True
    return state


def load_backbone_weights(vit: nn.Module, path: Path) -> None:
    """Load a local state dict into the timm model; mismatched keys raise one clear error.

    Keys may carry ``module.``/``backbone.``/``vit.`` prefixes; original releases are remapped by
    timm's checkpoint filter of the model family; the position table is resized to the model's.
    """
    path = Path(path)
    state = _timm_layout(strip_prefixes(read_state_dict(path)), vit)
    ignored = ("head.", "norm.", "fc_norm.", "neck.", "attn_pool.")
    state = {k: v for k, v in state.items() if not k.startswith(ignored)}
    if "pos_embed" in state and getattr(vit, "pos_embed", None) is not None:
        state["pos_embed"] = _resize_pos_embed(state["pos_embed"], vit)
    result = vit.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(ignored)]
    if missing or result.unexpected_keys:
        raise ValueError(
            f"Weights in {path} do not fit the backbone: missing keys {missing[:10]}"
            f"{' ...' if len(missing) > 10 else ''}, unexpected keys "
            f"{result.unexpected_keys[:10]}. Check `model_name` and `model_kwargs`."
        )


def _timm_layout(state: dict[str, torch.Tensor], vit: nn.Module) -> dict[str, torch.Tensor]:
    """Map an original release's key layout (DINOv2, SAM, EVA, CLIP, ...) to timm's, using the
    model family's own checkpoint filter; timm-format weights pass through unchanged."""
    remap = getattr(sys.modules[type(vit).__module__], "checkpoint_filter_fn", None)
    return dict(remap(state, vit)) if callable(remap) else state


def _resize_pos_embed(pos_embed: torch.Tensor, vit: Any) -> torch.Tensor:
    # vit: a timm ViT (its pos_embed, patch_embed and num_prefix_tokens are model-specific)
    if pos_embed.shape == vit.pos_embed.shape:
        return pos_embed
    if pos_embed.ndim == 4:  # SAM: (1, H, W, D)
        from timm.layers import resample_abs_pos_embed_nhwc

        return resample_abs_pos_embed_nhwc(pos_embed, list(vit.pos_embed.shape[1:3]))
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(vit, "no_embed_class", False) else vit.num_prefix_tokens
    grid = vit.patch_embed.grid_size
    return resample_abs_pos_embed(pos_embed, list(grid), num_prefix_tokens=prefix)
