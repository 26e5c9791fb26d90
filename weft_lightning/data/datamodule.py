"""Lightning DataModules: generic folder data, the four domain presets, a synthetic dataset."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from weft_lightning.data.catalog import (
    DATASETS,
    DOMAINS,
    LayoutError,
    SplitDirs,
    detect_layout,
    domain_sets,
    locate,
)
from weft_lightning.data.folder import PairedFolderDataset
from weft_lightning.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    GPUAugmentation,
    eval_transform,
    train_transform,
)

STACKED_KEYS = ("image", "mask")


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Stack network inputs; keep per-image originals (mask, name, size, path) as lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if key in STACKED_KEYS else values
    return batch


def as_split(folder: Path, prefer: str) -> SplitDirs:
    """The single split a folder holds (any layout the catalog detects), or its ``prefer`` one."""
    try:
        layout = detect_layout(folder)
    except LayoutError as error:
        raise FileNotFoundError(str(error)) from error
    if prefer in layout:
        return layout[prefer]
    if len(layout) == 1:
        return next(iter(layout.values()))
    raise FileNotFoundError(
        f"{folder} holds the splits {', '.join(layout)} but no {prefer!r} split; give the split "
        "folder itself."
    )


def split_dirs(folder: Path) -> tuple[Path, Path | None]:
    """The image and mask folders of a split folder (any layout the catalog detects)."""
    split = as_split(folder, "test")
    return split.images, split.masks


class SegmentationDataModule(L.LightningDataModule):
    """Binary segmentation data from folders of images and masks paired by stem.

    Either ``root`` holds split folders (``train/``, ``test/``, optional ``val/``, each with
    ``images/`` and ``masks/``, or any layout the catalog detects such as ``Imgs``/``GT`` or
    ``test-images``/``test-labels``), or the splits are given explicitly. Without a validation
    split the first test set is used for validation, as is customary in this field.

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
        resize_mismatched_masks: resize a mask whose size differs from its image (nearest, with a
            warning); by default such a pair is an error naming the mask.
        gpu_augmentation: run flips, rotations and colour jitter on the device with kornia (in
            ``on_after_batch_transfer``) instead of in the CPU workers.
        rotation_degrees: free random rotation range (± degrees), GPU augmentation only.
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
        resize_mismatched_masks: bool = False,
        gpu_augmentation: bool = False,
        rotation_degrees: float = 0.0,
    ) -> None:
        super().__init__()
        for label, size in (("crop_size", crop_size), ("eval_size", eval_size)):
            if size % 32:
                raise ValueError(f"data.{label}={size} must be a multiple of 32.")
        if rotation_degrees and not gpu_augmentation:
            raise ValueError("data.rotation_degrees needs data.gpu_augmentation=true.")
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
        self.resize_mismatched_masks = resize_mismatched_masks
        self.gpu_augmentation = gpu_augmentation
        self.rotation_degrees = rotation_degrees
        self._gpu_augment: GPUAugmentation | None = None
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_sets: dict[str, Dataset] = {}
        self.predict_set: Dataset | None = None

    # ----------------------------------------------------------------- splits
    def _root_layout(self) -> dict[str, SplitDirs]:
        """Splits found under ``root`` (empty without a root)."""
        if self.root is None:
            return {}
        try:
            return detect_layout(self.root)
        except LayoutError as error:
            raise FileNotFoundError(f"data.root: {error}") from error

    def train_splits(self) -> dict[str, SplitDirs]:
        """Training splits by name: ``train_dirs``, else the root's ``train`` split."""
        if self.train_dirs:
            return {f.name: as_split(f, "train") for f in self.train_dirs}
        layout = self._root_layout()
        return {"train": layout["train"]} if "train" in layout else {}

    def val_split(self) -> SplitDirs | None:
        """The validation split: ``val_dir``, else the root's ``val`` split, else None."""
        if self.val_dir is not None:
            return as_split(self.val_dir, "val")
        return self._root_layout().get("val")

    def test_splits(self) -> dict[str, SplitDirs]:
        """Named test splits: the root's ``test`` split, then ``test_sets``."""
        splits: dict[str, SplitDirs] = {}
        layout = self._root_layout()
        if "test" in layout and self.root is not None:
            splits[self.name or self.root.name] = layout["test"]
        splits.update({n: as_split(f, "test") for n, f in self.extra_test_sets.items()})
        return splits

    @property
    def test_names(self) -> list[str]:
        """Names of the test sets, in dataloader order."""
        return list(self.test_splits())

    def _dataset(self, split: SplitDirs, name: str, transform: Any, **kwargs: Any) -> Dataset:
        return PairedFolderDataset(
            split.images,
            split.masks,
            transform,
            name=name,
            resize_mismatched_masks=self.resize_mismatched_masks,
            **kwargs,
        )

    def _eval_dataset(self, split: SplitDirs, name: str) -> Dataset:
        if split.masks is None:
            raise FileNotFoundError(f"Test set {name} ({split.images}) has no mask folder.")
        transform = eval_transform(self.eval_size, self.mean, self.std)
        return self._dataset(split, name, transform, keep_original=True)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._setup_fit()
        if stage in (None, "fit", "validate"):
            self._setup_val()
        if stage in (None, "test"):
            self.test_sets = {n: self._eval_dataset(s, n) for n, s in self.test_splits().items()}
        if stage in (None, "predict"):
            self._setup_predict()

    def _setup_fit(self) -> None:
        splits = self.train_splits()
        if not splits:
            raise ValueError(
                "No training data: set data.root to a folder with train/{images,masks} (or another "
                "known layout) or give data.train_dirs."
            )
        transform = train_transform(
            self.crop_size,
            self.mean,
            self.std,
            **self.augment,
            geometric_on_gpu=self.gpu_augmentation,
        )
        parts = []
        for name, split in splits.items():
            if split.masks is None:
                raise FileNotFoundError(f"Training split {name} ({split.images}) has no masks.")
            parts.append(self._dataset(split, name, transform))
        self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _setup_val(self) -> None:
        split = self.val_split()
        if split is not None:
            self.val_set = self._eval_dataset(split, "val")
            return
        tests = self.test_splits()
        if tests:
            name, split = next(iter(tests.items()))
            self.val_set = self._eval_dataset(split, name)

    def _setup_predict(self) -> None:
        if self.predict_dir is not None:
            split = SplitDirs("predict", self.predict_dir, None)
        else:
            tests = self.test_splits()
            if not tests:
                raise ValueError("Nothing to predict: set data.predict_dir to a folder of images.")
            split = SplitDirs("predict", next(iter(tests.values())).images, None)
        transform = eval_transform(self.eval_size, self.mean, self.std)
        self.predict_set = PairedFolderDataset(
            split.images, None, transform, name=split.images.name
        )

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
                "No test sets: set data.root to a folder with test/{images,masks} (or another "
                "known layout) or give data.test_sets."
            )
        return [self._loader(d, self.eval_batch_size, False) for d in self.test_sets.values()]

    def predict_dataloader(self) -> DataLoader:
        assert self.predict_set is not None
        return self._loader(self.predict_set, self.eval_batch_size, shuffle=False)

    # --------------------------------------------------------- device augmentation
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the kornia augmentation to training batches once they are on the device."""
        trainer = getattr(self, "trainer", None)
        if not self.gpu_augmentation or trainer is None or not trainer.training:
            return batch
        if self._gpu_augment is None:
            self._gpu_augment = GPUAugmentation(
                self.mean,
                self.std,
                rotate90=self.augment["rotate90"],
                vertical_flip=self.augment["vertical_flip"],
                color_jitter=self.augment["color_jitter"],
                rotation_degrees=self.rotation_degrees,
            )
        augment = self._gpu_augment.to(batch["image"].device)
        batch["image"], batch["mask"] = augment(batch["image"], batch["mask"])
        return batch


class DomainDataModule(SegmentationDataModule):
    """A domain's benchmarks found by name under ``root`` (see :mod:`weft_lightning.data.catalog`).

    ``root`` is a folder holding the datasets (``root/EORSSD``, ``root/TestDataset/CAMO``, ...)
    or one dataset folder itself. Training uses ``train_datasets`` (default: the domain's
    standard training set); testing uses ``test_datasets`` (default: every test set of the
    domain present under root), each logged under its own name. Explicit ``train_dirs`` and
    ``test_sets`` still work. ``mean``/``std`` default to the first training dataset's.

    Args:
        domain: ``orsi``, ``cod``, ``sod`` or ``polyp``.
        root: folder holding the datasets.
        train_datasets: catalog names of the training sets.
        test_datasets: catalog names of the test sets.
        mean: normalisation mean; None takes the training dataset's.
        std: normalisation std; None takes the training dataset's.
        **kwargs: the :class:`SegmentationDataModule` options.
    """

    def __init__(
        self,
        domain: str,
        root: str | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"data.domain={domain!r} is unknown; use one of {', '.join(DOMAINS)}.")
        for name in (*(train_datasets or []), *(test_datasets or [])):
            if name not in DATASETS:
                raise ValueError(
                    f"data: unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}."
                )
        stats = DATASETS[(train_datasets or [DOMAINS[domain].train[0][0]])[0]]
        super().__init__(
            root=root,
            mean=stats.mean if mean is None else mean,
            std=stats.std if std is None else std,
            **kwargs,
        )
        self.domain = domain
        self.train_datasets = list(train_datasets) if train_datasets else None
        self.test_datasets = list(test_datasets) if test_datasets else None
        self._resolved: tuple[dict[str, SplitDirs], dict[str, SplitDirs]] | None = None

    def _resolve(self) -> tuple[dict[str, SplitDirs], dict[str, SplitDirs]]:
        """Training and test splits under root, found once (count warnings appear once)."""
        if self._resolved is None:
            if self.root is None:
                self._resolved = ({}, {})
            elif self.train_datasets is None and self.test_datasets is None:
                self._resolved = domain_sets(self.root, self.domain)
            else:
                self._resolved = self._named_sets()
        return self._resolved

    def _named_sets(self) -> tuple[dict[str, SplitDirs], dict[str, SplitDirs]]:
        """Splits of the datasets named in the config; the domain's standard ones otherwise."""
        assert self.root is not None
        named = dict.fromkeys([*(self.train_datasets or []), *(self.test_datasets or [])])
        layouts = {n: locate(self.root, n) for n in named}
        need_standard = self.train_datasets is None or self.test_datasets is None
        train, tests = domain_sets(self.root, self.domain) if need_standard else ({}, {})
        if self.train_datasets is not None:
            train = {n: self._split(layouts[n], n, "train") for n in self.train_datasets}
        if self.test_datasets is not None:
            tests = {n: self._split(layouts[n], n, "test") for n in self.test_datasets}
        return train, tests

    def _split(self, layout: dict[str, SplitDirs], name: str, split: str) -> SplitDirs:
        if split not in layout:
            raise FileNotFoundError(
                f"Dataset {name} under {self.root} has no {split} split (found: "
                f"{', '.join(layout) or 'none'}); check data.root or data.{split}_datasets."
            )
        return layout[split]

    def train_splits(self) -> dict[str, SplitDirs]:
        if self.train_dirs:
            return super().train_splits()
        return self._resolve()[0]

    def val_split(self) -> SplitDirs | None:
        return as_split(self.val_dir, "val") if self.val_dir is not None else None

    def test_splits(self) -> dict[str, SplitDirs]:
        splits = dict(self._resolve()[1])
        splits.update({n: as_split(f, "test") for n, f in self.extra_test_sets.items()})
        return splits


