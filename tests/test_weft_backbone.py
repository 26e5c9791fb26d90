"""WEFTBackbone: the paper's parameter count, pyramid shapes, gradients, init and ablations."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.deform_attn import MSDeformAttn
from weft_lightning.models.experts import ExpertMixture
from weft_lightning.models.layers import tokens_to_map
from weft_lightning.models.weft import WEFTBackbone

PAPER = Path(__file__).resolve().parents[1] / "configs" / "model" / "weft_l_paper.yaml"
SMALL = dict(conv_channels=16, kernel_sizes=(1, 3, 5), top_k=2, deform_heads=4, deform_points=2)


def _tiny_vit(name: str = "vit_tiny_patch16_224", **kwargs) -> FrozenViT:
    return FrozenViT(name, drop_path_rate=0.1, model_kwargs=dict(depth=4, **kwargs))


def _trainable(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def paper_backbone() -> WEFTBackbone:
    """The paper preset's backbone as its config builds it (on ``meta``: no memory)."""
    from weft_lightning.api import build_model

    with torch.device("meta"):
        return build_model([str(PAPER)], []).segmentor.backbone


def test_paper_preset_has_reference_parameter_count() -> None:
    backbone = paper_backbone()
    vit = backbone.vit
    assert _trainable(backbone) == 11_175_477
    assert _trainable(backbone.vit) == 0
    assert sum(p.numel() for p in vit.parameters()) == 303_347_712
    extractors = [len(stage.extractors) for stage in backbone.stages]
    assert extractors == [1, 1, 1, 3]
    assert backbone.stages[3].extractors[0].drop_path.drop_prob == pytest.approx(0.4)


