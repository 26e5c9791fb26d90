"""The error of an experiment spec that cannot be run."""

from __future__ import annotations

__all__ = ["SpecError"]


class SpecError(ValueError):
    """An experiment spec that cannot be run; the message names the file and the key."""
