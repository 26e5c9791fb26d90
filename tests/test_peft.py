"""Fine-tuning baselines: what trains, that it all gets gradients, LoRA merging, LR decay."""

from __future__ import annotations

import copy
from functools import partial

import pytest
import torch
from torch import nn

from weft_lightning.models.adapter import EdgeAwareTokenRefiner, SpatialExpertEnhancer
from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.experts import ExpertMixture
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.peft import (
    AdaptFormerBackbone,
    FrozenBackbone,
    FullFineTuning,
    LoRABackbone,
    LoRALinear,
    ViTAdapterBackbone,
    VPTBackbone,
)
from weft_lightning.models.segmentor import Segmentor
from weft_lightning.models.weft import WEFTBackbone
from weft_lightning.module import WEFTModule

SMALL = {"embed_dim": 64, "depth": 4, "num_heads": 2}
IMAGES = (2, 3, 64, 64)


def vit(name: str = "vit_small_patch16_224", **kwargs: object) -> FrozenViT:
    torch.manual_seed(0)
    return FrozenViT(name, model_kwargs=SMALL, **kwargs)


BUILDERS = {
    "full": lambda v: FullFineTuning(v),
    "frozen": lambda v: FrozenBackbone(v),
    "lora": lambda v: LoRABackbone(v, rank=4),
    "vpt": lambda v: VPTBackbone(v, num_prompts=3),
    "adaptformer": lambda v: AdaptFormerBackbone(v, bottleneck=8),
    "vit_adapter": lambda v: ViTAdapterBackbone(v, conv_channels=16, deform_heads=4),
    "weft": lambda v: WEFTBackbone(
        v, conv_channels=16, kernel_sizes=(1, 3, 5), top_k=2, deform_heads=4
    ),
}
# which trainable parameter names each method may have (names relative to the backbone)
EXPECTED = {
    "full": lambda n: n.startswith("vit.vit."),
    "frozen": lambda n: False,
    "lora": lambda n: n.endswith(("lora_a", "lora_b")),
    "vpt": lambda n: n == "prompts",
    "adaptformer": lambda n: n.startswith("adapters."),
    "vit_adapter": lambda n: not n.startswith("vit."),
    "weft": lambda n: not n.startswith("vit."),
}


