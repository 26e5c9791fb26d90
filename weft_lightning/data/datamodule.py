"""Lightning DataModules: generic folder data, one data module for the four domains (recipes
from the catalog), and a generated dataset."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence, Sized
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, cast

import lightning as L
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset

from weft_lightning.constants import IMAGENET_MEAN, IMAGENET_STD
from weft_lightning.data.catalog import (
    DATASETS,
    DOMAINS,
    LayoutError,
    Recipe,
    SplitDirs,
    Stats,
    dataset_name,
    detect_layout,
    domain_sets,
    locate,
)
from weft_lightning.data.dataset import PairedFolderDataset, first_image_note, pair_files
from weft_lightning.data.gpu_augment import GPUAugmentation
from weft_lightning.data.image_io import ImageReading
from weft_lightning.data.training_order import (
    EpochProgress,
    EpochShuffle,
    ResumableLoader,
    SeededSamples,
)
from weft_lightning.data.transforms import Augmentation, eval_transform, train_transform

STACKED_KEYS = ("image", "mask")
Domain = Literal["orsi", "cod", "sod", "polyp"]
RecipeName = Literal["paper", "project"]
Split = Literal["train", "test"]
Stage = Literal["fit", "validate", "test", "predict"]


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Training batches: images and masks stacked, the rest as lists."""
    batch: dict[str, Any] = {}
    for key in items[0]:
        values = [item[key] for item in items]
        batch[key] = torch.stack(values) if key in STACKED_KEYS else values
    return batch


