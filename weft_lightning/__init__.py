"""weft-lightning: WEFT fine-tuning of frozen vision foundation models for binary segmentation."""

__version__ = "0.2.0"  # the single source: pyproject.toml reads it
