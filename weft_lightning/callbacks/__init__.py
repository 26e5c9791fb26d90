"""Callbacks: checkpoints, prediction maps, routing stats, sample images, run summary, NaN guard,
config, experiment-run records."""

from weft_lightning.callbacks.config_logger import LoggerSaveConfigCallback
from weft_lightning.callbacks.experiment_run import ExperimentRun
from weft_lightning.callbacks.model_checkpoint import ModelCheckpoint
from weft_lightning.callbacks.nan_guard import NaNGuard, NonFiniteError
from weft_lightning.callbacks.prediction_writer import PredictionWriter
from weft_lightning.callbacks.routing_stats import RoutingStats
from weft_lightning.callbacks.run_summary import RunSummary
from weft_lightning.callbacks.sample_images import SampleImages

__all__ = [
    "ExperimentRun",
    "LoggerSaveConfigCallback",
    "ModelCheckpoint",
    "NaNGuard",
    "NonFiniteError",
    "PredictionWriter",
    "RoutingStats",
    "RunSummary",
    "SampleImages",
]
