"""Backbone presets (configs/model/backbones): each builds from random init and gives the same
stride 4/8/16/32 pyramid, alone and inside WEFT through the real config system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.convert import convert_uniperceiver, save_weights

ROOT = Path(__file__).resolve().parents[1]
PRESETS = sorted((ROOT / "configs" / "model" / "backbones").glob("*.yaml"))
BASE = ROOT / "configs" / "model" / "weft_s.yaml"
PAPER = ROOT / "configs" / "model" / "weft_l_paper.yaml"
SMALL = {"depth": 4, "embed_dim": 64, "num_heads": 4}
VIT = "--model.init_args.segmentor.init_args.backbone.init_args"


def vit_args(preset: Path) -> dict[str, Any]:
    """The FrozenViT init_args a preset stands for: its own, on top of the ViT definition in
    configs/model/vit/ of the same name when the preset only sets weights."""
    config = yaml.safe_load(preset.read_text())
    node = config["model"]["init_args"]["segmentor"]["init_args"]["backbone"]["init_args"]["vit"]
    if "class_path" not in node:
        base = yaml.safe_load(definition(preset).read_text())
        node = {**base, "init_args": {**base["init_args"], **node["init_args"]}}
    assert node["class_path"] == "weft_lightning.models.FrozenViT"
    return dict(node["init_args"])


def definition(preset: Path) -> Path:
    return ROOT / "configs" / "model" / "vit" / preset.name


def small_checkpoint(folder: Path, preset: Path) -> str | None:
    """A local file for presets that name one (the converted Uni-Perceiver weights)."""
    if not vit_args(preset).get("checkpoint_path"):
        return None
    from helpers import uniperceiver_state

    path = folder / "uniperceiver.safetensors"
    save_weights(convert_uniperceiver(uniperceiver_state(dim=64, depth=4)), path, {})
    return str(path)


def test_presets_cover_the_zoo() -> None:
    names = {p.stem for p in PRESETS}
    expected = {"vit_b16_augreg", "vit_l16_augreg", "vit_b16_mae", "vit_l16_mae", "dinov2_b14"}
    expected |= {"dinov2_l14", "dinov2_b14_reg", "dinov2_l14_reg", "eva02_b14", "eva02_l14"}
    expected |= {"sam_b16", "sam_l16", "uniperceiver_l16"}
    assert expected <= names
    for preset in PRESETS:
        args = vit_args(preset)
        assert args["pretrained"] or args["checkpoint_path"], preset.name
        assert "checkpoint_path" in preset.read_text()  # the offline option is documented


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_builds_and_gives_the_stride_pyramid(preset: Path, tmp_path: Path) -> None:
    args = vit_args(preset)
    args |= {"pretrained": False, "checkpoint_path": small_checkpoint(tmp_path, preset)}
    args["model_kwargs"] = {**(args.get("model_kwargs") or {}), **SMALL}
    backbone = FrozenViT(**args).eval()
    assert not any(p.requires_grad for p in backbone.parameters())
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 96))
    assert [m.shape[-2:] for m in maps] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [m.shape[1] for m in maps] == backbone.out_channels == [64] * 4


def build_weft(preset: Path, folder: Path) -> torch.nn.Module:
    """WEFT (small widths) with the preset's ViT, composed by the real LightningCLI config."""
    from weft_lightning.api import build_model

    kwargs = {**(vit_args(preset).get("model_kwargs") or {}), **SMALL}
    overrides = [
        "--data=weft_lightning.data.datamodule.SyntheticDataModule",
        f"{VIT}.vit.init_args.pretrained=false",
        f"{VIT}.vit.init_args.model_kwargs={yaml.safe_dump(kwargs, default_flow_style=True)}",
        f"{VIT}.deform_heads=4",
        f"{VIT}.conv_channels=16",
        f"{VIT}.kernel_sizes=[1, 3]",
        f"{VIT}.top_k=1",
    ]
    checkpoint = small_checkpoint(folder, preset)
    if checkpoint:
        overrides.append(f"{VIT}.vit.init_args.checkpoint_path={checkpoint}")
    base = PAPER if definition(preset).is_file() else BASE  # weights for the paper's ViT only
    module = build_model([str(base), str(preset)], overrides)
    return module.segmentor.backbone


def test_preset_overrides_a_weft_config(tmp_path: Path) -> None:
    preset = next(p for p in PRESETS if p.stem == "dinov2_b14_reg")
    backbone = build_weft(preset, tmp_path).eval()
    assert type(backbone).__name__ == "WEFTBackbone"
    assert backbone.vit.model_name == vit_args(preset)["model_name"]
    assert (backbone.vit.patch_size, backbone.vit.num_prefix_tokens) == (14, 5)
    with torch.no_grad():
        maps = backbone(torch.randn(1, 3, 64, 64))
    assert [m.shape[-2:] for m in maps] == [(16, 16), (8, 8), (4, 4), (2, 2)]


@pytest.mark.slow
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.stem)
def test_preset_runs_with_weft_adapters_at_224_and_512(preset: Path, tmp_path: Path) -> None:
    backbone = build_weft(preset, tmp_path).eval()
    assert backbone.vit.model_name == vit_args(preset)["model_name"]
    for size in (224, 512):
        with torch.no_grad():
            maps = backbone(torch.randn(1, 3, size, size))
        assert [m.shape[-1] for m in maps] == [size // 4, size // 8, size // 16, size // 32]
        assert all(torch.isfinite(m).all() for m in maps)
