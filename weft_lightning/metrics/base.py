"""Common base of the field's measures as torchmetrics: input handling and summed float64 state."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import torch
from torchmetrics import Metric

from weft_lightning.metrics.inputs import MapBatch, prepare_maps

__all__ = ["SODMeasure"]


class SODMeasure(Metric):
    """A dataset-level measure accumulated as float64 sums (DDP reduction: ``sum``).

    ``update(preds, target)``: preds are float probabilities in [0, 1] (quantised to the saved
    8-bit map, ``round(255 p)``) or uint8 maps, shaped (N,H,W), (N,1,H,W) or a list of per-image
    (H,W) tensors of different sizes; target is bool, {0,1} or uint8 (foreground > 128) of the
    same shapes, at the ground truth's original resolution. A :class:`PreparedMaps` from
    :func:`prepare_maps` may be passed as preds (target None) to share work between measures.

    Where things run: the 8-bit quantisation on the input's device; the statistics on the CPU
    (vectorised numpy over images of the same size, one histogram per image); the state lives on
    the metric's device, so it syncs under DDP like any torchmetrics state.
    """

    is_differentiable = False
    higher_is_better: bool | None = True
    full_state_update = False

    count: torch.Tensor  # state (add_state)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def _apply(self, fn: Any, exclude_state: Any = "") -> Any:
        """Move states like any module, but keep them float64 (``.to(bfloat16)`` included)."""
        this = cast(Metric, super()._apply(fn, exclude_state))
        for key, default in this._defaults.items():
            this._defaults[key] = cast(torch.Tensor, default).double()  # tensor states only
            setattr(this, key, getattr(this, key).double())
        return this

    def _add_sum(self, name: str, shape: tuple[int, ...] = ()) -> None:
        self.add_state(name, torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def _accumulate(self, name: str, per_image: np.ndarray) -> None:
        """Add the batch's per-image values (first axis = image) to the state ``name``."""
        total = torch.as_tensor(np.asarray(per_image, np.float64).sum(0), device=self.device)
        setattr(self, name, getattr(self, name) + total)

    def update(self, preds: Any, target: Any = None) -> None:
        """Accumulate a batch; see the class docstring for the accepted inputs."""
        for batch in prepare_maps(preds, target):
            self._update_batch(batch)
            self.count += len(batch)

    def _update_batch(self, batch: MapBatch) -> None:
        raise NotImplementedError

    def _mean(self, name: str) -> torch.Tensor:
        """Dataset mean of a per-image sum state (NaN before any image)."""
        return getattr(self, name) / self.count
