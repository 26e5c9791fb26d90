"""Callbacks: checkpoints, prediction maps, routing stats, sample images, run summary, NaN guard,
config."""

from weft_lightning.callbacks.config_logger import LoggerSaveConfigCallback
from weft_lightning.callbacks.model_checkpoint import ModelCheckpoint
from weft_lightning.callbacks.nan_guard import NaNGuard, NonFiniteLossError
from weft_lightning.callbacks.prediction_writer import PredictionWriter
from weft_lightning.callbacks.routing_stats import RoutingStats
from weft_lightning.callbacks.run_summary import RunSummary
from weft_lightning.callbacks.sample_images import SampleImages

__all__ = [
    "LoggerSaveConfigCallback",
    "ModelCheckpoint",
    "NaNGuard",
    "NonFiniteLossError",
    "PredictionWriter",
    "RoutingStats",
    "RunSummary",
    "SampleImages",
]
