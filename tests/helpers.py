"""What several test modules share: the repository's paths, tiny run arguments, data copies,
an op counter and synthetic checkpoints. Imported as ``from helpers import ...``."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # the committed real pairs (tests/data/README.md)
DIM, DEPTH, HEADS, GRID = 64, 4, 4, 14  # the small Uni-Perceiver-shaped encoder of the tests


def tiny_data_args(tmp_path: Path, num_train: int = 8, num_test: int = 4) -> list[str]:
    """Synthetic 64 px images (cached under tmp_path), a 64 px protocol, loading in-process."""
    return [
        "--data.init_args.num_train", str(num_train),
        "--data.init_args.num_test", str(num_test),
        "--data.init_args.image_size", "64",
        "--data.init_args.augmentation.crop_size", "64",
        "--model.init_args.protocol.test.size", "64",
        "--model.init_args.protocol.validation.size", "64",
        "--data.init_args.batch_size", "4",
        "--data.init_args.num_workers", "0",
        "--data.init_args.cache_dir", str(tmp_path / "cache"),
    ]  # fmt: skip


def tiny_demo_args(tmp_path: Path) -> list[str]:
    """The demo config shrunk to a few 64 px images and two training steps."""
    return [
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--trainer.default_root_dir", str(tmp_path / "run"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        *tiny_data_args(tmp_path),
    ]  # fmt: skip


def copy_pairs(source: Path, target: Path, count: int) -> Path:
    """Copy the first ``count`` image/mask pairs of a split folder into ``target``."""
    for sub in ("images", "masks"):
        (target / sub).mkdir(parents=True, exist_ok=True)
    images = sorted((source / "images").iterdir())[:count]
    masks = {p.stem: p for p in (source / "masks").iterdir()}
    for image in images:
        shutil.copy(image, target / "images" / image.name)
        shutil.copy(masks[image.stem], target / "masks" / masks[image.stem].name)
    return target


def uniperceiver_state(
    dim: int = DIM, depth: int = DEPTH, device: str = "cpu"
) -> dict[str, torch.Tensor]:
    """Random tensors with Uni-Perceiver's encoder key layout and shapes (``meta``: shapes only)."""
    g = torch.Generator().manual_seed(0)

    def rand(*shape: int, scale: float = 0.1) -> torch.Tensor:
        if device == "meta":
            return torch.empty(*shape, device="meta")
        return torch.randn(*shape, generator=g) * scale

    state = {
        "visual_embed.patch_embed.proj.weight": rand(dim, 3, 16, 16, scale=0.05),
        "visual_embed.patch_embed.proj.bias": rand(dim),
        "visual_embed.patch_embed.spatial_pos_embed.weight": rand(GRID * GRID, dim),
        "visual_embed.patch_embed.temporal_pos_embed.weight": rand(8, dim),
        "visual_embed.embeddings_norm.weight": 1 + rand(dim),
        "visual_embed.embeddings_norm.bias": rand(dim),
    }
    for i in range(depth):
        p = f"layers.{i}."
        state |= {
            p + "norm1.weight": 1 + rand(dim),
            p + "norm1.bias": rand(dim),
            p + "self_attn.in_proj.weight": rand(3 * dim, dim),
            p + "self_attn.in_proj.bias": rand(3 * dim),
            p + "self_attn.out_proj.weight": rand(dim, dim),
            p + "self_attn.out_proj.bias": rand(dim),
            p + "gamma_1": 0.5 + rand(dim),
            p + "norm2.weight": 1 + rand(dim),
            p + "norm2.bias": rand(dim),
            p + "linear1.weight": rand(4 * dim, dim),
            p + "linear1.bias": rand(4 * dim),
            p + "linear2.weight": rand(dim, 4 * dim),
            p + "linear2.bias": rand(dim),
            p + "gamma_2": 0.5 + rand(dim),
        }
    return state


class OpCounter(TorchDispatchMode):
    """Counts the ATen ops that run inside the context."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
