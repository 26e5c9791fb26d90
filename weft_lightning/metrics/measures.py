"""The field's saliency measures as torchmetrics: MAE, S-measure, E-measure, F-measure, wF-measure.

Values equal PySODMetrics 1.6.2 (Fan et al.'s MATLAB semantics) on the same 8-bit maps; see the
package docstring for the conventions. Curves have 256 entries, entry k meaning "q >= 255 - k"
with q = floor(255 p) (entry 0 is threshold 255, entry 255 threshold 0, as in the reference).
"""

from __future__ import annotations

from typing import Any

import torch

from weft_lightning.metrics import functional as F
from weft_lightning.metrics.base import SODMeasure
from weft_lightning.metrics.histogram import LEVELS, histogram_stats
from weft_lightning.metrics.inputs import MapBatch
from weft_lightning.metrics.weighted import weighted_fmeasure_batch

__all__ = ["EMeasure", "FMeasure", "MeanAbsoluteError", "SMeasure", "WeightedFMeasure"]


class MeanAbsoluteError(SODMeasure):
    """Mean over images of mean |p - gt| (lower is better)."""

    higher_is_better = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("mae_sum")

    def _update_batch(self, batch: MapBatch) -> None:
        self._accumulate("mae_sum", F.mae(histogram_stats(batch)))

    def compute(self) -> torch.Tensor:
        """Dataset MAE."""
        return self._mean("mae_sum")


class SMeasure(SODMeasure):
    """Structure measure (Fan et al., ICCV 2017), alpha = 0.5, mean over images.

    Like the reference, an image whose foreground centroid falls on the last row or column
    leaves a quadrant empty and yields NaN (which then propagates to the dataset value).
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("sm_sum")

    def _update_batch(self, batch: MapBatch) -> None:
        self._accumulate("sm_sum", F.smeasure(histogram_stats(batch)))

    def compute(self) -> torch.Tensor:
        """Dataset S-measure."""
        return self._mean("sm_sum")


class EMeasure(SODMeasure):
    """Enhanced-alignment measure (Fan et al., IJCAI 2018): adaptive, mean, max and curve.

    ``em_max`` is the max of the image-averaged curve, not the mean of per-image maxima.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("adp_sum")
        self._add_sum("curve_sum", (LEVELS,))

    def _update_batch(self, batch: MapBatch) -> None:
        st = histogram_stats(batch)
        gt_count = st.fg.sum(1)
        tp, fp = F.adaptive_counts(st, batch)
        self._accumulate("adp_sum", F.emeasure_from_counts(tp, fp, gt_count, st.size))
        tp, fp = F.threshold_curves(st)
        curves = F.emeasure_from_counts(tp, fp, gt_count[:, None], st.size)
        self._accumulate("curve_sum", curves)

    def compute(self) -> dict[str, torch.Tensor]:
        """em_adp, em_mean, em_max and em_curve (256,)."""
        curve = self._mean("curve_sum")
        return {
            "em_adp": self._mean("adp_sum"),
            "em_mean": curve.mean(),
            "em_max": curve.max(),
            "em_curve": curve,
        }


class FMeasure(SODMeasure):
    """F-measure with beta^2 = 0.3: adaptive, mean, max, precision/recall and F curves."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("adp_sum")
        for name in ("fm_curve_sum", "precision_sum", "recall_sum"):
            self._add_sum(name, (LEVELS,))

    def _update_batch(self, batch: MapBatch) -> None:
        st = histogram_stats(batch)
        gt_count = st.fg.sum(1)
        tp, fp = F.adaptive_counts(st, batch)
        self._accumulate("adp_sum", F.fmeasure_adaptive(tp, fp, gt_count))
        precision, recall, fm = F.fmeasure_curves(*F.threshold_curves(st), gt_count)
        self._accumulate("fm_curve_sum", fm)
        self._accumulate("precision_sum", precision)
        self._accumulate("recall_sum", recall)

    def compute(self) -> dict[str, torch.Tensor]:
        """fm_adp, fm_mean, fm_max, and the curves fm_curve, precision, recall (256,)."""
        curve = self._mean("fm_curve_sum")
        return {
            "fm_adp": self._mean("adp_sum"),
            "fm_mean": curve.mean(),
            "fm_max": curve.max(),
            "fm_curve": curve,
            "precision": self._mean("precision_sum"),
            "recall": self._mean("recall_sum"),
        }


class WeightedFMeasure(SODMeasure):
    """Weighted F-measure (Margolin et al., CVPR 2014), beta^2 = 1, mean over images.

    The distance transform runs on the CPU (OpenCV's exact transform, scipy for very large
    images); nearest-object indices follow scipy's tie rule exactly. See ``metrics.distance``.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._add_sum("wfm_sum")

    def _update_batch(self, batch: MapBatch) -> None:
        self._accumulate("wfm_sum", weighted_fmeasure_batch(batch))

    def compute(self) -> torch.Tensor:
        """Dataset weighted F-measure."""
        return self._mean("wfm_sum")
