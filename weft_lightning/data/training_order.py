"""A training order that is a pure function of (seed, epoch, sample), for exact resume.

The order of every epoch is a permutation drawn from ``(seed, epoch)`` and each sample's
augmentation from ``(seed, epoch, index)``: neither depends on a generator's state, so a resumed
run sees the samples and crops that the uninterrupted run saw (with loader workers, one case
is still open: the README's "What resume guarantees"). The loader is also resumable: a
checkpoint taken inside an epoch records how many batches of it were trained, and the resumed
epoch continues after them.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Sampler

from weft_lightning.data.dataset import PairedFolderDataset

__all__ = ["EpochShuffle", "ResumableLoader", "SampleKey", "SeededSamples", "sample_seed"]


class SampleKey(NamedTuple):
    """Which sample to load, and in which epoch (its augmentation depends on both)."""

    epoch: int
    sample: int


def sample_seed(*parts: int) -> int:
    """A 31-bit seed mixed from integers (numpy's SeedSequence: no two tuples collide in
    practice, and nearby tuples give unrelated seeds)."""
    state = np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


class EpochShuffle(Sampler[SampleKey]):
    """Every index once per epoch, in an order drawn from ``(seed, epoch)``; ``epoch()`` is
    asked at the start of each pass (the trainer's current epoch). ``skip`` samples of the first
    pass are left out (a run resumed inside an epoch)."""

    def __init__(self, size: int, seed: int, epoch: Callable[[], int]) -> None:
        self.size, self.seed, self.epoch = size, seed, epoch
        self.skip, self.skip_epoch = 0, -1
        self.current = 0

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[SampleKey]:
        self.current = self.epoch()
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.current))
        order = torch.randperm(self.size, generator=generator).tolist()
        skip = self.skip if self.current == self.skip_epoch else 0
        self.skip, self.skip_epoch = 0, -1
        return iter([SampleKey(self.current, i) for i in order[skip:]])


def _locate(dataset: Dataset, index: int) -> tuple[PairedFolderDataset, int]:
    """The folder dataset and its own index behind ``index`` of (nested) concatenations."""
    while isinstance(dataset, ConcatDataset):
        part = bisect.bisect_right(dataset.cumulative_sizes, index)
        index -= dataset.cumulative_sizes[part - 1] if part else 0
        dataset = dataset.datasets[part]
    if not isinstance(dataset, PairedFolderDataset):
        raise TypeError(f"training data must be folder datasets, got {type(dataset).__name__}")
    return dataset, index


class SeededSamples(Dataset):
    """Training samples by :class:`SampleKey`, each augmented with its own seed."""

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, seed

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: SampleKey) -> dict[str, Any]:
        folder, index = _locate(self.dataset, key.sample)
        return folder.load(index, seed=sample_seed(self.seed, key.epoch, key.sample))


class ResumableLoader(DataLoader):
    """The training loader: :class:`EpochShuffle` order, :class:`SeededSamples` items, and a
    state Lightning keeps in checkpoints (the epoch and the batches of it already trained)."""

    def __init__(self, *args: Any, trained: Callable[[], int], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.trained = trained

    def state_dict(self) -> dict[str, int]:
        """The epoch in progress and how many of its batches were trained."""
        sampler = self.sampler
        epoch = sampler.current if isinstance(sampler, EpochShuffle) else 0
        return {"epoch": epoch, "batches": self.trained()}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue the recorded epoch after its trained batches."""
        if isinstance(self.sampler, EpochShuffle) and self.batch_size:
            self.sampler.skip = int(state.get("batches", 0)) * self.batch_size
            self.sampler.skip_epoch = int(state.get("epoch", -1))
