"""SegmentationDataModule: folder datasets for training, validation, named test sets and prediction."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from weft_lightning.data.folder import PairedFolderDataset
from weft_lightning.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform

STACKED_KEYS = ("image", "mask")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack network inputs; keep per-image originals (mask, name, size, path) as lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if key in STACKED_KEYS else values
    return batch


def split_dirs(folder: Path) -> tuple[Path, Path]:
    """The ``images``/``masks`` sub-folders of a split folder."""
    images, masks = folder / "images", folder / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise FileNotFoundError(
            f"{folder} must contain 'images/' and 'masks/' folders (found: "
            f"{sorted(p.name for p in folder.iterdir()) if folder.is_dir() else 'no such folder'})."
        )
    return images, masks


class SegmentationDataModule(L.LightningDataModule):
    """Binary segmentation data from folders of images and masks paired by stem.

    Either ``root`` holds ``train/``, ``test/`` and optionally ``val/`` split folders (each with
    ``images/`` and ``masks/``), or the splits are given explicitly. Without a validation split
    the first test set is used for validation, as is customary in this field.

    Args:
        root: dataset root with split folders.
        name: name of the root's test set (logged as ``test/<name>/<metric>``); defaults to the
            root folder's name.
        train_dirs: explicit training split folders (concatenated), instead of ``root/train``.
        val_dir: explicit validation split folder.
        test_sets: explicit named test split folders ``{name: folder}``, added to ``root/test``.
        predict_dir: folder of images to predict (no masks needed).
        crop_size: training crop size (pixels, multiple of 32).
        eval_size: network input size at validation/test/predict time (multiple of 32).
        batch_size: training batch size.
        eval_batch_size: batch size for validation/test/predict.
        num_workers: data-loading worker processes.
        mean: per-channel normalisation mean (0-1 scale).
        std: per-channel normalisation std (0-1 scale).
        scale_range: random rescale range of the training images.
        rotate90: random 90° rotations in training.
        vertical_flip: random vertical flips in training.
        color_jitter: colour-jitter strength in training (0 disables it).
    """

    def __init__(
        self,
        root: str | None = None,
        name: str | None = None,
        train_dirs: list[str] | None = None,
        val_dir: str | None = None,
        test_sets: dict[str, str] | None = None,
        predict_dir: str | None = None,
        crop_size: int = 512,
        eval_size: int = 512,
        batch_size: int = 4,
        eval_batch_size: int = 4,
        num_workers: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale_range: tuple[float, float] = (0.5, 2.0),
        rotate90: bool = True,
        vertical_flip: bool = True,
        color_jitter: float = 0.2,
    ) -> None:
        super().__init__()
        for label, size in (("crop_size", crop_size), ("eval_size", eval_size)):
            if size % 32:
                raise ValueError(f"data.{label}={size} must be a multiple of 32.")
        self.root = Path(root).expanduser() if root else None
        self.name = name
        self.train_dirs = [Path(p).expanduser() for p in train_dirs or []]
        self.val_dir = Path(val_dir).expanduser() if val_dir else None
        self.extra_test_sets = {k: Path(v).expanduser() for k, v in (test_sets or {}).items()}
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir else None
        self.crop_size, self.eval_size = crop_size, eval_size
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.augment = {
            "scale_range": tuple(scale_range),
            "rotate90": rotate90,
            "vertical_flip": vertical_flip,
            "color_jitter": color_jitter,
        }
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}
        self.predict_set: Dataset | None = None

    # ----------------------------------------------------------------- splits
    def _train_folders(self) -> list[Path]:
        if self.train_dirs:
            return self.train_dirs
        if self.root is not None and (self.root / "train").is_dir():
            return [self.root / "train"]
        return []

    def _test_folders(self) -> dict[str, Path]:
        folders: dict[str, Path] = {}
        if self.root is not None and (self.root / "test").is_dir():
            folders[self.name or self.root.name] = self.root / "test"
        folders.update(self.extra_test_sets)
        return folders

    @property
    def test_names(self) -> list[str]:
        """Names of the test sets, in dataloader order."""
        return list(self._test_folders())

    def _eval_dataset(self, folder: Path, name: str) -> PairedFolderDataset:
        images, masks = split_dirs(folder)
        transform = eval_transform(self.eval_size, self.mean, self.std)
        return PairedFolderDataset(images, masks, transform, name=name, keep_original=True)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._setup_fit()
        if stage in (None, "fit", "validate"):
            self._setup_val()
        if stage in (None, "test"):
            self.test_sets = {n: self._eval_dataset(f, n) for n, f in self._test_folders().items()}
        if stage in (None, "predict"):
            self._setup_predict()

    def _setup_fit(self) -> None:
        folders = self._train_folders()
        if not folders:
            raise ValueError(
                "No training data: set data.root to a folder with train/{images,masks} or give "
                "data.train_dirs."
            )
        transform = train_transform(self.crop_size, self.mean, self.std, **self.augment)
        parts = []
        for folder in folders:
            images, masks = split_dirs(folder)
            parts.append(PairedFolderDataset(images, masks, transform, name=folder.name))
        self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _setup_val(self) -> None:
        val_dir = self.val_dir
        if val_dir is None and self.root is not None and (self.root / "val").is_dir():
            val_dir = self.root / "val"
        if val_dir is not None:
            self.val_set = self._eval_dataset(val_dir, "val")
            return
        tests = self._test_folders()
        if tests:
            name, folder = next(iter(tests.items()))
            self.val_set = self._eval_dataset(folder, name)

    def _setup_predict(self) -> None:
        folder = self.predict_dir
        if folder is None:
            tests = self._test_folders()
            if not tests:
                raise ValueError("Nothing to predict: set data.predict_dir to a folder of images.")
            folder = split_dirs(next(iter(tests.values())))[0]
        transform = eval_transform(self.eval_size, self.mean, self.std)
        self.predict_set = PairedFolderDataset(folder, None, transform, name=folder.name)

    # ------------------------------------------------------------ dataloaders
    def _loader(self, dataset: Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            drop_last=shuffle and len(dataset) > batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        assert self.train_set is not None
        return self._loader(self.train_set, self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.eval_batch_size, shuffle=False)

    def test_dataloader(self) -> list[DataLoader]:
        if not self.test_sets:
            raise ValueError(
                "No test sets: set data.root to a folder with test/{images,masks} or give "
                "data.test_sets."
            )
        return [self._loader(d, self.eval_batch_size, False) for d in self.test_sets.values()]

    def predict_dataloader(self) -> DataLoader:
        assert self.predict_set is not None
        return self._loader(self.predict_set, self.eval_batch_size, shuffle=False)


def default_cache_dir() -> Path:
    """Where generated datasets are kept: ``$WEFT_CACHE_DIR`` or ``~/.cache/weft_lightning``."""
    return Path(os.environ.get("WEFT_CACHE_DIR", "~/.cache/weft_lightning")).expanduser()


class SyntheticDataModule(SegmentationDataModule):
    """A procedurally generated aerial-like dataset, generated on first use into a cache folder.

    Args:
        num_train: number of training images.
        num_test: number of test images.
        image_size: side of the generated images.
        seed: generator seed; the same seed always gives the same dataset.
        cache_dir: where to write it (default :func:`default_cache_dir`).
        **kwargs: the :class:`SegmentationDataModule` options (root and splits are set here).
    """

    def __init__(
        self,
        num_train: int = 240,
        num_test: int = 60,
        image_size: int = 128,
        seed: int = 0,
        cache_dir: str | None = None,
        crop_size: int = 128,
        eval_size: int = 128,
        batch_size: int = 8,
        eval_batch_size: int = 8,
        num_workers: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        scale_range: tuple[float, float] = (0.75, 1.5),
        rotate90: bool = True,
        vertical_flip: bool = True,
        color_jitter: float = 0.1,
        predict_dir: str | None = None,
    ) -> None:
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "synthetic"
        root = base / f"n{num_train}-{num_test}_s{image_size}_seed{seed}"
        super().__init__(
            root=str(root),
            name="synthetic",
            predict_dir=predict_dir,
            crop_size=crop_size,
            eval_size=eval_size,
            batch_size=batch_size,
            eval_batch_size=eval_batch_size,
            num_workers=num_workers,
            mean=mean,
            std=std,
            scale_range=scale_range,
            rotate90=rotate90,
            vertical_flip=vertical_flip,
            color_jitter=color_jitter,
        )
        self.spec = {"num_train": num_train, "num_test": num_test, "size": image_size, "seed": seed}

    def prepare_data(self) -> None:
        """Generate the dataset once; a partly written folder is never taken for a complete one."""
        assert self.root is not None
        if (self.root / ".complete").exists():
            return
        from weft_lightning.data.synthetic import generate_dataset

        staging = self.root.with_name(self.root.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        generate_dataset(staging, **self.spec)
        (staging / ".complete").touch()
        shutil.rmtree(self.root, ignore_errors=True)
        staging.rename(self.root)

    def setup(self, stage: str | None = None) -> None:
        assert self.root is not None
        if not (self.root / ".complete").exists():
            self.prepare_data()
        super().setup(stage)
