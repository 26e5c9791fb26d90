"""The training order: a pure function of (seed, epoch, sample), and a loader position that a
checkpoint restores before any worker fetches a batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from weft_lightning.data import Augmentation
from weft_lightning.data.datamodule import SegmentationDataModule
from weft_lightning.data.training_order import EpochShuffle, ResumableLoader


def datamodule(root: Path, workers: int) -> SegmentationDataModule:
    module = SegmentationDataModule(
        root=str(root), augmentation=Augmentation(crop_size=32), batch_size=4, num_workers=workers
    )
    module.setup("fit")
    return module


def batches(loader: ResumableLoader) -> list[tuple[list[str], torch.Tensor]]:
    return [(batch["name"], batch["image"]) for batch in loader]


def pass_of(root: Path, epoch: int) -> list[tuple[list[str], torch.Tensor]]:
    """The batches a fresh single-process loader gives in ``epoch``."""
    loader = datamodule(root, 0).train_dataloader()
    assert isinstance(loader, ResumableLoader) and isinstance(loader.sampler, EpochShuffle)
    loader.sampler.epoch_of = lambda: epoch
    return batches(loader)


def same(mine: list, theirs: list) -> bool:
    return len(mine) == len(theirs) and all(
        a == c and torch.equal(b, d) for (a, b), (c, d) in zip(mine, theirs, strict=True)
    )


@pytest.mark.parametrize(
    ("position", "epoch", "skipped"),
    [
        ({"epoch": 1, "batches": 4, "finished": 1}, 2, 0),  # a checkpoint at an epoch's end
        ({"epoch": 1, "batches": 2, "finished": 0}, 1, 2),  # a checkpoint inside an epoch
    ],
)
def test_a_restored_position_decides_the_next_pass_even_with_workers(
    synthetic_root: Path, position: dict[str, int], epoch: int, skipped: int
) -> None:
    module = datamodule(synthetic_root, 2)
    module.load_state_dict({"training_position": position})
    resumed = batches(module.train_dataloader())  # type: ignore[arg-type]
    assert same(resumed, pass_of(synthetic_root, epoch)[skipped:])
    assert not same(pass_of(synthetic_root, epoch), pass_of(synthetic_root, epoch - 1))


def test_samples_do_not_depend_on_the_global_random_state(synthetic_root: Path) -> None:
    torch.manual_seed(0)
    first = pass_of(synthetic_root, 3)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    assert same(pass_of(synthetic_root, 3), first)
    loader = datamodule(synthetic_root, 2).train_dataloader()
    assert batches(loader)  # type: ignore[arg-type]
    assert torch.equal(torch.get_rng_state(), state)  # workers drew their seeds elsewhere


@pytest.mark.parametrize(("size", "world"), [(10, 2), (7, 2), (5, 4), (3, 4)])
def test_processes_share_one_order_and_each_resumes_its_own_share(size: int, world: int) -> None:
    """Under DDP the processes split the single-process order of the epoch between them (padded
    as torch's DistributedSampler pads), and a resumed process continues within its own share."""
    alone = [key.sample for key in EpochShuffle(size, 7, lambda: 3)]
    shares = [
        [key.sample for key in EpochShuffle(size, 7, lambda: 3, r, world)] for r in range(world)
    ]
    assert all(len(share) == -(-size // world) for share in shares)
    dealt = [share[i] for i in range(len(shares[0])) for share in shares]  # round-robin
    assert dealt[:size] == alone and set(dealt) == set(range(size))
    resumed = EpochShuffle(size, 7, lambda: 0, world - 1, world)
    resumed.resume_at(3, 1)
    assert [key.sample for key in resumed] == shares[-1][1:]
