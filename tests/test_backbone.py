"""FrozenViT: token grid, prefix tokens, freezing, stochastic depth, families, weight loading."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from timm.layers import resample_abs_pos_embed

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.layers import map_to_tokens, tokens_to_map

SMALL = {"embed_dim": 64, "depth": 4, "num_heads": 2}


def small(name: str, **kwargs: object) -> FrozenViT:
    torch.manual_seed(0)
    extra = kwargs.pop("model_kwargs", {})
    return FrozenViT(name, model_kwargs={**SMALL, **extra}, **kwargs)


def run_all(backbone: FrozenViT, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    tokens, prefix, _ = backbone.embed(images)
    for index in range(len(backbone.group_slices)):
        tokens, prefix = backbone.run_group(index, tokens, prefix)
    return tokens, prefix


@pytest.mark.parametrize(
    ("name", "prefix", "patch"),
    [
        ("vit_base_patch16_224", 1, 16),
        ("vit_base_patch14_dinov2", 1, 14),
        ("vit_base_patch14_reg4_dinov2", 5, 14),
        ("eva02_base_patch14_224", 1, 14),
        ("samvit_base_patch16", 0, 16),
    ],
)
def test_grid_prefix_and_pyramid_strides(name: str, prefix: int, patch: int) -> None:
    backbone = small(name).eval()
    assert (backbone.num_prefix_tokens, backbone.patch_size) == (prefix, patch)
    images = torch.randn(2, 3, 96, 128)
    tokens, prefix_tokens, grid = backbone.embed(images)
    assert grid == (6, 8)
    assert tokens.shape == (2, 48, 64) and prefix_tokens.shape == (2, prefix, 64)
    tokens, prefix_tokens = backbone.run_group(0, tokens, prefix_tokens)
    assert tokens.shape == (2, 48, 64) and prefix_tokens.shape == (2, prefix, 64)
    with torch.no_grad():
        maps = backbone(images)
    assert [m.shape[-2:] for m in maps] == [(24, 32), (12, 16), (6, 8), (3, 4)]
    assert backbone.out_channels == [64] * 4 and all(m.shape[1] == 64 for m in maps)


@pytest.mark.parametrize(
    "name", ["vit_base_patch16_224", "eva02_base_patch16_clip_224", "samvit_base_patch16"]
)
def test_block_groups_equal_timm_forward(name: str) -> None:
    """Embedding + the four groups reproduce timm's own feature forward (final norm removed)."""
    backbone = small(name).eval()
    images = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        tokens, _ = run_all(backbone, images)
        reference = backbone.vit.forward_features(images)
    if reference.ndim == 4:  # SAM returns an NCHW map
        reference = map_to_tokens(reference)
    else:
        reference = reference[:, backbone.num_prefix_tokens :]
    torch.testing.assert_close(tokens, reference)


def test_patch14_model_sees_resized_input() -> None:
    backbone = small("vit_base_patch14_dinov2").eval()
    images = torch.randn(1, 3, 64, 80)
    resized = F.interpolate(images, size=(56, 70), mode="bilinear", align_corners=False)
    with torch.no_grad():
        tokens, _ = run_all(backbone, images)
        reference = backbone.vit.forward_features(resized)[:, 1:]
    torch.testing.assert_close(tokens, reference)


def test_frozen_has_no_trainable_parameters_but_passes_gradients() -> None:
    backbone = small("vit_base_patch16_224", drop_path_rate=0.1)
    assert not any(p.requires_grad for p in backbone.parameters())
    images = torch.randn(1, 3, 64, 64, requires_grad=True)
    sum(m.sum() for m in backbone(images)).backward()
    assert images.grad is not None and images.grad.abs().sum() > 0
    assert all(p.grad is None for p in backbone.parameters())
    unfrozen = small("vit_base_patch16_224", frozen=False)
    assert all(p.requires_grad for p in unfrozen.parameters())


