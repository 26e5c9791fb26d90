"""Which samples of an evaluation batch are real when a distributed sampler pads the dataset.

Lightning evaluates on several processes with ``DistributedSampler(drop_last=False)``, which
repeats the first samples so that every process gets the same number. Metrics summed over the
processes would count those copies twice; :func:`real_samples` says which to leave out.
"""

from __future__ import annotations

from typing import Any

from torch.utils.data import DistributedSampler

__all__ = ["real_samples"]


def real_samples(loader: Any, batch_idx: int, count: int) -> list[bool]:
    """For the ``count`` samples of batch ``batch_idx`` of ``loader``: True where the sample is
    part of the dataset, False where it is a distributed sampler's padding copy.

    The padding is appended to the global index list before it is dealt out to the processes
    (rank r gets positions r, r + R, r + 2R, ...), so a sample is padding exactly when its
    global position is past the end of the dataset, shuffled or not.
    """
    sampler = getattr(loader, "sampler", None)
    batch_size = getattr(loader, "batch_size", None)
    if not isinstance(sampler, DistributedSampler) or sampler.drop_last or not batch_size:
        return [True] * count
    size = len(sampler.dataset)  # type: ignore[arg-type]
    start = batch_idx * batch_size
    return [sampler.rank + (start + i) * sampler.num_replicas < size for i in range(count)]
