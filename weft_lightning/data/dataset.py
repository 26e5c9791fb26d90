"""PairedFolderDataset: images and masks paired by file stem, decoded and validated on load."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from weft_lightning.data.catalog import IMAGE_EXTENSIONS, LayoutError
from weft_lightning.data.image_io import (
    ImageReading,
    ImageReadingError,
    read_raster,
    reading_note,
    to_rgb8,
)
from weft_lightning.data.masks import FOREGROUND_THRESHOLD, binarize, read_mask

__all__ = [
    "FOREGROUND_THRESHOLD",
    "IMAGE_EXTENSIONS",
    "DataFileError",
    "PairedFolderDataset",
    "binarize",
    "list_images",
    "pair_files",
    "read_image",
    "read_mask",
]


class DataFileError(OSError):
    """A data file that cannot be used; the message names it (also across worker processes)."""


@dataclass(frozen=True)
class Pair:
    """One sample on disk: an image and (optionally) its mask."""

    image: Path
    mask: Path | None

    @property
    def stem(self) -> str:
        return self.image.stem


def list_images(folder: Path) -> dict[str, Path]:
    """Image files of ``folder`` keyed by stem; two files with the same stem are an error."""
    if not folder.is_dir():
        raise FileNotFoundError(f"Folder {folder} does not exist.")
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        hidden = path.name.startswith(".")  # e.g. macOS' ._name.png resource forks
        if hidden or path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in files:
            raise LayoutError(
                f"Two files share the stem {path.stem!r} in {folder}: {files[path.stem].name} and "
                f"{path.name}. Remove or rename one of them."
            )
        files[path.stem] = path
    return files


def pair_files(image_dir: Path, mask_dir: Path | None) -> list[Pair]:
    """Pair images and masks by stem; an image without a mask is one clear error."""
    images = list_images(image_dir)
    if not images:
        raise LayoutError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {image_dir}.")
    if mask_dir is None:
        return [Pair(path, None) for path in images.values()]
    masks = list_images(mask_dir)
    missing = [path for stem, path in images.items() if stem not in masks]
    if missing:
        listed = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise LayoutError(
            f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}: {listed}. "
            "Add the masks (same file stem) or remove the images."
        )
    return [Pair(path, masks[stem]) for stem, path in images.items()]


def read_image(path: Path, reading: ImageReading = ImageReading()) -> np.ndarray:
    """Decode an image as RGB uint8 (H, W, 3), its bands and bit depth read as ``reading``
    says; an undecodable or truncated file, or a band it has not, raises naming it."""
    try:
        array, alpha = read_raster(Path(path))
        return to_rgb8(array, alpha, reading, Path(path))
    except Exception as error:
        raise DataFileError(
            f"Cannot decode image {path}: {error}. Replace or remove the file "
            "(`weft data check` lists every such file)."
        ) from error


def fit_mask(
    mask: np.ndarray, image_shape: tuple[int, ...], path: Path, resize: bool
) -> np.ndarray:
    """Check a mask's size against its image; resize it (nearest) with a warning if allowed."""
    (mh, mw), (ih, iw) = mask.shape, image_shape[:2]
    if (mh, mw) == (ih, iw):
        return mask
    if not resize:
        raise DataFileError(
            f"Mask {path} is {mw}x{mh} but its image is {iw}x{ih} (W x H); fix the pair, or set "
            "data.resize_mismatched_masks=true to resize masks to their images (nearest)."
        )
    warnings.warn(
        f"Mask {path} is {mw}x{mh} but its image is {iw}x{ih}: resized to the image (nearest).",
        stacklevel=2,
    )
    return np.asarray(Image.fromarray(mask).resize((iw, ih), Image.Resampling.NEAREST))


def seed_transform(transform: Callable[..., Any], seed: int | None = None) -> None:
    """Seed the augmentation with ``seed``, or draw its seed from torch's generator.

    Albumentations keeps a generator of its own that ``seed_everything`` does not reach; seeding
    it per item from torch (which Lightning seeds per worker and restores on resume) makes the
    augmentations reproducible for a given seed, also across an interrupted and resumed run.
    """
    if hasattr(transform, "set_random_seed"):
        transform.set_random_seed(int(torch.randint(0, 2**31 - 1, ())) if seed is None else seed)


def first_image_note(path: Path, reading: ImageReading) -> str | None:
    """:func:`reading_note` of a dataset's first image; a band it lacks raises, a file that
    cannot be decoded is left to be reported, naming it, when it is loaded."""
    try:
        return reading_note(path, reading)
    except ImageReadingError:
        raise
    except Exception:  # an unreadable file is reported, naming it, when it is loaded
        return None


class PairedFolderDataset(Dataset):
    """Images (and masks) from two folders, paired by file stem.

    Each item is a dict with ``image`` (float tensor after ``transform``), ``name`` (stem),
    ``path``, ``size`` (original (H, W)) and ``dataset``; training items (masks given, no
    ``keep_original``) add ``mask`` (1, h, w) float with 0 (background), 1 (foreground) and
    :data:`~weft_lightning.constants.IGNORE_INDEX` (padding); evaluation items
    (``keep_original``) add ``gt``, the original 8-bit mask (0/255) at the image's size.

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks with the same stems; ``None`` for prediction-only data.
        transform: callable ``(image=np.ndarray, mask=np.ndarray) -> dict`` (albumentations).
        name: dataset name used in logs and output folders.
        reading: how bands and bit depths become 8-bit RGB (what it decides is said once).
        keep_original: evaluation items: the untransformed mask as ``gt`` instead of ``mask``.
        resize_mismatched_masks: resize a mask whose size differs from its image (nearest, with
            a warning) instead of raising.
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        name: str = "dataset",
        keep_original: bool = False,
        resize_mismatched_masks: bool = False,
        reading: ImageReading = ImageReading(),
    ) -> None:
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.pairs: Sequence[Pair] = pair_files(self.image_dir, self.mask_dir)
        self.transform = transform
        self.name = name
        self.keep_original = keep_original
        self.resize_mismatched_masks = resize_mismatched_masks
        self.reading = reading
        if self.pairs:
            note = first_image_note(self.pairs[0].image, reading)
            if note:
                warnings.warn(f"Dataset {name} ({self.image_dir}): {note}.", stacklevel=2)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.load(index)

    def load(self, index: int, seed: int | None = None) -> dict[str, Any]:
        """Item ``index``; its augmentation is drawn from ``seed`` (None: from torch's
        generator)."""
        pair = self.pairs[index]
        image = read_image(pair.image, self.reading)
        mask = None
        if pair.mask is not None:
            mask = binarize(read_mask(pair.mask)).astype(np.uint8)
            mask = fit_mask(mask, image.shape, pair.mask, self.resize_mismatched_masks)
        item: dict[str, Any] = {
            "name": pair.stem,
            "path": str(pair.image),
            "size": tuple(image.shape[:2]),
            "dataset": self.name,
        }
        if mask is not None and self.keep_original:
            item["gt"] = mask * 255
            mask = None
        if self.transform is not None:
            seed_transform(self.transform, seed)
            out = self.transform(image=image, **({} if mask is None else {"mask": mask}))
            image, mask = out["image"], out.get("mask")
        item["image"] = image
        if mask is not None:
            item["mask"] = torch.as_tensor(mask).unsqueeze(0).float()
        return item
