"""Data: dataset catalog and layouts, folder datasets, augmentation recipes, data modules."""

from weft_lightning.data.catalog import DATASETS, DOMAINS, DatasetInfo, DomainInfo, Recipe, Stats
from weft_lightning.data.datamodule import (
    DomainDataModule,
    SegmentationDataModule,
    SyntheticDataModule,
)
from weft_lightning.data.dataset import PairedFolderDataset
from weft_lightning.data.transforms import Augmentation

__all__ = [
    "DATASETS",
    "DOMAINS",
    "Augmentation",
    "DatasetInfo",
    "DomainDataModule",
    "DomainInfo",
    "PairedFolderDataset",
    "Recipe",
    "SegmentationDataModule",
    "Stats",
    "SyntheticDataModule",
]