class ORSIDataModule(DomainDataModule):
    """Optical remote sensing (ORSSD, EORSSD, ORSI-4199): seen from above, any orientation is
    valid, so both flips and 90° rotations are on; 512 px crops as in the WEFT recipe."""

    def __init__(
        self,
        root: str | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        crop_size: int = 512,
        eval_size: int = 512,
        rotate90: bool = True,
        vertical_flip: bool = True,
        color_jitter: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "orsi", root, train_datasets, test_datasets, crop_size=crop_size, eval_size=eval_size,
            rotate90=rotate90, vertical_flip=vertical_flip, color_jitter=color_jitter, **kwargs,
        )  # fmt: skip


class CODDataModule(DomainDataModule):
    """Camouflaged objects (COD10K + CAMO training; COD10K, CAMO, CHAMELEON, NC4K tests):
    natural photographs with gravity, so horizontal flips only; 384 px inputs."""

    def __init__(
        self,
        root: str | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        crop_size: int = 384,
        eval_size: int = 384,
        rotate90: bool = False,
        vertical_flip: bool = False,
        color_jitter: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "cod", root, train_datasets, test_datasets, crop_size=crop_size, eval_size=eval_size,
            rotate90=rotate90, vertical_flip=vertical_flip, color_jitter=color_jitter, **kwargs,
        )  # fmt: skip


