"""A training order that is a pure function of (seed, epoch, sample), for exact resume.

The order of every epoch is a permutation drawn from ``(seed, epoch)`` and each sample's
augmentation from ``(seed, epoch, index)``: neither depends on a generator's state, so a resumed
run sees the samples and crops that the uninterrupted run saw. The loader is also resumable: a
checkpoint records the epoch in progress, how many of its batches were trained and whether that
was all of them, and the resumed run continues with the next batch, in this epoch or the next.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch.utils.data import ConcatDataset, DataLoader, Dataset, DistributedSampler

from weft_lightning.data.dataset import PairedFolderDataset

__all__ = [
    "EpochProgress",
    "EpochShuffle",
    "ResumableLoader",
    "SampleKey",
    "SeededSamples",
    "sample_seed",
]


class EpochProgress(NamedTuple):
    """How far the epoch in progress got: batches trained, and whether that was all of them."""

    batches: int
    finished: bool


class SampleKey(NamedTuple):
    """Which sample to load, and in which epoch (its augmentation depends on both)."""

    epoch: int
    sample: int


def sample_seed(*parts: int) -> int:
    """A 31-bit seed mixed from integers (numpy's SeedSequence: no two tuples collide in
    practice, and nearby tuples give unrelated seeds)."""
    state = np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(1)
    return int(state[0] & 0x7FFFFFFF)


class EpochShuffle(DistributedSampler):
    """Every index once per epoch, in an order drawn from ``(seed, epoch)``; ``epoch_of()`` is
    asked at the start of each pass (the trainer's current epoch), unless :meth:`resume_at`
    fixed the next pass. Under DDP, process ``rank`` of ``world`` takes every world-th index
    of that order (padded with its first indices to a multiple of ``world``, as torch's
    DistributedSampler pads), so each process's position is its own count of samples; being a
    DistributedSampler, Lightning keeps it instead of wrapping it in one of its own."""

    def __init__(
        self, size: int, seed: int, epoch_of: Callable[[], int], rank: int = 0, world: int = 1
    ) -> None:
        indices = cast("Dataset[int]", range(size))  # the base class only takes its length
        super().__init__(indices, num_replicas=world, rank=rank, shuffle=True, seed=seed)
        self.size, self.epoch_of = size, epoch_of
        self.resume: tuple[int, int] | None = None
        self.current = 0

    def resume_at(self, epoch: int, skip: int) -> None:
        """Make the next pass ``epoch``, without this process's first ``skip`` samples."""
        self.resume = (epoch, skip)

    def __iter__(self) -> Iterator[SampleKey]:  # type: ignore[override]
        self.current, skip = self.resume if self.resume is not None else (self.epoch_of(), 0)
        self.resume = None
        generator = torch.Generator().manual_seed(sample_seed(self.seed, self.current))
        order = torch.randperm(self.size, generator=generator).tolist()
        order = (order * math.ceil(self.total_size / max(self.size, 1)))[: self.total_size]
        mine = order[self.rank :: self.num_replicas]
        return iter([SampleKey(self.current, i) for i in mine[skip:]])


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
    """The training loader: :class:`EpochShuffle` order, :class:`SeededSamples` items, and its
    position (the epoch in progress and how far it got), kept in checkpoints."""

    def __init__(self, *args: Any, progress: Callable[[], EpochProgress], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.progress = progress

    def state_dict(self) -> dict[str, int]:
        """The epoch in progress, its trained batches and whether they were all of it."""
        sampler = self.sampler
        epoch = sampler.current if isinstance(sampler, EpochShuffle) else 0
        batches, finished = self.progress()
        return {"epoch": epoch, "batches": batches, "finished": int(finished)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Make the next pass continue after the recorded batches: in the recorded epoch, or at
        the start of the next one if they were all of it. Call it before the first iterator is
        made (loader workers fetch ahead as soon as it exists)."""
        if not isinstance(self.sampler, EpochShuffle) or not self.batch_size:
            return
        epoch = int(state.get("epoch", 0))
        if state.get("finished"):
            self.sampler.resume_at(epoch + 1, 0)
        else:
            self.sampler.resume_at(epoch, int(state.get("batches", 0)) * self.batch_size)
