"""The field's segmentation measures as torchmetrics, equal to PySODMetrics and faster.

Conventions (those of PySODMetrics 1.6.2 and Fan et al.'s MATLAB toolbox):

- predictions are scored as the 8-bit map a user saves, ``round(255 p)``; that map is read as
  ``v / 255`` and min-max stretched unless constant; ground truth is foreground where > 128 in
  8 bits; everything at the ground truth's original resolution, in float64;
- E- and F-measure curves use q = floor(255 p) at 256 thresholds; ``*_mean`` / ``*_max`` are the
  mean / max of the image-averaged curve, ``*_adp`` use the threshold min(2 mean(p), 1);
- IoU, Dice, mIoU, mDice and mFscore binarise the (unstretched) 8-bit map at 128, i.e.
  p >= 0.5; IoU and Dice are per-image means (0 for 0/0, as PySODMetrics), while mIoU, mDice and
  mFscore follow mmsegmentation's ``eval_metrics`` on the classes background and foreground:
  per-class intersection, prediction and label areas summed over the dataset, then IoU = I/U,
  Dice = 2I/(P+L), Fscore (beta = 1) of precision I/P and recall I/L, 0/0 = NaN, and the
  NaN-ignoring mean over the two classes.

Speed comes from sharing one joint histogram per image between the measures and from an exact,
band-limited weighted F-measure; see :mod:`weft_lightning.metrics.distance` for which path runs
where.
"""

from weft_lightning.metrics.base import SODMeasure
from weft_lightning.metrics.collection import CURVE_KEYS, METRIC_KEYS, SODMetrics
from weft_lightning.metrics.inputs import MapBatch, PreparedMaps, prepare_maps, quantize
from weft_lightning.metrics.measures import (
    EMeasure,
    FMeasure,
    MeanAbsoluteError,
    SMeasure,
    WeightedFMeasure,
)
from weft_lightning.metrics.overlap import (
    ForegroundDice,
    ForegroundIoU,
    TwoClassMDice,
    TwoClassMFscore,
    TwoClassMIoU,
    TwoClassOverlap,
)

__all__ = [
    "CURVE_KEYS",
    "METRIC_KEYS",
    "EMeasure",
    "FMeasure",
    "ForegroundDice",
    "ForegroundIoU",
    "MapBatch",
    "MeanAbsoluteError",
    "PreparedMaps",
    "SMeasure",
    "SODMeasure",
    "SODMetrics",
    "TwoClassMDice",
    "TwoClassMFscore",
    "TwoClassMIoU",
    "TwoClassOverlap",
    "WeightedFMeasure",
    "prepare_maps",
    "quantize",
]
