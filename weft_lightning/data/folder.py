"""PairedFolderDataset: images and masks paired by file stem, decoded and validated on load."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from torch.utils.data import Dataset

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
FOREGROUND_THRESHOLD = 128


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
        if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
            continue
        if path.stem in files:
            raise ValueError(
                f"Two files share the stem {path.stem!r} in {folder}: {files[path.stem].name} and "
                f"{path.name}. Remove or rename one of them."
            )
        files[path.stem] = path
    return files


def pair_files(image_dir: Path, mask_dir: Path | None) -> list[Pair]:
    """Pair images and masks by stem; an image without a mask is one clear error."""
    images = list_images(image_dir)
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found in {image_dir}.")
    if mask_dir is None:
        return [Pair(path, None) for path in images.values()]
    masks = list_images(mask_dir)
    missing = [path for stem, path in images.items() if stem not in masks]
    if missing:
        listed = ", ".join(p.name for p in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{len(missing)} image(s) in {image_dir} have no mask in {mask_dir}: {listed}. "
            "Add the masks (same file stem) or remove the images."
        )
    return [Pair(path, masks[stem]) for stem, path in images.items()]


def read_image(path: Path) -> np.ndarray:
    """Decode an image as RGB uint8 (H, W, 3); an undecodable file raises naming it."""
    try:
        with Image.open(path) as image:
            image.load()
            return np.asarray(image.convert("RGB"))
    except Exception as error:
        raise OSError(f"Cannot decode image {path}: {error}") from error


def read_mask(path: Path) -> np.ndarray:
    """Decode a mask as 8-bit grayscale (H, W); RGB/RGBA masks are converted to luminance."""
    try:
        with Image.open(path) as mask:
            mask.load()
            if mask.mode in ("I;16", "I;16B", "I;16L", "I"):
                values = np.asarray(mask, dtype=np.float64)
                return np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8)
            return np.asarray(mask.convert("L"))
    except Exception as error:
        raise OSError(f"Cannot decode mask {path}: {error}") from error


def binarize(mask: np.ndarray) -> np.ndarray:
    """Foreground is strictly above 128 in the 8-bit mask (the field's convention)."""
    return mask > FOREGROUND_THRESHOLD


class PairedFolderDataset(Dataset):
    """Images (and masks) from two folders, paired by file stem.

    Each item is a dict with ``image`` (float tensor after ``transform``), ``mask`` (1, h, w)
    float in {0, 1} (zeros when there is no mask), ``gt`` (the original 8-bit mask, 0/255, only
    when ``keep_original`` is set), ``name`` (stem), ``path``, ``size`` (original (H, W)) and
    ``dataset``.

    Args:
        image_dir: folder of images.
        mask_dir: folder of masks with the same stems; ``None`` for prediction-only data.
        transform: callable ``(image=np.ndarray, mask=np.ndarray) -> dict`` (albumentations).
        name: dataset name used in logs and output folders.
        keep_original: also return the untransformed binary mask for full-resolution metrics.
    """

    def __init__(
        self,
        image_dir: str | Path,
        mask_dir: str | Path | None = None,
        transform: Callable[..., dict[str, Any]] | None = None,
        name: str = "dataset",
        keep_original: bool = False,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.mask_dir = Path(mask_dir) if mask_dir is not None else None
        self.pairs: Sequence[Pair] = pair_files(self.image_dir, self.mask_dir)
        self.transform = transform
        self.name = name
        self.keep_original = keep_original

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        pair = self.pairs[index]
        image = read_image(pair.image)
        if pair.mask is not None:
            mask = binarize(read_mask(pair.mask)).astype(np.uint8)
            if mask.shape != image.shape[:2]:
                raise ValueError(
                    f"Mask {pair.mask} is {mask.shape[1]}x{mask.shape[0]} but its image "
                    f"{pair.image} is {image.shape[1]}x{image.shape[0]}; fix the pair."
                )
        else:
            mask = np.zeros(image.shape[:2], dtype=np.uint8)
        item: dict[str, Any] = {
            "name": pair.stem,
            "path": str(pair.image),
            "size": tuple(image.shape[:2]),
            "dataset": self.name,
        }
        if self.keep_original:
            item["gt"] = mask * 255
        if self.transform is not None:
            out = self.transform(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        item["image"] = image
        item["mask"] = mask.unsqueeze(0).float() if hasattr(mask, "unsqueeze") else mask
        return item
