"""Conventions shared by data, models and metrics, each stated once.

This module imports nothing from the package, so every layer may use it.
"""

from __future__ import annotations

#: Ground-truth foreground: a pixel strictly above this value in the 8-bit mask (the field's rule).
FOREGROUND_THRESHOLD = 128

#: Training-mask value of pixels that no loss may see (padding); foreground is 1, background 0.
IGNORE_INDEX = 255

#: Network inputs have sides that are multiples of this (the coarsest pyramid stride).
SIZE_MULTIPLE = 32

#: ImageNet channel statistics (RGB, 0-1 scale), the default normalisation.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
