"""Gradient checkpointing that leaves batch-norm running statistics alone when it recomputes.

``torch.utils.checkpoint`` runs the checkpointed function a second time in the backward pass.
A training-mode batch norm inside it would then update its running statistics twice per step
(an effective momentum of ``1 - (1 - m)^2``) and count the batch twice. :func:`checkpoint_once`
runs the recomputation with the running statistics frozen, so a checkpointed model keeps
exactly the statistics of the same model without checkpointing; :func:`is_recomputing` lets
other side effects (routing statistics, auxiliary losses) happen once too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

_recomputing = 0


def is_recomputing() -> bool:
    """True while :func:`checkpoint_once` recomputes a forward pass for the backward pass."""
    return _recomputing > 0


def checkpoint_once(function: Callable[..., Any], *args: Any, module: nn.Module) -> Any:
    """Non-reentrant checkpoint of ``function(*args)``; the batch norms of ``module`` update
    their running statistics in the forward pass only."""
    calls = 0

    def run(*inner: Any) -> Any:
        nonlocal calls
        global _recomputing
        calls += 1
        if calls == 1:
            return function(*inner)
        _recomputing += 1
        try:
            with frozen_running_stats(module):
                return function(*inner)
        finally:
            _recomputing -= 1

    return checkpoint(run, *args, use_reentrant=False)


@contextmanager
def frozen_running_stats(module: nn.Module) -> Iterator[None]:
    """Inside the block, training-mode batch norms of ``module`` normalise with the batch
    statistics as usual but leave ``running_mean``, ``running_var`` and the batch count as
    they were."""
    norms = [
        m
        for m in module.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats
    ]
    # track_running_stats=True: num_batches_tracked is a tensor
    saved = [(m.momentum, cast(torch.Tensor, m.num_batches_tracked).clone()) for m in norms]
    for norm in norms:
        norm.momentum = 0.0
    try:
        yield
    finally:
        with torch.no_grad():
            for norm, (momentum, count) in zip(norms, saved, strict=True):
                norm.momentum = momentum
                assert norm.num_batches_tracked is not None
                norm.num_batches_tracked.copy_(count)