def test_drop_path_is_active_in_training_only() -> None:
    backbone = small("vit_base_patch16_224", drop_path_rate=0.5)
    images = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    first = backbone(images)[2]
    second = backbone(images)[2]
    assert not torch.allclose(first, second)
    backbone.eval()
    torch.testing.assert_close(backbone(images)[2], backbone(images)[2])


def test_unused_tail_is_removed() -> None:
    backbone = small("vit_base_patch16_224")
    names = {name.split(".")[0] for name, _ in backbone.vit.named_parameters()}
    assert names.isdisjoint({"norm", "fc_norm", "head", "neck"})
    sam = small("samvit_base_patch16")
    assert not any(name.startswith("neck") for name, _ in sam.vit.named_parameters())


def test_tokens_map_round_trip() -> None:
    tokens = torch.randn(2, 12, 5)
    assert torch.equal(map_to_tokens(tokens_to_map(tokens, (3, 4))), tokens)


def test_local_checkpoint_with_prefix_and_other_grid(tmp_path: Path) -> None:
    source = small("vit_base_patch16_224", model_kwargs={"img_size": 64}).eval()
    path = tmp_path / "weights.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in source.vit.state_dict().items()}}, path)
    loaded = small("vit_base_patch16_224", checkpoint_path=str(path)).eval()  # 14x14 table
    expected = resample_abs_pos_embed(source.vit.pos_embed, [14, 14], num_prefix_tokens=1)
    torch.testing.assert_close(loaded.vit.pos_embed, expected)
    for key, value in source.vit.state_dict().items():
        if key != "pos_embed":
            assert torch.equal(loaded.vit.state_dict()[key], value), key


def test_safetensors_checkpoint_and_mismatch_error(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = small("vit_base_patch16_224")
    path = tmp_path / "weights.safetensors"
    save_file({k: v.contiguous() for k, v in source.vit.state_dict().items()}, str(path))
    small("vit_base_patch16_224", checkpoint_path=str(path))
    with pytest.raises(ValueError, match=r"missing keys.*blocks\.4"):
        FrozenViT(
            "vit_base_patch16_224", checkpoint_path=str(path), model_kwargs=SMALL | {"depth": 8}
        )
    with pytest.raises(FileNotFoundError, match=r"nope\.pth"):
        small("vit_base_patch16_224", checkpoint_path=str(tmp_path / "nope.pth"))


def test_unreachable_hub_error_names_checkpoint_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(RuntimeError, match="checkpoint_path") as info:
        small("vit_base_patch16_224", pretrained=True)
    assert "hub" in str(info.value) and "pretrained: false" in str(info.value)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="no model named 'vit_nonexistent'"):
        FrozenViT("vit_nonexistent")
    with pytest.raises(ValueError, match="cannot be split into 4 equal groups"):
        FrozenViT("vit_base_patch16_224", model_kwargs=SMALL | {"depth": 6})
    with pytest.raises(ValueError, match="not a plain ViT"):
        FrozenViT("resnet18")
    with pytest.raises(ValueError, match="multiple of 16"):
        small("vit_base_patch16_224").embed(torch.randn(1, 3, 70, 64))


def test_original_sam_layout_is_remapped(tmp_path: Path) -> None:
    """A checkpoint in SAM's release layout (image_encoder.*, mlp.lin1) loads via timm's filter."""
    source = small("samvit_base_patch16")
    state = {
        "image_encoder." + k.replace("mlp.fc", "mlp.lin"): v
        for k, v in source.vit.state_dict().items()
    }
    state["prompt_encoder.point_embeddings.0.weight"] = torch.zeros(1, 8)
    path = tmp_path / "sam_vit_b.pth"
    torch.save(state, path)
    torch.manual_seed(123)
    loaded = FrozenViT("samvit_base_patch16", model_kwargs=SMALL, checkpoint_path=str(path))
    for key, value in source.vit.state_dict().items():
        assert torch.equal(loaded.vit.state_dict()[key], value), key
