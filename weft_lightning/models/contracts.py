"""What a segmentor needs from its backbone and its head, as runtime-checkable protocols.

A backbone maps images to a 4-level pyramid and states its channels; a head turns the pyramid
into outputs, a loss and class scores. The optional capabilities are protocols of their own, so
that a caller asks ``isinstance(backbone, HasLRScales)`` instead of probing for attributes.
:func:`check_backbone` and :func:`check_head` run when a Segmentor is built and name what is
missing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import torch

__all__ = [
    "Backbone",
    "GradCheckpointing",
    "HasAuxiliaryLoss",
    "HasLRScales",
    "HasRoutingStats",
    "Head",
    "check_backbone",
    "check_head",
]


@runtime_checkable
class Backbone(Protocol):
    """Images (B, 3, H, W) -> four maps at strides 4, 8, 16, 32 with ``out_channels``."""

    out_channels: Sequence[int]

    def __call__(self, images: torch.Tensor) -> list[torch.Tensor]: ...


@runtime_checkable
class Head(Protocol):
    """A pyramid -> raw outputs; their training loss, class scores and probability."""

    def __call__(self, features: list[torch.Tensor]) -> Any: ...

    def loss(self, outputs: Any, masks: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses (``loss`` is their sum) of outputs against (B, 1, H, W) masks (255: ignore)."""
        ...

    def scores(self, outputs: Any, size: tuple[int, int]) -> torch.Tensor:
        """Class scores (B, K, H, W) at ``size``."""
        ...

    def probability(self, scores: torch.Tensor) -> torch.Tensor:
        """Foreground probability (B, 1, H, W) from (averaged, resized) scores."""
        ...


@runtime_checkable
class GradCheckpointing(Protocol):
    """Recomputes its memory-heavy parts in backward when enabled (timm's name)."""

    def set_grad_checkpointing(self, enable: bool = True) -> None: ...


@runtime_checkable
class HasLRScales(Protocol):
    """Scales the learning rate of its parameters (layer-wise LR decay)."""

    def lr_scales(self) -> dict[str, float]:
        """LR factor per parameter name (relative to the backbone)."""
        ...


@runtime_checkable
class HasAuxiliaryLoss(Protocol):
    """Adds a loss of its own to the head's (the experts' load-balancing loss)."""

    def auxiliary_loss(self) -> torch.Tensor | None: ...


@runtime_checkable
class HasRoutingStats(Protocol):
    """Counts which experts its routers chose."""

    def routing_stats(self, reset: bool = True) -> dict[str, float]: ...


def _missing(module: object, protocol: type, members: Sequence[str]) -> list[str]:
    return [] if isinstance(module, protocol) else [m for m in members if not hasattr(module, m)]


def check_backbone(backbone: object) -> None:
    """Raise a TypeError naming what ``backbone`` lacks of the :class:`Backbone` contract."""
    missing = _missing(backbone, Backbone, ("out_channels", "__call__"))
    if missing or len(list(getattr(backbone, "out_channels", ()))) != 4:
        raise TypeError(
            f"{type(backbone).__name__} is not a segmentor backbone: it must be called on images "
            "and return four maps (strides 4, 8, 16, 32) and state their channels as "
            f"`out_channels` (4 ints); missing: {', '.join(missing) or 'four out_channels'}."
        )


def check_head(head: object) -> None:
    """Raise a TypeError naming what ``head`` lacks of the :class:`Head` contract."""
    missing = _missing(head, Head, ("__call__", "loss", "scores", "probability"))
    if missing:
        raise TypeError(
            f"{type(head).__name__} is not a segmentor head: it must be called on the pyramid "
            f"and give `loss`, `scores` and `probability`; missing: {', '.join(missing)}."
        )