def trainable(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


@pytest.mark.parametrize("method", list(BUILDERS))
def test_only_intended_parameters_train_and_all_get_gradients(method: str) -> None:
    backbone = BUILDERS[method](vit(drop_path_rate=0.1)).train()
    names = trainable(backbone)
    assert all(EXPECTED[method](n) for n in names), [n for n in names if not EXPECTED[method](n)]
    frozen = [n for n, p in backbone.named_parameters() if not p.requires_grad]
    assert all(n.startswith("vit.") for n in frozen)
    if method != "frozen":
        assert names
    if method in ("full", "frozen"):
        assert len(names) in (0, sum(1 for _ in backbone.vit.parameters()))

    images = torch.randn(*IMAGES, requires_grad=method == "frozen")
    features = backbone(images)
    assert [f.shape[-2:] for f in features] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert [f.shape[1] for f in features] == backbone.out_channels
    sum((f.float() ** 2).mean() for f in features).backward()
    params = dict(backbone.named_parameters())
    missing = [n for n in names if params[n].grad is None]
    assert not missing, f"{method}: no gradient for {missing}"
    assert all(params[n].grad is None for n in frozen)
    assert all(torch.isfinite(params[n].grad).all() for n in names)


@pytest.mark.parametrize("name", ["vit_small_patch16_224", "eva02_small_patch14_224"])
def test_lora_merged_equals_unmerged(name: str) -> None:
    base = vit(name)
    backbone = LoRABackbone(copy.deepcopy(base), rank=4, alpha=8)
    layers = backbone.lora_layers()
    assert len(layers) == 4 * 2  # fused qkv + proj in each of the 4 blocks
    with torch.no_grad():
        for layer in layers:
            layer.lora_b.normal_(0, 0.1)
    images = torch.randn(*IMAGES)
    with torch.no_grad():
        unmerged = backbone.train()(images)  # low-rank path beside the frozen weight
        merged_eval = backbone.eval()(images)  # update folded into the weight
        plain = FrozenBackbone(base).eval()(images)
        backbone.merge()
        merged = backbone(images)
    assert not backbone.lora_layers()
    assert not any(isinstance(m, LoRALinear) for m in backbone.modules())
    for a, b, c, base in zip(unmerged, merged_eval, merged, plain, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(a, base, atol=1e-3)  # the update does change the output


def test_lora_starts_from_the_base_model_and_keeps_state_keys() -> None:
    base = vit()
    keys = set(base.state_dict())
    lora = LoRABackbone(copy.deepcopy(base), rank=2)
    lora_keys = {k.removeprefix("vit.") for k in lora.state_dict()}
    assert keys <= lora_keys
    assert all(k.endswith(("lora_a", "lora_b")) for k in lora_keys - keys)
    images = torch.randn(*IMAGES)
    with torch.no_grad():
        for a, b in zip(lora.eval()(images), FrozenBackbone(base).eval()(images), strict=True):
            torch.testing.assert_close(a, b)


def test_full_fine_tuning_layer_decay() -> None:
    backbone = FullFineTuning(vit(), layer_decay=0.9)
    scales = backbone.lr_scales()
    assert scales["vit.vit.pos_embed"] == pytest.approx(0.9**5)
    assert scales["vit.vit.patch_embed.proj.weight"] == pytest.approx(0.9**5)
    assert scales["vit.vit.blocks.0.attn.qkv.weight"] == pytest.approx(0.9**4)
    assert scales["vit.vit.blocks.3.mlp.fc2.bias"] == pytest.approx(0.9)
    module = WEFTModule(Segmentor(backbone, partial(FPNHead, channels=8)), lr=1e-4)
    groups = module.parameter_groups()
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in module.segmentor.parameters())
    names = {id(p): n for n, p in backbone.named_parameters()}
    for group in groups:
        backbone_params = [names[id(p)] for p in group["params"] if id(p) in names]
        for name in backbone_params:
            assert group["lr"] == pytest.approx(1e-4 * scales[name])
    pos_group = next(g for g in groups if any(p is backbone.vit.vit.pos_embed for p in g["params"]))
    assert pos_group["weight_decay"] == 0.0
    torch.optim.AdamW(groups)  # groups are valid optimiser input
    with pytest.raises(ValueError, match="layer_decay"):
        FullFineTuning(vit(), layer_decay=0)


def test_adaptformer_starts_at_identity_and_copies_stay_consistent() -> None:
    base = vit()
    images = torch.randn(*IMAGES)
    adapted = AdaptFormerBackbone(copy.deepcopy(base), bottleneck=8).eval()
    with torch.no_grad():
        reference = FrozenBackbone(base).eval()(images)
        for a, b in zip(adapted(images), reference, strict=True):
            torch.testing.assert_close(a, b)
        clone = copy.deepcopy(adapted)
        for adapter in clone.adapters:
            adapter.up.weight.normal_(0, 1.0)
        changed = clone(images)
        for a, b, c in zip(adapted(images), reference, changed, strict=True):
            torch.testing.assert_close(a, b)  # the copy's adapters do not leak into the original
            assert not torch.allclose(c, b, atol=1e-4)


def test_vpt_prompts_change_output_and_need_a_plain_vit() -> None:
    backbone = VPTBackbone(vit("vit_small_patch14_reg4_dinov2"), num_prompts=2).eval()
    images = torch.randn(*IMAGES)
    with torch.no_grad():
        tokens, prefix, _ = backbone.vit.embed(images)
        out_tokens, out_prefix = backbone.run_group(0, tokens, prefix)
        assert out_prefix.shape == prefix.shape and out_tokens.shape == tokens.shape
        base = backbone.vit.run_group(0, tokens, prefix)[0]
        assert not torch.allclose(out_tokens, base)
    with pytest.raises(ValueError, match="VisionTransformer"):
        VPTBackbone(vit("samvit_base_patch16"))


def test_vit_adapter_has_no_experts_refiner_or_enhancer() -> None:
    backbone = ViTAdapterBackbone(vit(), conv_channels=16, deform_heads=4)
    kinds = {type(m) for m in backbone.modules()}
    assert kinds.isdisjoint({ExpertMixture, EdgeAwareTokenRefiner, SpatialExpertEnhancer})
    weft = BUILDERS["weft"](vit())
    assert {ExpertMixture, EdgeAwareTokenRefiner, SpatialExpertEnhancer} <= {
        type(m) for m in weft.modules()
    }


def test_lora_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="LoRA targets"):
        LoRABackbone(vit(), targets=("mlp",))


def test_lora_reaches_eva_fused_qkv_with_separate_bias() -> None:
    backbone = LoRABackbone(vit("eva02_small_patch14_224"), rank=2).train()
    assert backbone.vit.vit.blocks[0].attn.q_bias is not None
    sum(f.square().mean() for f in backbone(torch.randn(*IMAGES))).backward()
    for block in backbone.vit.vit.blocks:
        assert block.attn.qkv.lora_b.grad.abs().sum() > 0
