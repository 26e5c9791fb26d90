"""SegmentationDataModule: shapes, original sizes, named test sets, predict folder."""

from __future__ import annotations

from pathlib import Path

import torch

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.data import Augmentation
from weft_lightning.data.datamodule import SegmentationDataModule


def test_train_and_test_batches(synthetic_root: Path) -> None:
    dm = SegmentationDataModule(
        root=str(synthetic_root),
        augmentation=Augmentation(crop_size=64),
        batch_size=4,
        eval_batch_size=3,
        num_workers=0,
    )
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (4, 3, 64, 64)
    assert batch["mask"].shape == (4, 1, 64, 64)
    assert set(torch.unique(batch["mask"]).tolist()) <= {0.0, 1.0, float(IGNORE_INDEX)}
    dm.setup("test")
    assert dm.test_names == ["synthetic"]
    (loader,) = dm.test_dataloader()
    batch = next(iter(loader))
    # evaluation images keep their original size: the model's protocol resizes them
    assert [tuple(image.shape) for image in batch["image"]] == [(3, 64, 64)] * 3
    assert all(
        gt.shape == tuple(size) == (64, 64)
        for gt, size in zip(batch["gt"], batch["size"], strict=True)
    )
    assert batch["dataset"] == ["synthetic"] * 3


def test_named_test_sets_and_predict_dir(synthetic_root: Path) -> None:
    dm = SegmentationDataModule(
        test_sets={"A": str(synthetic_root / "test"), "B": str(synthetic_root / "train")},
        predict_dir=str(synthetic_root / "test" / "images"),
        num_workers=0,
    )
    dm.setup("test")
    assert dm.test_names == ["A", "B"]
    assert [len(loader.dataset) for loader in dm.test_dataloader()] == [6, 16]
    dm.setup("predict")
    batch = next(iter(dm.predict_dataloader()))
    assert batch["image"][0].shape == (3, 64, 64) and "gt" not in batch
