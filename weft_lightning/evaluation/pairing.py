"""Pair prediction maps with ground-truth masks by file stem, across image extensions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from weft_lightning.data.dataset import list_images

__all__ = ["EvaluationError", "Pairing", "pair_folders"]


class EvaluationError(ValueError):
    """A problem with the files or the spec of an evaluation, stated for the user."""


@dataclass
class Pairing:
    """Matched (stem, prediction, mask) triples and the stems found on one side only."""

    pairs: list[tuple[str, Path, Path]]
    missing: list[str] = field(default_factory=list)  # masks without a prediction
    extra: list[str] = field(default_factory=list)  # predictions without a mask


def _images_by_stem(folder: Path, what: str) -> dict[str, Path]:
    try:
        return list_images(folder)
    except (FileNotFoundError, ValueError) as error:
        raise EvaluationError(f"{what} folder: {error}") from error


def pair_folders(pred_dir: Path, gt_dir: Path) -> Pairing:
    """Pair the images of pred_dir and gt_dir by stem; raise if nothing pairs."""
    preds = _images_by_stem(Path(pred_dir), "Prediction")
    masks = _images_by_stem(Path(gt_dir), "Ground-truth")
    common = sorted(preds.keys() & masks.keys())
    if not common:
        raise EvaluationError(
            f"No prediction in {pred_dir} ({len(preds)} images) matches a mask in {gt_dir} "
            f"({len(masks)} images) by file stem; check the two folders"
        )
    return Pairing(
        pairs=[(stem, preds[stem], masks[stem]) for stem in common],
        missing=sorted(masks.keys() - preds.keys()),
        extra=sorted(preds.keys() - masks.keys()),
    )
