"""Ablation configs: each is a small delta that composes with every domain config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from jsonargparse import ArgumentParser

from weft_lightning.config_files import expand_config_args
from weft_lightning.lightning_cli import WEFTLightningCLI, build_cli

REPO = Path(__file__).parents[1]
ABLATIONS = sorted((REPO / "configs" / "ablation").glob("*.yaml"))
OWN_ABLATIONS = [p for p in ABLATIONS if not p.name.startswith("peft_")]
BACKBONE = "model.init_args.segmentor.init_args.backbone"
WEFT = "weft_lightning.models.WEFTBackbone"
EXPECTED = {
    "no_experts", "top1_experts", "top2_experts", "top4_experts", "top7_experts", "experts_1",
    "experts_2", "experts_4", "experts_6", "no_refiner", "no_enhancer", "no_injector",
    "dispatch_dense", "dispatch_sparse", "frozen", "full_finetune", "weft_full",
}  # fmt: skip
RUN_FOLDERS = ("orsi", "cod", "sod", "polyp")


def backbone_of(config: dict[str, Any]) -> dict[str, Any]:
    """The ``backbone`` section of a config file (empty when it has none)."""
    node: Any = config
    for key in ("model", "init_args", "segmentor", "init_args", "backbone"):
        node = node.get(key) if isinstance(node, dict) else None
    return node or {}


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def run_configs() -> list[Path]:
    """The domain run configs (configs/<domain>/*.yaml)."""
    return sorted(p for d in RUN_FOLDERS for p in (REPO / "configs" / d).glob("*.yaml"))


DOMAINS = run_configs()


@pytest.fixture(scope="module")
def fit_parser() -> ArgumentParser:
    """The `weft` parser (subcommands included), built without instantiating anything."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WEFTLightningCLI, "instantiate_classes", lambda self: None)
        patch.setattr(WEFTLightningCLI, "_run_subcommand", lambda self, subcommand: None)
        cli = build_cli(["fit", "--config", str(REPO / "configs" / "demo.yaml")])
    return cli.parser


def parse(parser: ArgumentParser, *configs: Path):
    """The resolved ``fit`` config of a stack of config files (``extends`` applied)."""
    args = expand_config_args([arg for c in configs for arg in ("--config", str(c))])
    return parser.parse_args(["fit", *args]).fit


def check_composition(parser: ArgumentParser, domain: Path, ablation: Path) -> None:
    """Parse ``domain + ablation`` and check the ablation's values won over the domain's."""
    original = parse(parser, domain)[BACKBONE]
    resolved = parse(parser, domain, ablation)[BACKBONE]
    delta = backbone_of(yaml.safe_load(ablation.read_text()))
    assert resolved.class_path == delta.get("class_path", original.class_path)
    assert_values_won(resolved.init_args, delta.get("init_args") or {}, (domain, ablation))
    # the domain's ViT (name and weights) survives every ablation, class switches included
    vit = original.init_args.vit.init_args
    assert resolved.init_args.vit.init_args.model_name == vit.model_name
    assert resolved.init_args.vit.init_args.checkpoint_path == vit.checkpoint_path


def assert_values_won(resolved: Any, delta: dict[str, Any], where: tuple[Path, Path]) -> None:
    """Every leaf value of ``delta`` (nested sections such as ``vit.init_args`` included) is the
    resolved value."""
    for key, value in delta.items():
        if isinstance(value, dict):
            assert_values_won(resolved[key], value, where)
        else:
            assert resolved[key] == value, (where[0].name, where[1].name, key)


def test_ablation_set_is_complete(fit_parser: ArgumentParser) -> None:
    assert {p.stem for p in OWN_ABLATIONS} >= EXPECTED
    assert all(parse(fit_parser, path)[BACKBONE].class_path == WEFT for path in DOMAINS)
    assert REPO / "configs" / "orsi" / "eorssd.yaml" in DOMAINS


@pytest.mark.parametrize("ablation", ABLATIONS, ids=lambda p: p.stem)
def test_each_ablation_composes_with_eorssd(ablation: Path, fit_parser: ArgumentParser) -> None:
    check_composition(fit_parser, REPO / "configs" / "orsi" / "eorssd.yaml", ablation)


@pytest.mark.slow
@pytest.mark.parametrize("domain", DOMAINS, ids=lambda p: str(p.relative_to(REPO / "configs")))
def test_every_ablation_composes_with_every_domain(
    domain: Path, fit_parser: ArgumentParser
) -> None:
    for ablation in ABLATIONS:
        check_composition(fit_parser, domain, ablation)


TINY_WEFT = """
model:
  init_args:
    segmentor:
      init_args:
        backbone:
          class_path: weft_lightning.models.WEFTBackbone
          init_args:
            vit:
              class_path: weft_lightning.models.FrozenViT
              init_args: {model_name: vit_tiny_patch16_224, model_kwargs: {depth: 4}}
            conv_channels: 16
            deform_heads: 4
            deform_points: 2
            extra_extractors: 0
"""


@pytest.mark.slow
@pytest.mark.parametrize("ablation", OWN_ABLATIONS, ids=lambda p: p.stem)
def test_ablation_builds_and_trains_a_step(ablation: Path, tmp_path: Path) -> None:
    """Each ablation of a tiny WEFT builds, and one training step reaches trainable weights."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_WEFT)
    args = ["--config", str(REPO / "configs" / "demo.yaml"), "--config", str(tiny)]
    args += ["--config", str(ablation), "--trainer.logger", "false"]
    module = build_cli(args, run=False).model
    backbone = module.segmentor.backbone
    trainable = [p for p in module.parameters() if p.requires_grad]
    vit_trains = ablation.stem in ("full_finetune", "weft_full")
    assert trainable and all(p.requires_grad for p in backbone.vit.vit.blocks.parameters()) == (
        vit_trains
    )
    images, masks = torch.randn(2, 3, 64, 64), (torch.rand(2, 1, 64, 64) > 0.5).float()
    module.train()
    module.segmentor.loss(images, masks)["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable)
    if "experts" in ablation.stem and ablation.stem != "no_experts":
        stats = backbone.routing_stats()
        delta = backbone_of(yaml.safe_load(ablation.read_text()))["init_args"]
        assert len([k for k in stats if k.endswith("/chosen")]) == len(delta["kernel_sizes"])
        chosen = sum(v for k, v in stats.items() if k.endswith("/chosen"))
        assert chosen == pytest.approx(delta["top_k"])  # every sample picks top_k experts
