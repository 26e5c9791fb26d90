"""SODMetrics: every measure of the field in one metric, sharing the per-image work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import torch
from torch import nn
from torchmetrics import Metric

from weft_lightning.metrics.inputs import prepare_maps
from weft_lightning.metrics.measures import (
    EMeasure,
    FMeasure,
    MeanAbsoluteError,
    SMeasure,
    WeightedFMeasure,
)
from weft_lightning.metrics.overlap import ForegroundDice, ForegroundIoU, TwoClassOverlap

__all__ = ["METRIC_KEYS", "SODMetrics"]

METRIC_KEYS = (
    "sm",
    "mae",
    "em_adp",
    "em_mean",
    "em_max",
    "fm_adp",
    "fm_mean",
    "fm_max",
    "wfm",
    "iou",
    "dice",
    "miou",
    "mdice",
    "mfscore",
)
CURVE_KEYS = ("em_curve", "fm_curve", "precision", "recall")


class SODMetrics(Metric):
    """S-measure, MAE, E-/F-measures, weighted F, IoU, Dice, mIoU, mDice and mFscore of a test set.

    ``update(preds, target)`` takes what each measure takes (see :class:`SODMeasure`); typical
    use in a LightningModule: preds a list of (H0, W0) float probability tensors resized to each
    image's original size, target the list of uint8 (H0, W0) original masks (foreground > 128).
    The inputs are quantised, moved to the CPU and histogrammed once for all measures.

    ``compute()`` returns the flat dict of :data:`METRIC_KEYS` (float64 scalars); ``curves()``
    the 256-point E-measure, F-measure, precision and recall curves. ``iou`` / ``dice`` are
    per-image means (PySODMetrics); ``miou`` / ``mdice`` / ``mfscore`` are mmseg's
    ``eval_metrics`` over background and foreground with areas summed over the dataset, all
    three from one confusion state (:class:`TwoClassOverlap`). Each measure syncs its own
    summed state under DDP. Keyword arguments (e.g. ``sync_on_compute``) go to every measure.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.measures = nn.ModuleDict(
            {
                "sm": SMeasure(**kwargs),
                "mae": MeanAbsoluteError(**kwargs),
                "em": EMeasure(**kwargs),
                "fm": FMeasure(**kwargs),
                "wfm": WeightedFMeasure(**kwargs),
                "iou": ForegroundIoU(**kwargs),
                "dice": ForegroundDice(**kwargs),
                "two_class": TwoClassOverlap(**kwargs),
            }
        )

    def update(self, preds: Any, target: Any = None) -> None:
        """Accumulate a batch of predictions and masks into every measure."""
        prepared = prepare_maps(preds, target)
        for measure in cast("Mapping[str, Metric]", self.measures).values():
            measure.update(prepared)

    def forward(self, preds: Any, target: Any = None) -> None:
        """Same as :meth:`update` (batch-level values of these measures are not meaningful)."""
        self.update(preds, target)

    def compute(self) -> dict[str, torch.Tensor]:
        """Dataset values under the keys of :data:`METRIC_KEYS`."""
        m = cast("Mapping[str, Metric]", self.measures)
        em, fm = m["em"].compute(), m["fm"].compute()
        values = {k: m[k].compute() for k in ("sm", "mae", "wfm", "iou", "dice")}
        values.update(m["two_class"].compute())
        values.update({k: v for k, v in {**em, **fm}.items() if k not in CURVE_KEYS})
        return {k: values[k] for k in METRIC_KEYS}

    def curves(self) -> dict[str, torch.Tensor]:
        """(256,) curves em_curve, fm_curve, precision, recall; entry k is threshold 255 - k."""
        m = cast("Mapping[str, Metric]", self.measures)
        curves = {**m["em"].compute(), **m["fm"].compute()}
        return {k: curves[k] for k in CURVE_KEYS}

    def reset(self) -> None:
        """Reset every measure."""
        super().reset()
        for measure in cast("Mapping[str, Metric]", self.measures).values():
            measure.reset()