class SODDataModule(DomainDataModule):
    """Natural salient objects (DUTS-TR training; DUTS-TE, ECSSD, HKU-IS, PASCAL-S, DUT-OMRON
    tests): upright photographs, so horizontal flips only; 384 px inputs."""

    def __init__(
        self,
        root: str | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        crop_size: int = 384,
        eval_size: int = 384,
        rotate90: bool = False,
        vertical_flip: bool = False,
        color_jitter: float = 0.2,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "sod", root, train_datasets, test_datasets, crop_size=crop_size, eval_size=eval_size,
            rotate90=rotate90, vertical_flip=vertical_flip, color_jitter=color_jitter, **kwargs,
        )  # fmt: skip


class PolypDataModule(DomainDataModule):
    """Colonoscopy polyps (Kvasir + ClinicDB training, the PraNet split; five test sets): the
    endoscope has no up, so both flips and 90° rotations; mild colour jitter, since colour
    carries diagnostic meaning; 352 px inputs as in the PraNet protocol."""

    def __init__(
        self,
        root: str | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        crop_size: int = 352,
        eval_size: int = 352,
        rotate90: bool = True,
        vertical_flip: bool = True,
        color_jitter: float = 0.1,
        scale_range: tuple[float, float] = (0.75, 1.25),
        **kwargs: Any,
    ) -> None:
        super().__init__(
            "polyp", root, train_datasets, test_datasets, crop_size=crop_size,
            eval_size=eval_size, rotate90=rotate90, vertical_flip=vertical_flip,
            color_jitter=color_jitter, scale_range=scale_range, **kwargs,
        )  # fmt: skip


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
