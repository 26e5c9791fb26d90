"""Uni-Perceiver -> timm conversion: keys, loading, and equality with the reference forward."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import DEPTH, DIM, GRID, HEADS, uniperceiver_state

from weft_lightning.cli.convert import main
from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.convert import (
    CheckpointLayoutError,
    convert_uniperceiver,
)

ROOT = Path(__file__).resolve().parents[1]
UNIPERCEIVER = ROOT / "configs" / "model" / "vit" / "uniperceiver_l16.yaml"


def uniperceiver_args(**model_kwargs: object) -> dict:
    """FrozenViT arguments of the paper's ViT definition, sizes replaced by ``model_kwargs``."""
    import yaml

    args = yaml.safe_load(UNIPERCEIVER.read_text())["init_args"]
    args["model_kwargs"] = {**args["model_kwargs"], **model_kwargs}
    return {**args, "pretrained": False, "checkpoint_path": None}


def reference_forward(state: dict[str, torch.Tensor], images: torch.Tensor) -> torch.Tensor:
    """Uni-Perceiver's encoder forward, re-stated from its definition with plain functions."""
    e = "visual_embed."
    dim = state[e + "embeddings_norm.weight"].numel()
    x = F.conv2d(
        images, state[e + "patch_embed.proj.weight"], state[e + "patch_embed.proj.bias"], stride=16
    )
    h, w = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    table = state[e + "patch_embed.spatial_pos_embed.weight"]
    table = table.reshape(1, GRID, GRID, dim).permute(0, 3, 1, 2)
    pos = F.interpolate(table, size=(h, w), mode="bicubic", align_corners=False)
    x = x + pos.flatten(2).transpose(1, 2) + state[e + "patch_embed.temporal_pos_embed.weight"][0]
    x = F.layer_norm(
        x, (dim,), state[e + "embeddings_norm.weight"], state[e + "embeddings_norm.bias"]
    )
    for i in range(1 + max(int(k.split(".")[1]) for k in state if k.startswith("layers."))):
        p = f"layers.{i}."
        y = F.layer_norm(x, (dim,), state[p + "norm1.weight"], state[p + "norm1.bias"])
        qkv = F.linear(
            y, state[p + "self_attn.in_proj.weight"], state[p + "self_attn.in_proj.bias"]
        )
        q, k, v = qkv.reshape(x.shape[0], -1, 3, HEADS, dim // HEADS).permute(2, 0, 3, 1, 4)
        attn = ((q @ k.transpose(-2, -1)) * (dim // HEADS) ** -0.5).softmax(-1)
        y = (attn @ v).transpose(1, 2).reshape(x.shape)
        y = F.linear(
            y, state[p + "self_attn.out_proj.weight"], state[p + "self_attn.out_proj.bias"]
        )
        x = x + state[p + "gamma_1"] * y
        y = F.layer_norm(x, (dim,), state[p + "norm2.weight"], state[p + "norm2.bias"])
        y = F.linear(y, state[p + "linear1.weight"], state[p + "linear1.bias"])
        y = F.linear(F.gelu(y), state[p + "linear2.weight"], state[p + "linear2.bias"])
        x = x + state[p + "gamma_2"] * y
    return x


def paper_backbone(checkpoint: Path | None) -> FrozenViT:
    """The paper preset's timm ViT at a small width/depth."""
    args = uniperceiver_args(embed_dim=DIM, depth=DEPTH, num_heads=HEADS)
    args["checkpoint_path"] = str(checkpoint) if checkpoint else None
    return FrozenViT(**{**args, "drop_path_rate": 0.0}).eval()


@pytest.mark.parametrize("wrap", ["raw", "state_dict", "model"])
def test_converted_checkpoint_matches_reference_forward(tmp_path: Path, wrap: str) -> None:
    state = uniperceiver_state()
    prefixed = {f"module.backbone.{k}": v for k, v in state.items()}
    source = tmp_path / "uniperceiver.pth"
    torch.save(prefixed if wrap == "raw" else {wrap: prefixed, "epoch": 3}, source)
    target = tmp_path / "uniperceiver.safetensors"
    assert main(["uniperceiver", str(source), str(target)]) == 0

    backbone = paper_backbone(target)  # loads with no missing or unexpected keys (else raises)
    for size in ((224, 224), (320, 256)):
        images = torch.randn(2, 3, *size)
        with torch.no_grad():
            tokens, prefix, grid = backbone.embed(images)
            for index in range(4):
                tokens, prefix = backbone.run_group(index, tokens, prefix)
        expected = reference_forward(state, images)
        assert prefix.shape[1] == 0
        assert grid == (size[0] // 16, size[1] // 16)
        torch.testing.assert_close(tokens, expected, atol=1e-5, rtol=0)


def test_timm_model_loads_converted_weights_strictly() -> None:
    import timm

    converted = convert_uniperceiver(uniperceiver_state())
    args = uniperceiver_args(embed_dim=DIM, depth=DEPTH, num_heads=HEADS)
    model = timm.create_model(args["model_name"], num_classes=0, **args["model_kwargs"])
    model.load_state_dict(converted, strict=True)
    assert "visual_embed" not in " ".join(converted)


def test_fits_the_paper_preset_exactly() -> None:
    """Full-size (ViT-L, 24 blocks) conversion matches the paper config's ViT key for key."""
    args = uniperceiver_args()
    with torch.device("meta"):
        backbone = FrozenViT(**args)
    converted = convert_uniperceiver(uniperceiver_state(dim=1024, depth=24, device="meta"))
    expected = {k: tuple(v.shape) for k, v in backbone.vit.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == expected
    paper_parameters = sum(v.numel() for v in converted.values())
    assert round(paper_parameters / 1e6, 2) == 303.35  # + the folded temporal vector: 303.36 M


def test_unknown_and_missing_keys_are_listed() -> None:
    state = uniperceiver_state()
    del state["layers.2.gamma_1"]
    state["text_embed.word_embeddings.weight"] = torch.zeros(3, DIM)
    with pytest.raises(CheckpointLayoutError) as info:
        convert_uniperceiver(state)
    message = str(info.value)
    assert "layers.2.gamma_1" in message and "text_embed.word_embeddings.weight" in message


def test_ignore_prefix_drops_extra_parts() -> None:
    state = uniperceiver_state() | {"text_embed.word_embeddings.weight": torch.zeros(3, DIM)}
    converted = convert_uniperceiver(state, ignore=["text_embed."])
    assert converted["pos_embed"].shape == (1, GRID * GRID, DIM)


def test_cli_reports_bad_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"layers.0.unknown": torch.zeros(1)}, bad)
    assert main(["uniperceiver", str(bad), str(tmp_path / "out.safetensors")]) == 1
    err = capsys.readouterr().err
    assert "layers.0.unknown" in err and "visual_embed.patch_embed.proj.weight" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_checkpoint_with_code_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": uniperceiver_state(depth=1), "obj": Path("x")}, evil)
    assert main(["uniperceiver", str(evil), str(tmp_path / "out.safetensors")]) == 1
