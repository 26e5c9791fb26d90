"""WEFTModule optimisation: schedule shape and parameter groups."""

from __future__ import annotations

import itertools
from functools import partial

import pytest
import torch

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.peft import FullFineTuning
from weft_lightning.models.segmentor import Segmentor
from weft_lightning.models.weft import WEFTBackbone
from weft_lightning.module import WEFTModule, poly_warmup_factor


def test_poly_schedule_warms_up_then_decays_to_zero() -> None:
    factors = [
        poly_warmup_factor(s, warmup_steps=10, total_steps=110, power=1.0) for s in range(111)
    ]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[60] == pytest.approx(0.5)
    assert factors[110] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def _tiny_vit(frozen: bool = True) -> FrozenViT:
    return FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4})


def test_frozen_backbone_parameters_are_not_optimised() -> None:
    module = WEFTModule(Segmentor(_tiny_vit(), partial(FPNHead, channels=16)), lr=1e-3)
    optimised = {id(p) for g in module.parameter_groups() for p in g["params"]}
    assert not any(id(p) in optimised for p in module.segmentor.backbone.parameters())
    head = {id(p) for p in module.segmentor.head.parameters()}
    assert optimised == head
    no_decay = [g for g in module.parameter_groups() if g["weight_decay"] == 0.0]
    assert all(p.ndim == 1 for g in no_decay for p in g["params"])


def test_full_fine_tuning_gets_layer_wise_lr_decay() -> None:
    backbone = FullFineTuning(_tiny_vit(), layer_decay=0.5)
    module = WEFTModule(Segmentor(backbone, partial(FPNHead, channels=16)), lr=1.0)
    groups = module.parameter_groups()
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    vit = backbone.vit.vit
    first, last = vit.blocks[0].mlp.fc1.weight, vit.blocks[-1].mlp.fc1.weight
    assert lr_of[id(last)] == pytest.approx(0.5 * 1.0)
    assert lr_of[id(first)] == pytest.approx(0.5**4)
    assert lr_of[id(module.segmentor.head.classifier.weight)] == 1.0
    total = sum(p.numel() for p in module.segmentor.parameters())
    assert sum(p.numel() for g in groups for p in g["params"]) == total
    torch.optim.AdamW(groups)  # the groups form a valid optimiser


def test_full_fine_tuning_of_the_weft_model_decays_only_the_vit() -> None:
    vit = FrozenViT("vit_tiny_patch16_224", frozen=False, model_kwargs={"depth": 4})
    backbone = WEFTBackbone(vit, conv_channels=16, kernel_sizes=(1, 3), top_k=1, deform_heads=4,
                            extra_extractors=0, vit_layer_decay=0.5)  # fmt: skip
    module = WEFTModule(Segmentor(backbone, partial(FPNHead, channels=16)), lr=1.0)
    lr_of = {id(p): g["lr"] for g in module.parameter_groups() for p in g["params"]}
    assert lr_of[id(vit.vit.blocks[-1].attn.qkv.weight)] == pytest.approx(0.5)
    assert lr_of[id(vit.vit.patch_embed.proj.weight)] == pytest.approx(0.5**5)
    assert lr_of[id(backbone.spatial_prior.lift.weight)] == 1.0
    assert len(lr_of) == sum(1 for _ in module.segmentor.parameters())
    frozen = WEFTBackbone(_tiny_vit(), conv_channels=16, kernel_sizes=(1, 3), top_k=1,
                          deform_heads=4, extra_extractors=0)  # fmt: skip
    assert frozen.lr_scales() == {}
