"""Parameter reports of a segmentor: totals and the share that trains, per part."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, cast

from torch import nn

__all__ = ["count", "parameter_report", "vit_of"]


def count(parameters: Iterable[nn.Parameter]) -> dict[str, int]:
    """Total and trainable element counts of distinct parameters."""
    seen: dict[int, nn.Parameter] = {id(p): p for p in parameters}
    return {
        "params": sum(p.numel() for p in seen.values()),
        "trainable": sum(p.numel() for p in seen.values() if p.requires_grad),
    }


def vit_of(backbone: nn.Module) -> nn.Module | None:
    """The timm ViT inside a backbone (FrozenViT, WEFTBackbone, PEFT wrappers), if any."""
    for module in backbone.modules():
        vit = getattr(module, "vit", None)
        if isinstance(vit, nn.Module) and hasattr(vit, "blocks"):
            return vit
    return None


def parameter_report(segmentor: nn.Module) -> dict[str, Any]:
    """Counts for the whole model and its parts: frozen ViT, WEFT branch and head."""
    backbone, head = cast(nn.Module, segmentor.backbone), cast(nn.Module, segmentor.head)
    vit = vit_of(backbone)
    vit_ids = {id(p) for p in vit.parameters()} if vit is not None else set()
    parts = {
        "backbone": count(vit.parameters()) if vit is not None else count([]),
        "weft": count(p for p in backbone.parameters() if id(p) not in vit_ids),
        "head": count(head.parameters()),
    }
    total = count(segmentor.parameters())
    return {
        "total_params": total["params"],
        "trainable_params": total["trainable"],
        "trainable_percent": round(100.0 * total["trainable"] / max(total["params"], 1), 2),
        "parts": parts,
    }
