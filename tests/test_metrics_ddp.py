"""SODMetrics under DDP: two gloo processes, each updating half the images, agree with one."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from weft_lightning.metrics import METRIC_KEYS, SODMetrics


def _pairs() -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Seven images of mixed sizes (an odd count, so the halves differ in size)."""
    gen = torch.Generator().manual_seed(0)
    probs, masks = [], []
    for i in range(7):
        h, w = 20 + 7 * i, 45 - 3 * i
        probs.append(torch.rand(h, w, generator=gen))
        masks.append((torch.rand(h, w, generator=gen) > 0.6).to(torch.uint8) * 255)
    return probs, masks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    try:
        probs, masks = _pairs()
        metric = SODMetrics()
        mine = range(rank, len(probs), world)
        metric.update([probs[i] for i in mine], [masks[i] for i in mine])
        values = {k: v.item() for k, v in metric.compute().items()}
        curves = {k: v.numpy() for k, v in metric.curves().items()}
        np.savez(Path(out) / f"rank{rank}.npz", **values, **curves)
    finally:
        dist.destroy_process_group()


def test_two_processes_equal_one(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    probs, masks = _pairs()
    single = SODMetrics()
    single.update(probs, masks)
    want = {**single.compute(), **single.curves()}
    for rank in range(2):
        got = np.load(tmp_path / f"rank{rank}.npz")
        for key, value in want.items():
            np.testing.assert_allclose(got[key], value.numpy(), rtol=1e-12, atol=1e-12, err_msg=key)
    assert set(METRIC_KEYS) <= set(want)
