"""Adapters: edge-aware refiner, spatial expert enhancer, injector, extractor, stage."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from weft_lightning.models.adapter import (
    DirectionalLaplacian,
    EdgeAwareTokenRefiner,
    Extractor,
    Injector,
    InteractionStage,
    SpatialExpertEnhancer,
    join_maps,
    split_maps,
)
from weft_lightning.models.deform_attn import grid_reference_points, level_layout

SHAPES = [(8, 6), (4, 3), (2, 2)]  # 1/8, 1/16, 1/32 of a 64x48 image
GRID = (4, 3)


def _deform_inputs() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    shapes, start = level_layout(SHAPES)
    return grid_reference_points([GRID]), shapes, start


def _tokens(batch: int, dim: int) -> torch.Tensor:
    return torch.randn(batch, sum(h * w for h, w in SHAPES), dim)


def test_split_and_join_maps_round_trip() -> None:
    tokens = _tokens(2, 5)
    maps = split_maps(tokens, SHAPES)
    assert [tuple(m.shape) for m in maps] == [(2, 5, h, w) for h, w in SHAPES]
    assert torch.equal(join_maps(maps), tokens)


def test_refiner_matches_explicit_formula() -> None:
    torch.manual_seed(0)
    refiner = EdgeAwareTokenRefiner(16, num_heads=4, edge_strength=0.5)
    a = torch.randn(2, 10, 16)
    out = refiner(a)
    # explicit computation of the specification
    normed = a / a.norm(dim=-1, keepdim=True)
    heads = []
    for h in range(4):
        part = slice(4 * h, 4 * h + 4)
        scores = normed[..., part] @ normed[..., part].transpose(1, 2) / math.sqrt(4)
        heads.append(scores.softmax(-1) @ a[..., part])
    t = torch.cat(heads, dim=-1)
    var = a.var(dim=-1)
    edge = torch.sigmoid((var - var.mean()) / (var.std() + 1e-6))
    t = (1 + 0.5 * edge[..., None]) * t
    gate = torch.sigmoid(refiner.gate.weight[0, 0] * a.mean(dim=(1, 2)) + refiner.gate.bias[0])
    expected = a + gate[:, None, None] * t
    assert torch.allclose(out, expected, atol=1e-5)


def test_refiner_edge_has_no_gradient() -> None:
    refiner = EdgeAwareTokenRefiner(8)
    a = torch.randn(1, 5, 8, requires_grad=True)
    assert not refiner._edge(a).requires_grad
    refiner(a).sum().backward()
    assert refiner.gate.weight.grad is not None and a.grad is not None


def test_injector_is_identity_at_init() -> None:
    torch.manual_seed(0)
    injector = Injector(32, num_heads=4, n_points=2, deform_ratio=0.5)
    x = torch.randn(2, GRID[0] * GRID[1], 32)
    c = _tokens(2, 32)
    out = injector(x, c, *_deform_inputs())
    assert torch.equal(out, x)
    with torch.no_grad():
        injector.gamma.fill_(1.0)
    assert not torch.allclose(injector(x, c, *_deform_inputs()), x)


def test_laplacian_init_and_reflect_padding() -> None:
    lap = DirectionalLaplacian(2)
    assert torch.equal(lap.weight[0, 0], torch.tensor([[1.0, -2.0, 1.0]] * 3))
    ramp = torch.arange(6.0).expand(1, 2, 5, 6)  # linear along x: zero second derivative
    out = lap(ramp)
    assert out.shape == ramp.shape
    assert torch.all(out[..., 1:-1] == 0)
    assert torch.all(out[..., 0] != 0)  # reflect padding (zeros padding would differ too)
    assert out[0, 0, 0, 0] == 3 * (1 - 0 * 2 + 1)
    assert lap(torch.randn(1, 2, 1, 1)).shape == (1, 2, 1, 1)  # tiny maps fall back


def test_enhancer_shapes_init_and_count() -> None:
    enhancer = SpatialExpertEnhancer(256)
    assert torch.equal(enhancer.mix, torch.ones(3, 3))
    tokens = _tokens(2, 256)
    assert enhancer(tokens, SHAPES).shape == tokens.shape
    cascades = sum(64 * (k * k + 1) + 128 + 256 * 256 + 256 + 512 for k in (3, 5, 7))
    count = sum(p.numel() for p in enhancer.parameters())
    assert count == 256 * 9 + cascades + 9


def test_enhancer_output_formula_on_its_branches() -> None:
    torch.manual_seed(0)
    enhancer = SpatialExpertEnhancer(8, kernel_sizes=(3,)).eval()
    with torch.no_grad():
        enhancer.mix.copy_(torch.tensor([[0.0, 0.0, 0.0], [5.0, 0.0, 0.0], [0.0, 0.0, 5.0]]))
        tokens = _tokens(1, 8)
        out = split_maps(enhancer(tokens, SHAPES), SHAPES)
        maps = split_maps(tokens, SHAPES)
        w = enhancer.mix.softmax(-1)
        for index, m in enumerate(maps):
            branches = (enhancer.laplacian(m), m, enhancer.cascades[0](m))
            expected = F.gelu(m + sum(wi * b for wi, b in zip(w[index], branches, strict=True)))
            assert torch.allclose(out[index], expected, atol=1e-6)


def test_extractor_residual_and_ablation() -> None:
    for use_enhancer in (True, False):
        extractor = Extractor(32, ffn_ratio=0.25, drop_path=0.2, use_enhancer=use_enhancer)
        c = _tokens(2, 32)
        out = extractor(c, SHAPES)
        assert out.shape == c.shape
        out.sum().backward()
        assert all(p.grad is not None for p in extractor.parameters())
    extractor.eval()
    with torch.no_grad():
        extractor.fc2.weight.zero_()
        extractor.fc2.bias.zero_()
        assert torch.equal(extractor(c, SHAPES), c)


def test_stage_checkpointing_gives_same_outputs_and_gradients() -> None:
    torch.manual_seed(0)
    block = torch.nn.Linear(32, 32)

    def run_blocks(tokens: torch.Tensor, prefix: torch.Tensor):
        joined = block(torch.cat([prefix, tokens], dim=1))
        return joined[:, prefix.shape[1] :], joined[:, : prefix.shape[1]]

    results = []
    for with_cp in (False, True):
        torch.manual_seed(1)
        injector = Injector(32, num_heads=4, n_points=2)
        with torch.no_grad():
            injector.gamma.fill_(0.5)
        stage = InteractionStage(injector, [Extractor(32), Extractor(32)])
        stage.set_grad_checkpointing(with_cp)
        x = torch.randn(2, 12, 32)
        prefix = torch.randn(2, 1, 32)
        c = _tokens(2, 32)
        out = stage(x, prefix, c, run_blocks, _deform_inputs(), SHAPES)
        sum(o.sum() for o in out).backward()
        results.append((out, [p.grad.clone() for p in stage.parameters()]))
    for a, b in zip(results[0][0], results[1][0], strict=True):
        assert torch.allclose(a, b, atol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_checkpointed_extractors_are_recomputed_one_at_a_time() -> None:
    """With gradient checkpointing each extractor is recomputed right before its own backward
    pass, so the activations of only one extractor are alive at a time (the stage's peak)."""
    from weft_lightning.models.grad_checkpointing import is_recomputing

    events: list[str] = []
    extractors = [Extractor(32) for _ in range(3)]
    for index, extractor in enumerate(extractors):

        def log_recompute(module, inputs, index=index):
            if is_recomputing():  # a recomputation may stop early: log where it starts
                events.append(f"recompute{index}")

        def log_grad(module, inputs, output, index=index):
            if not is_recomputing():
                output.register_hook(lambda grad: events.append(f"grad{index}"))

        extractor.register_forward_pre_hook(log_recompute)
        extractor.register_forward_hook(log_grad)
    stage = InteractionStage(None, extractors)
    stage.set_grad_checkpointing(True)
    x, prefix, c = torch.randn(2, 12, 32), torch.randn(2, 0, 32), _tokens(2, 32)
    c.requires_grad_(True)
    _, _, out = stage(x, prefix, c, lambda t, p: (t, p), _deform_inputs(), SHAPES)
    out.sum().backward()
    assert events == ["grad2", "recompute2", "grad1", "recompute1", "grad0", "recompute0"]


def test_enhancer_equals_the_reference_formula_with_its_max_pool() -> None:
    """The reference's same-size adaptive max-pool is an identity, so the enhancer adds
    ``w_p * m`` for it: the output equals the formula computed with the pool."""
    torch.manual_seed(0)
    enhancer = SpatialExpertEnhancer(8, num_scales=1).eval()
    with torch.no_grad():
        enhancer.mix.copy_(torch.tensor([[0.3, -0.2, 0.5]]))
    m = torch.randn(2, 8, 5, 7)
    w = enhancer.mix.softmax(dim=-1)[0]
    multi = sum(cascade(m) for cascade in enhancer.cascades)
    pooled = F.adaptive_max_pool2d(m, (5, 7))
    expected = F.gelu(m + w[0] * enhancer.laplacian(m) + w[1] * pooled + w[2] * multi)
    out = enhancer(join_maps([m]), [(5, 7)])
    assert torch.allclose(out, join_maps([expected]), atol=1e-6)


def test_refiner_in_evaluation_gives_an_image_the_same_result_alone_and_in_a_batch() -> None:
    """Evaluation standardises each image's token variance on its own; training keeps the
    reference's statistics over the whole batch (and so depends on the batch mates)."""
    torch.manual_seed(0)
    refiner = EdgeAwareTokenRefiner(16, num_heads=4, edge_strength=0.5)
    batch = torch.randn(3, 10, 16) * torch.tensor([1.0, 3.0, 0.2])[:, None, None]
    refiner.eval()
    alone = refiner(batch[:1])
    assert torch.equal(refiner(batch)[:1], alone)
    refiner.train()
    assert not torch.allclose(refiner(batch)[:1], refiner(batch[:1]))