def collate_eval(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Evaluation batches: every value a list, as images keep their original sizes."""
    return {key: [item[key] for item in items] for key in items[0]}


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


def _own_generator(seed: int) -> torch.Generator:
    """A loader's own generator: the worker seeds a loader draws when its iterator starts come
    from it, not from the global one, so a resumed run (whose persistent workers start anew)
    leaves the model's random stream (dropout, drop path) exactly where it was."""
    return torch.Generator().manual_seed(seed)


class SegmentationDataModule(L.LightningDataModule):
    """Binary segmentation data from folders of images and masks paired by stem.

    Either ``root`` holds split folders (``train/``, ``test/``, optional ``val/``, each with
    ``images/`` and ``masks/``, or any layout the catalog detects such as ``Imgs``/``GT`` or
    ``test-images``/``test-labels``), or the splits are given explicitly. Without a validation
    split the first test set is used for validation, as is customary in this field.

    Training batches hold crops (``augmentation``); validation, test and prediction batches
    hold each image at its original size, normalised, in lists: the model's test-time
    protocol decides how to resize and window them.

    Args:
        root: dataset root with split folders.
        name: name of the root's test set (logged as ``test/<name>/<metric>``); defaults to the
            root folder's name.
        train_dirs: explicit training split folders (concatenated), instead of ``root/train``.
        val_dir: explicit validation split folder.
        test_sets: explicit named test split folders ``{name: folder}``, added to ``root/test``.
        predict_dir: folder of images to predict (no masks needed).
        augmentation: how training pairs become crops (crop size, rescale, flips, colour).
        batch_size: training batch size.
        eval_batch_size: images per validation/test/predict batch.
        num_workers: data-loading worker processes.
        mean: per-channel normalisation mean of training images (0-1 scale).
        std: per-channel normalisation std of training images (0-1 scale).
        eval_mean: normalisation mean of evaluation images; None takes ``mean``.
        eval_std: normalisation std of evaluation images; None takes ``std``.
        resize_mismatched_masks: resize a mask whose size differs from its image (nearest, with a
            warning); by default such a pair is an error naming the mask.
        gpu_augmentation: run flips, rotations and colour jitter on the device with kornia (in
            ``on_after_batch_transfer``) instead of in the CPU workers.
        image_reading: which bands the model sees and how 16-bit or float images become 8-bit
            (:class:`~weft_lightning.data.image_io.ImageReading`); what it decides is said once
            per dataset.
    """

    def __init__(
        self,
        root: str | None = None,
        name: str | None = None,
        train_dirs: list[str] | None = None,
        val_dir: str | None = None,
        test_sets: dict[str, str] | None = None,
        predict_dir: str | None = None,
        augmentation: Augmentation = Augmentation(),
        batch_size: int = 4,
        eval_batch_size: int = 1,
        num_workers: int = 2,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        eval_mean: Sequence[float] | None = None,
        eval_std: Sequence[float] | None = None,
        resize_mismatched_masks: bool = False,
        gpu_augmentation: bool = False,
        image_reading: ImageReading = ImageReading(),
    ) -> None:
        super().__init__()
        self.image_reading = image_reading
        if augmentation.rotation_degrees and not gpu_augmentation:
            raise ValueError("data.augmentation.rotation_degrees needs data.gpu_augmentation=true.")
        self.root = Path(root).expanduser() if root else None
        self.name = name
        self.train_dirs = [Path(p).expanduser() for p in train_dirs or []]
        self.val_dir = Path(val_dir).expanduser() if val_dir else None
        self.extra_test_sets = {k: Path(v).expanduser() for k, v in (test_sets or {}).items()}
        self.predict_dir = Path(predict_dir).expanduser() if predict_dir else None
        self.augmentation = augmentation
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.num_workers = num_workers
        self.mean, self.std = tuple(mean), tuple(std)
        self.eval_mean = tuple(eval_mean) if eval_mean is not None else None
        self.eval_std = tuple(eval_std) if eval_std is not None else None
        self.resize_mismatched_masks = resize_mismatched_masks
        self.gpu_augmentation = gpu_augmentation
        self._gpu_augment: GPUAugmentation | None = None
        self._resume_position: dict[str, int] | None = None
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

    # ------------------------------------------------------------ normalisation
    def train_stats(self) -> Stats:
        """Normalisation of training images."""
        return Stats(self.mean, self.std)  # type: ignore[arg-type]

    def eval_stats(self, dataset: str | None) -> Stats:
        """Normalisation of the evaluation images of test set ``dataset`` (None: predicted
        images): ``eval_mean``/``eval_std`` when given, else the training statistics."""
        return Stats(self.eval_mean or self.mean, self.eval_std or self.std)  # type: ignore[arg-type]

    # ----------------------------------------------------------------- datasets
    def _dataset(self, split: SplitDirs, name: str, transform: Any, **kwargs: Any) -> Dataset:
        return PairedFolderDataset(
            split.images,
            split.masks,
            transform,
            name=name,
            resize_mismatched_masks=self.resize_mismatched_masks,
            reading=self.image_reading,
            **kwargs,
        )

    def _eval_dataset(self, split: SplitDirs, name: str) -> Dataset:
        """Evaluation data of test set ``name`` (``val``: normalised as training images)."""
        stats = self.eval_stats(None if name == "val" else name)
        transform = eval_transform(stats.mean, stats.std)
        return self._dataset(split, name, transform, keep_original=True)

    # ------------------------------------------------------------ sources
    def sources(self, stage: Stage) -> dict[str, SplitDirs]:
        """The folders ``setup(stage)`` reads, by dataset name; a missing split, a split without
        masks or a folder without images raises one line naming it. No image is read, so the
        CLI asks before it builds the model."""
        found: dict[str, SplitDirs] = {}
        if stage == "fit":
            found.update(self._training_sources())
        if stage in ("fit", "validate"):
            found.update(self._validation_source())
        if stage == "test":
            found.update(self._test_sources())
        if stage == "predict":
            found.update(self._predict_source())
        for split in found.values():
            first_image_note(pair_files(split.images, split.masks)[0].image, self.image_reading)
        return found

    def _training_sources(self) -> dict[str, SplitDirs]:
        splits = self.train_splits()
        if not splits:
            raise LayoutError(
                f"No training data under data.root={self._root_text()}: set data.root to a folder "
                "with train/{images,masks} (or another known layout) or give data.train_dirs."
            )
        for name, split in splits.items():
            if split.masks is None:
                raise LayoutError(
                    f"Training split {name} ({split.images}) has no mask folder: put the masks "
                    f"in a masks/ folder beside it (same file stems)."
                )
        return splits

    def _validation_source(self) -> dict[str, SplitDirs]:
        """The validation split (``val``), else the first test set, else nothing."""
        split = self.val_split()
        if split is not None:
            found = {"val": split}
        else:
            found = dict(list(self.test_splits().items())[:1])
        return {name: self._with_masks(name, split) for name, split in found.items()}

    def _test_sources(self) -> dict[str, SplitDirs]:
        splits = self.test_splits()
        if not splits:
            raise LayoutError(
                f"No test sets under data.root={self._root_text()}: set data.root to a folder "
                "with test/{images,masks} (or another known layout) or give data.test_sets."
            )
        return {name: self._with_masks(name, split) for name, split in splits.items()}

    def _predict_source(self) -> dict[str, SplitDirs]:
        if self.predict_dir is not None:
            return {dataset_name(self.predict_dir): SplitDirs("predict", self.predict_dir, None)}
        tests = self.test_splits()
        if not tests:
            raise LayoutError(
                f"Nothing to predict under data.root={self._root_text()}: set "
                "data.predict_dir to a folder of images."
            )
        images = next(iter(tests.values())).images
        return {dataset_name(images): SplitDirs("predict", images, None)}

    @staticmethod
    def _with_masks(name: str, split: SplitDirs) -> SplitDirs:
        if split.masks is None:
            raise LayoutError(
                f"Test set {name} ({split.images}) has no mask folder: put the masks in a masks/ "
                "folder beside it (same file stems), or predict it with `weft predict`."
            )
        return split

    # ----------------------------------------------------------------- setup
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self._setup_fit()
        if stage in (None, "fit", "validate"):
            self._setup_val()
        if stage in (None, "test"):
            self.test_sets = {n: self._eval_dataset(s, n) for n, s in self._test_sources().items()}
        if stage in (None, "predict"):
            self._setup_predict()

    def _setup_fit(self) -> None:
        stats = self.train_stats()
        transform = train_transform(
            self.augmentation, stats.mean, stats.std, on_gpu=self.gpu_augmentation
        )
        splits = self._training_sources()
        parts = [self._dataset(split, name, transform) for name, split in splits.items()]
        self.train_set = parts[0] if len(parts) == 1 else ConcatDataset(parts)

    def _setup_val(self) -> None:
        for name, split in self._validation_source().items():
            self.val_set = self._eval_dataset(split, name)

    def _setup_predict(self) -> None:
        ((name, split),) = self._predict_source().items()
        stats = self.eval_stats(None)
        transform = eval_transform(stats.mean, stats.std)
        self.predict_set = PairedFolderDataset(
            split.images, None, transform, name=name, reading=self.image_reading
        )

    # ------------------------------------------------------------ dataloaders
    def _loader(self, dataset: Dataset, batch_size: int) -> DataLoader:
        """An evaluation loader: every image once, in order."""
        return DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.num_workers,
            generator=_own_generator(0),
            collate_fn=collate_eval,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        """Training batches in an order, and with augmentations, that depend only on the seed,
        the epoch and the sample (:mod:`weft_lightning.data.training_order`), so that a
        resumed run can repeat them."""
        assert self.train_set is not None
        seed = int(os.environ.get("PL_GLOBAL_SEED", "0"))
        size = len(cast(Sized, self.train_set))
        loader = ResumableLoader(
            SeededSamples(self.train_set, seed),
            batch_size=self.batch_size,
            sampler=EpochShuffle(size, seed, self._current_epoch, *self._rank_and_world()),
            drop_last=size > self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
            generator=_own_generator(seed),
            progress=self._epoch_progress,
        )
        if self._resume_position is not None:
            loader.load_state_dict(self._resume_position)
            self._resume_position = None
        return loader

    def state_dict(self) -> dict[str, Any]:
        """The training loader's position, kept in checkpoints with the datamodule."""
        trainer = getattr(self, "trainer", None)
        loader = trainer.train_dataloader if trainer is not None else None
        return (
            {"training_position": loader.state_dict()}
            if isinstance(loader, ResumableLoader)
            else {}
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Keep a checkpoint's training position for the next training loader. Lightning
        restores the datamodule before it asks for that loader, while it restores the loader's
        own state only for a run stopped inside an epoch, after the first batches of a pass
        that ended may already be fetched by workers; so the resumed pass is fixed here."""
        self._resume_position = state_dict.get("training_position")

    def _rank_and_world(self) -> tuple[int, int]:
        """This process's rank and the number of processes (0 and 1 outside a trainer)."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1
        return int(trainer.global_rank), int(trainer.world_size)

    def _current_epoch(self) -> int:
        trainer = getattr(self, "trainer", None)
        return int(trainer.current_epoch) if trainer is not None else 0

    def _epoch_progress(self) -> EpochProgress:
        """Batches of the current epoch trained so far, and whether that was all of them."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return EpochProgress(0, False)
        batches = trainer.fit_loop.epoch_loop.batch_progress
        return EpochProgress(int(batches.current.processed), bool(batches.is_last_batch))

    def val_dataloader(self) -> DataLoader | list:
        if self.val_set is None:
            return []
        return self._loader(self.val_set, self.eval_batch_size)

    def _root_text(self) -> str:
        if self.root is None:
            return "null (not set)"
        return f"{self.root}" + ("" if self.root.exists() else " (does not exist)")

    def test_dataloader(self) -> list[DataLoader]:
        return [self._loader(d, self.eval_batch_size) for d in self.test_sets.values()]

    def predict_dataloader(self) -> DataLoader:
        assert self.predict_set is not None
        return self._loader(self.predict_set, self.eval_batch_size)

    # --------------------------------------------------------- device augmentation
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Apply the kornia augmentation to training batches once they are on the device."""
        trainer = getattr(self, "trainer", None)
        if not self.gpu_augmentation or trainer is None or not trainer.training:
            return batch
        if self._gpu_augment is None:
            self._gpu_augment = GPUAugmentation(self.augmentation, self.mean, self.std)
        augment = self._gpu_augment.to(batch["image"].device)
        batch["image"], batch["mask"] = augment(batch["image"], batch["mask"])
        return batch


class DomainDataModule(SegmentationDataModule):
    """A domain's benchmarks found by name under ``root``, trained with one of the domain's
    recipes from the catalog (:data:`weft_lightning.data.catalog.DOMAINS`).

    ``root`` is a folder holding the datasets (``root/EORSSD``, ``root/TestDataset/CAMO``, ...)
    or one dataset folder itself. Training uses ``train_datasets`` (default: the domain's
    standard training set); testing uses ``test_datasets`` (default: every test set of the
    domain present under root), each logged under its own name. Explicit ``train_dirs`` and
    ``test_sets`` still work.

    The recipe gives the training augmentation and the normalisation: training images use the
    first training dataset's training statistics; with a ``per_split`` recipe (the paper's ORSI
    recipe) every test set is normalised with its own test statistics, as the WEFT reference
    does, and predicted images with the training dataset's test statistics.

    Args:
        domain: ``orsi``, ``cod``, ``sod`` or ``polyp``.
        root: folder holding the datasets.
        recipe: the domain's training recipe (ORSI: ``paper`` (default) or ``project``; the
            other domains: ``project``); None takes the domain's default.
        train_datasets: catalog names of the training sets.
        test_datasets: catalog names of the test sets.
        augmentation: replaces the recipe's augmentation when given.
        crop_size: the training crop size, when it is not the recipe's.
        mean, std: training normalisation; None takes the training dataset's statistics.
        eval_mean, eval_std: evaluation normalisation of every split; None follows the recipe.
        **kwargs: the other :class:`SegmentationDataModule` options.
    """

    def __init__(
        self,
        domain: Domain,
        root: str | None = None,
        recipe: RecipeName | None = None,
        train_datasets: list[str] | None = None,
        test_datasets: list[str] | None = None,
        augmentation: Augmentation | None = None,
        crop_size: int | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        eval_mean: Sequence[float] | None = None,
        eval_std: Sequence[float] | None = None,
        **kwargs: Any,
    ) -> None:
        if domain not in DOMAINS:
            raise ValueError(f"data.domain={domain!r} is unknown; use one of {', '.join(DOMAINS)}.")
        for name in (*(train_datasets or []), *(test_datasets or [])):
            if name not in DATASETS:
                raise ValueError(
                    f"data: unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}."
                )
        self.recipe: Recipe = DOMAINS[domain].recipe(recipe)
        self.training_dataset = (train_datasets or [DOMAINS[domain].train[0][0]])[0]
        stats = DATASETS[self.training_dataset].split_stats("train")
        augmentation = augmentation or self.recipe.augmentation
        if crop_size is not None:
            augmentation = replace(augmentation, crop_size=crop_size)
        super().__init__(
            root=root,
            augmentation=augmentation,
            mean=stats.mean if mean is None else mean,
            std=stats.std if std is None else std,
            eval_mean=eval_mean,
            eval_std=eval_std,
            **kwargs,
        )
        self.domain = domain
        self.train_datasets = list(train_datasets) if train_datasets else None
        self.test_datasets = list(test_datasets) if test_datasets else None
        self._resolved: dict[Split, dict[str, SplitDirs]] = {}
        self._standard: tuple[dict[str, SplitDirs], dict[str, SplitDirs]] | None = None
        self._layouts: dict[str, dict[str, SplitDirs]] = {}

    def eval_stats(self, dataset: str | None) -> Stats:
        """``per_split`` recipes: the test statistics of ``dataset`` (predicted images: of the
        training dataset) when the catalog knows it; otherwise the training statistics."""
        if self.eval_mean is not None or self.recipe.normalization != "per_split":
            return super().eval_stats(dataset)
        info = DATASETS.get(dataset or self.training_dataset)
        if info is None or "test" not in info.stats:
            return super().eval_stats(dataset)
        return info.stats["test"]

    def _sets(self, side: Split) -> dict[str, SplitDirs]:
        """The training or the test splits under root, found once per side (a side that is
        not used, e.g. training in ``weft test``, is never looked up)."""
        if side not in self._resolved:
            names = self.train_datasets if side == "train" else self.test_datasets
            if self.root is None:
                self._resolved[side] = {}
            elif names is None:
                if self._standard is None:  # count warnings appear once
                    self._standard = domain_sets(self.root, self.domain)
                self._resolved[side] = self._standard[0 if side == "train" else 1]
            else:
                self._resolved[side] = {n: self._split(n, side) for n in names}
        return self._resolved[side]

    def _split(self, name: str, split: Split) -> SplitDirs:
        assert self.root is not None
        if name not in self._layouts:
            self._layouts[name] = locate(self.root, name)
        layout = self._layouts[name]
        if split not in layout:
            raise FileNotFoundError(
                f"Dataset {name} under {self.root} has no {split} split (found: "
                f"{', '.join(layout) or 'none'}); check data.root or data.{split}_datasets."
            )
        return layout[split]

    def train_splits(self) -> dict[str, SplitDirs]:
        if self.train_dirs:
            return super().train_splits()
        return self._sets("train")

    def val_split(self) -> SplitDirs | None:
        return as_split(self.val_dir, "val") if self.val_dir is not None else None

    def test_splits(self) -> dict[str, SplitDirs]:
        splits = dict(self._sets("test"))
        splits.update({n: as_split(f, "test") for n, f in self.extra_test_sets.items()})
        return splits


def default_cache_dir() -> Path:
    """Where generated datasets are kept: ``$WEFT_CACHE_DIR`` or ``~/.cache/weft_lightning``."""
    return Path(os.environ.get("WEFT_CACHE_DIR", "~/.cache/weft_lightning")).expanduser()


#: Crops of the generated 128 px scenes: seen from above, so flips and 90° rotations.
SYNTHETIC_AUGMENTATION = Augmentation(
    crop_size=128, scale_range=(0.75, 1.5), vertical_flip=True, rotate90=True, color_jitter=0.1
)


class SyntheticDataModule(SegmentationDataModule):
    """A procedurally generated aerial-like dataset, generated on first use into a cache folder.

    Args:
        num_train: number of training images.
        num_test: number of test images.
        image_size: side of the generated images.
        seed: generator seed; the same seed always gives the same dataset.
        cache_dir: where to write it (default :func:`default_cache_dir`).
        augmentation: training crops (default: 128 px, flips, 90° rotations, mild jitter).
        batch_size: training batch size.
        **kwargs: every other :class:`SegmentationDataModule` option (root and name are set
            here).
    """

    def __init__(
        self,
        num_train: int = 240,
        num_test: int = 60,
        image_size: int = 128,
        seed: int = 0,
        cache_dir: str | None = None,
        augmentation: Augmentation = SYNTHETIC_AUGMENTATION,
        batch_size: int = 8,
        **kwargs: Any,
    ) -> None:
        for fixed in ("root", "name"):
            if fixed in kwargs:
                raise ValueError(f"data.{fixed} is set by SyntheticDataModule; remove it.")
        base = Path(cache_dir).expanduser() if cache_dir else default_cache_dir() / "synthetic"
        root = base / f"n{num_train}-{num_test}_s{image_size}_seed{seed}"
        super().__init__(
            root=str(root),
            name="synthetic",
            augmentation=augmentation,
            batch_size=batch_size,
            **kwargs,
        )
        self.spec: dict[str, Any] = {
            "num_train": num_train,
            "num_test": num_test,
            "size": image_size,
            "seed": seed,
        }

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

    def sources(self, stage: Stage) -> dict[str, SplitDirs]:
        """The generated folders (nothing before they are generated: they are always whole)."""
        assert self.root is not None
        return super().sources(stage) if (self.root / ".complete").exists() else {}

    def setup(self, stage: str | None = None) -> None:
        assert self.root is not None
        if not (self.root / ".complete").exists():
            self.prepare_data()
        super().setup(stage)
