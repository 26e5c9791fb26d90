"""Turn metric inputs (tensors or lists of per-image tensors) into 8-bit maps and binary masks.

Every measure of the field scores the 8-bit map a user would save, against the ground truth at its
original resolution. This module does that conversion once, on the input's device, then hands the
CPU a compact ``uint8`` map and a ``bool`` mask per image, grouped by size so that images of the
same size are processed together.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

__all__ = ["MapBatch", "PreparedMaps", "prepare_maps", "quantize"]

FOREGROUND_ABOVE = 128


def quantize(probs: torch.Tensor) -> torch.Tensor:
    """The saved 8-bit map of a probability map: ``round(255 * p)`` in float32, as uint8.

    The same expression the prediction writer uses, so in-training numbers equal the numbers
    computed later from the PNG files.
    """
    return (probs.detach().float().clamp(0, 1) * 255).round().to(torch.uint8)


@dataclass
class MapBatch:
    """Images of one size: 8-bit prediction maps (B, H, W) uint8 and masks (B, H, W) bool."""

    maps: np.ndarray
    masks: np.ndarray
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of every image in the batch."""
        return int(self.maps.shape[1]), int(self.maps.shape[2])

    def __len__(self) -> int:
        return int(self.maps.shape[0])


class PreparedMaps(tuple):
    """Batches already prepared by :func:`prepare_maps`; metrics accept them as ``preds``.

    Passing the same prepared object to several metrics shares the quantisation and the
    histograms among them (what :class:`SODMetrics` does).
    """


def _range_error(low: float, high: float) -> ValueError:
    return ValueError(
        f"preds must be probabilities in [0, 1] (found values in [{low}, {high}]); "
        "apply sigmoid/softmax first"
    )


def _quantize_cpu(values: np.ndarray) -> np.ndarray:
    """numpy twin of :func:`quantize` (identical float32 operations, no torch threading)."""
    values = np.clip(values.astype(np.float32), 0, 1)
    values *= np.float32(255)
    return np.rint(values, out=values).astype(np.uint8)


def _to_u8(preds: torch.Tensor) -> np.ndarray:
    """uint8 maps stay as they are (already saved maps); probabilities are quantised.

    Off the CPU the quantisation runs on the device and only uint8 maps are copied back.
    """
    preds = preds.detach()
    if preds.dtype == torch.uint8:
        return preds.cpu().numpy()
    if not torch.is_floating_point(preds):
        raise TypeError(
            f"preds must hold float probabilities in [0, 1] or uint8 maps, got dtype {preds.dtype}"
        )
    if preds.device.type != "cpu":
        low, high = (float(v) for v in torch.aminmax(preds.float()))
        if not (low >= 0 and high <= 1):  # also False for NaN
            raise _range_error(low, high)
        return quantize(preds).cpu().numpy()
    values = preds.float().numpy() if preds.dtype == torch.bfloat16 else preds.numpy()
    low, high = float(values.min()), float(values.max())
    if not (low >= 0 and high <= 1):
        raise _range_error(low, high)
    return _quantize_cpu(values)


def _to_mask(target: torch.Tensor) -> np.ndarray:
    """bool as is; uint8 is an 8-bit mask (foreground > 128); other dtypes must hold 0/1."""
    target = target.detach()
    if target.dtype == torch.bool:
        return target.cpu().numpy()
    if target.dtype == torch.uint8:
        if target.device.type == "cpu":
            return target.numpy() > FOREGROUND_ABOVE
        return (target > FOREGROUND_ABOVE).cpu().numpy()
    values = (
        target.float().cpu().numpy() if target.dtype == torch.bfloat16 else target.cpu().numpy()
    )
    mask = values == 1
    if np.count_nonzero(mask) + np.count_nonzero(values == 0) != values.size:
        raise ValueError(
            f"target of dtype {target.dtype} must hold only 0 and 1; pass 8-bit masks as "
            "uint8 (foreground is > 128) or boolean masks"
        )
    return mask


def _squeeze(t: torch.Tensor, what: str) -> torch.Tensor:
    """(N,1,H,W) -> (N,H,W); (H,W) -> (1,H,W); (N,H,W) stays."""
    if t.ndim == 4 and t.shape[1] == 1:
        return t[:, 0]
    if t.ndim == 3:
        return t
    if t.ndim == 2:
        return t[None]
    raise ValueError(f"{what} must be shaped (N,H,W), (N,1,H,W) or (H,W), got {tuple(t.shape)}")


def _as_tensor(x: Any) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def _pairs(preds: Any, target: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Per-image (pred, target) pairs, or whole batches when both are batched tensors."""
    preds = torch.from_numpy(preds) if isinstance(preds, np.ndarray) else preds
    target = torch.from_numpy(target) if isinstance(target, np.ndarray) else target
    if isinstance(preds, torch.Tensor) and isinstance(target, torch.Tensor):
        p, t = _squeeze(preds, "preds"), _squeeze(target, "target")
        return [(p, t)]
    if not isinstance(preds, Sequence) or not isinstance(target, Sequence):
        raise TypeError("preds and target must both be tensors or both be lists of tensors")
    if len(preds) != len(target):
        raise ValueError(f"got {len(preds)} predictions but {len(target)} targets")
    return [
        (_squeeze(_as_tensor(p), "preds"), _squeeze(_as_tensor(t), "target"))
        for p, t in zip(preds, target, strict=True)
    ]


def prepare_maps(preds: Any, target: Any = None) -> PreparedMaps:
    """Validate and convert ``update(preds, target)`` inputs into same-size CPU batches.

    preds: float probabilities in [0, 1] (quantised to the 8-bit map) or uint8 maps, shaped
    (N,H,W), (N,1,H,W), or a list of per-image (H,W)/(1,H,W) tensors of different sizes.
    target: bool, {0,1} or uint8 8-bit masks (foreground > 128), shaped like preds.
    A :class:`PreparedMaps` is returned unchanged (then target must be None).
    """
    if isinstance(preds, PreparedMaps):
        if target is not None:
            raise ValueError("target must be None when preds are already prepared maps")
        return preds
    groups: dict[tuple[int, int], tuple[list[np.ndarray], list[np.ndarray]]] = {}
    for p, t in _pairs(preds, target):
        if p.shape != t.shape:
            raise ValueError(
                f"prediction shape {tuple(p.shape)} differs from target shape {tuple(t.shape)}; "
                "resize predictions to the ground truth's original size first"
            )
        if p.shape[-1] * p.shape[-2] == 0:
            raise ValueError(f"cannot score an empty image of shape {tuple(p.shape)}")
        maps, masks = groups.setdefault((p.shape[-2], p.shape[-1]), ([], []))
        maps.append(_to_u8(p))
        masks.append(_to_mask(t))
    return PreparedMaps(
        MapBatch(np.concatenate(m), np.concatenate(g)) for m, g in groups.values() if m
    )
