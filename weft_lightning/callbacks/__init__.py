"""Callbacks: prediction maps, routing statistics, sample images."""

from weft_lightning.callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]