def test_paper_preset_has_the_reference_layer_norms_without_overrides() -> None:
    """Every LayerNorm of the paper preset (ViT blocks and embedding norm, injectors,
    extractors) uses PyTorch's default eps 1e-5, as the reference; the ViT is the reference's
    pre-norm ViT-L/16 with LayerScale, no class token and no final norm."""
    backbone = paper_backbone()
    norms = [m for m in backbone.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert len(norms) == 24 * 2 + 1 + 4 * 2 + 6 and {m.eps for m in norms} == {1e-5}
    vit = backbone.vit.vit
    assert (vit.num_prefix_tokens, vit.embed_dim, len(vit.blocks)) == (0, 1024, 24)
    assert isinstance(vit.norm_pre, torch.nn.LayerNorm) and not vit.pos_embed.shape[1] % 196
    assert not backbone.vit.pos_embed_antialias


@pytest.mark.parametrize("size", [(512, 512), (480, 640)])
def test_pyramid_shapes(size: tuple[int, int]) -> None:
    backbone = WEFTBackbone(_tiny_vit(), **SMALL).eval()
    with torch.no_grad():
        features = backbone(torch.randn(1, 3, *size))
    h, w = size
    expected = [(1, 192, h // s, w // s) for s in (4, 8, 16, 32)]
    assert [tuple(f.shape) for f in features] == expected
    assert backbone.out_channels == [192] * 4


@pytest.mark.parametrize(
    ("name", "kwargs", "prefix"),
    [
        ("vit_tiny_patch16_224", {}, 1),  # class token, patch 16
        ("vit_small_patch14_reg4_dinov2", {"img_size": 112}, 5),  # class + 4 registers, patch 14
    ],
)
def test_prefix_tokens_bypass_adapters(name: str, kwargs: dict, prefix: int) -> None:
    """With gamma = 0 the ViT stage maps equal a plain run of the frozen ViT."""
    vit = _tiny_vit(name, **kwargs)
    assert vit.num_prefix_tokens == prefix
    backbone = WEFTBackbone(vit, **SMALL).eval()
    images = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        _, coarse, stage_maps = backbone.forward_stages(images)
        tokens, prefix_tokens, grid = vit.embed(images)
        assert grid == (6, 4)
        for index, stage_map in enumerate(stage_maps):
            tokens, prefix_tokens = vit.run_group(index, tokens, prefix_tokens)
            assert torch.allclose(stage_map, tokens_to_map(tokens, grid), atol=1e-5)
        features = backbone(images)
    assert [tuple(c.shape[-2:]) for c in coarse] == [(12, 8), (6, 4), (3, 2)]
    assert [tuple(f.shape[-2:]) for f in features] == [(24, 16), (12, 8), (6, 4), (3, 2)]


ABLATIONS = [
    {},
    {"dispatch": "sparse", "top_k": 1},
    {"dispatch": "fused"},
    {"grad_checkpointing": True},
    {"use_experts": False},
    {"use_refiner": False},
    {"use_enhancer": False},
    {"use_injector": False},
]


@pytest.mark.parametrize("options", ABLATIONS, ids=lambda o: ",".join(o) or "preset")
def test_every_trainable_parameter_gets_a_gradient(options: dict) -> None:
    """A plain sum of the pyramid reaches every trainable parameter (DDP without unused scan)."""
    torch.manual_seed(0)
    settings = {**SMALL, **options}
    checkpointing = settings.pop("grad_checkpointing", False)
    backbone = WEFTBackbone(_tiny_vit(), **settings).train()
    backbone.set_grad_checkpointing(checkpointing)
    with torch.no_grad():  # gamma != 0 so the injector's inner gradients are not all zero
        for stage in backbone.stages:
            if stage.injector is not None:
                stage.injector.gamma.fill_(0.1)
    features = backbone(torch.randn(2, 3, 64, 64))
    sum(f.sum() for f in features).backward()
    frozen_with_grad = [
        n for n, p in backbone.named_parameters() if not p.requires_grad and p.grad is not None
    ]
    trainable_without = [
        n for n, p in backbone.named_parameters() if p.requires_grad and p.grad is None
    ]
    assert frozen_with_grad == []
    assert trainable_without == []
    assert _trainable(backbone.vit) == 0
    assert _trainable(backbone) > 0
    if stage.injector is not None:
        assert backbone.stages[0].injector.attn.value_proj.weight.grad.abs().sum() > 0


def test_reference_initialisation() -> None:
    torch.manual_seed(0)
    backbone = WEFTBackbone(_tiny_vit(), conv_channels=64, deform_heads=4)
    for stage in backbone.stages:
        assert torch.all(stage.injector.gamma == 0)
        attn = stage.injector.attn
        assert isinstance(attn, MSDeformAttn)
        assert torch.all(attn.attention_weights.weight == 0)
        assert torch.all(attn.sampling_offsets.weight == 0)
        assert attn.sampling_offsets.bias.abs().max() == attn.n_points
        enhancer = stage.extractors[0].mixer
        assert torch.all(enhancer.mix == 1)
        assert torch.equal(enhancer.laplacian.weight[3, 0, 1], torch.tensor([1.0, -2.0, 1.0]))
        fc1 = stage.extractors[0].fc1
        assert abs(fc1.weight.std().item() - 0.02) < 0.003 and torch.all(fc1.bias == 0)
    prior = backbone.spatial_prior
    assert abs(prior.level_embed.std().item() - 1.0) < 0.1
    mixture = prior.mixture
    assert isinstance(mixture, ExpertMixture)
    assert mixture.router.weight.std().item() < 0.03
    wtconv = mixture.experts[2].phi[0]
    assert torch.all(wtconv.base_scale.weight == 1.0)
    assert torch.allclose(
        wtconv.wavelet_scale.weight, torch.full_like(wtconv.wavelet_scale.weight, 0.1)
    )
    lift = prior.lift  # 1x1, 64 -> 192: std sqrt(2 / 192)
    assert abs(lift.weight.std().item() - math.sqrt(2 / 192)) < 0.01
    down = prior.down[0]  # 3x3, 64 -> 64: std sqrt(2 / (9 * 64))
    assert abs(down.weight.std().item() - math.sqrt(2 / 576)) < 0.005
    for norm in backbone.norms:
        assert torch.all(norm.weight == 1) and torch.all(norm.bias == 0)
    gate = backbone.stages[0].injector.refiner.gate
    assert abs(torch.sigmoid(gate(torch.zeros(1, 1))).item() - 0.5) < 1e-6


def test_bf16_autocast_forward_backward() -> None:
    backbone = WEFTBackbone(_tiny_vit(), **SMALL).train()
    backbone.set_grad_checkpointing(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        features = backbone(torch.randn(2, 3, 64, 96))
    assert all(torch.isfinite(f).all() for f in features)
    sum(f.float().sum() for f in features).backward()
    assert all(p.grad is not None for p in backbone.parameters() if p.requires_grad)


def test_aux_loss_routing_stats_and_bad_input() -> None:
    backbone = WEFTBackbone(_tiny_vit(), **SMALL).train()
    backbone(torch.randn(2, 3, 64, 64))
    assert backbone.auxiliary_loss() is None
    stats = backbone.routing_stats()
    assert set(stats) == {
        f"expert{i}_k{k}/{s}" for i, k in enumerate((1, 3, 5)) for s in ("chosen", "weight")
    }
    balanced = WEFTBackbone(_tiny_vit(), balance_loss_weight=0.01, **SMALL).train()
    balanced(torch.randn(2, 3, 64, 64))
    loss = balanced.auxiliary_loss()
    assert loss is not None and loss.requires_grad
    assert WEFTBackbone(_tiny_vit(), use_experts=False, **SMALL).routing_stats() == {}
    with pytest.raises(ValueError, match="not a multiple of 32"):
        backbone(torch.randn(1, 3, 64, 80))
    with pytest.raises(ValueError, match="4 block groups"):
        WEFTBackbone(FrozenViT("vit_tiny_patch16_224", num_groups=2, model_kwargs=dict(depth=4)))


def _ddp_worker(rank: int, world: int, init_file: str, dispatch: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)
        backbone = WEFTBackbone(_tiny_vit(), **{**SMALL, "dispatch": dispatch, "top_k": 1})
        model = DistributedDataParallel(backbone, find_unused_parameters=False)
        optimiser = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
        torch.manual_seed(rank)
        for _ in range(3):  # unused parameters would make the second step fail
            optimiser.zero_grad()
            sum(f.mean() for f in model(torch.randn(1, 3, 64, 64))).backward()
            optimiser.step()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("dispatch", ["dense", "sparse"])
def test_plain_ddp_without_unused_parameter_search(tmp_path, dispatch: str) -> None:
    import torch.multiprocessing as mp

    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), dispatch), nprocs=2, join=True)


@pytest.mark.parametrize("dispatch", ["dense", "fused"])
def test_checkpointing_changes_neither_gradients_nor_running_statistics(dispatch: str) -> None:
    """Gradient checkpointing recomputes the frozen blocks, adapters and experts: same gradients,
    batch-norm running statistics and routing statistics updated once per step, as without it."""
    results = []
    for with_cp in (False, True):
        torch.manual_seed(0)
        backbone = WEFTBackbone(_tiny_vit(), dispatch=dispatch, **SMALL).train()
        backbone.set_grad_checkpointing(with_cp)
        with torch.no_grad():
            for stage in backbone.stages:
                stage.injector.gamma.fill_(0.1)
        torch.manual_seed(1)  # same drop-path draws in both runs
        features = backbone(torch.randn(2, 3, 64, 64))
        sum((f * f.detach().cos()).sum() for f in features).backward()
        grads = {n: p.grad for n, p in backbone.named_parameters() if p.requires_grad}
        buffers = {n: b.clone() for n, b in backbone.named_buffers()}
        buffers |= {k: torch.tensor(v) for k, v in backbone.routing_stats().items()}
        results.append((grads, buffers))
    (plain_grads, plain_buffers), (cp_grads, cp_buffers) = results
    assert any(name.endswith("/chosen") for name in cp_buffers)
    for name, grad in plain_grads.items():
        torch.testing.assert_close(cp_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)
    for name, buffer in plain_buffers.items():
        torch.testing.assert_close(cp_buffers[name], buffer, rtol=0, atol=0, msg=name)
