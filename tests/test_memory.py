"""Activation-memory estimate: meta equals CPU, scales with pixels, sees gradient checkpointing."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

import pytest
import torch

from weft_lightning.cli import main
from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.memory import activation_memory
from weft_lightning.models.segmentor import Segmentor
from weft_lightning.models.weft import WEFTBackbone

REPO = Path(__file__).parents[1]


def demo_segmentor(device: str) -> Segmentor:
    with torch.device(device):
        vit = FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4}, frozen=False)
        return Segmentor(vit, partial(FPNHead, channels=32))


def tiny_weft(with_cp: bool) -> Segmentor:
    torch.manual_seed(0)
    vit = FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4})
    backbone = WEFTBackbone(
        vit, conv_channels=16, kernel_sizes=(1, 3), top_k=1, deform_heads=4, deform_points=2,
        extra_extractors=0,
    )  # fmt: skip
    return Segmentor(backbone, partial(FPNHead, channels=32), checkpoint_backbone=with_cp)


def test_meta_and_cpu_measure_the_same_and_scale_with_pixels() -> None:
    meta = activation_memory(demo_segmentor("meta"), (64, 64))
    cpu = activation_memory(demo_segmentor("cpu"), (64, 64))
    assert meta["device"] == "meta" and cpu["device"] == "cpu"
    assert cpu["activations_mib_per_image"] > 0
    # the same saved tensors up to kernel choices (CPU attention may save its own extras)
    assert meta["activations_mib_per_image"] == pytest.approx(
        cpu["activations_mib_per_image"], rel=0.05
    )
    large = activation_memory(demo_segmentor("meta"), (128, 128))
    ratio = large["activations_mib_per_image"] / meta["activations_mib_per_image"]
    assert 3.0 < ratio < 5.0  # 4x the pixels, attention over 4x the tokens
    assert meta["adamw_state_mib"] == pytest.approx(2 * meta["gradients_mib"], rel=1e-3)


def test_gradient_checkpointing_lowers_the_estimate() -> None:
    plain = activation_memory(tiny_weft(with_cp=False), (64, 64))
    checkpointed = activation_memory(tiny_weft(with_cp=True), (64, 64))
    assert checkpointed["activations_mib_per_image"] < 0.8 * plain["activations_mib_per_image"]


def test_info_prints_the_estimate(capsys: pytest.CaptureFixture[str]) -> None:
    config = str(REPO / "configs" / "demo.yaml")
    assert main(["info", "--config", config, "--input-size", "64"]) == 0
    report = json.loads(capsys.readouterr().out)
    memory = report["activation_memory"]
    assert memory["input_size"] == [64, 64] and memory["device"] in ("meta", "cpu")
    assert memory["activations_mib_per_image"] > 0 and memory["parameters_mib"] > 0
    assert main(["info", "--config", config, "--input-size", "50"]) == 2
