"""Multi-scale deformable attention against a slow explicit-loop reference."""

from __future__ import annotations

import math

import pytest
import torch
from helpers import OpCounter

from weft_lightning.models.deform_attn import (
    MSDeformAttn,
    flatten_levels,
    grid_reference_points,
    level_layout,
)


def _bilinear(value: torch.Tensor, x: float, y: float) -> torch.Tensor:
    """Bilinear sample of value (H, W, d) at pixel coordinates, zeros outside (pixel centres)."""
    height, width, dim = value.shape
    x0, y0 = math.floor(x), math.floor(y)
    out = torch.zeros(dim, dtype=torch.float64)
    for dy in (0, 1):
        for dx in (0, 1):
            xi, yi = x0 + dx, y0 + dy
            if 0 <= xi < width and 0 <= yi < height:
                weight = (1 - abs(x - xi)) * (1 - abs(y - yi))
                out += weight * value[yi, xi].double()
    return out


def _reference(module: MSDeformAttn, query, ref, flat, shapes, starts) -> torch.Tensor:
    """Deformable attention written with explicit loops over every index."""
    batch, num_queries, _ = query.shape
    heads, levels, points = module.n_heads, module.n_levels, module.n_points
    head_dim = module.value_dim // heads
    value = module.value_proj(flat).double().view(batch, -1, heads, head_dim)
    offsets = (
        module.sampling_offsets(query).double().view(batch, num_queries, heads, levels, points, 2)
    )
    logits = (
        module.attention_weights(query).double().view(batch, num_queries, heads, levels * points)
    )
    attn = logits.softmax(-1).view(batch, num_queries, heads, levels, points)
    out = torch.zeros(batch, num_queries, heads, head_dim, dtype=torch.float64)
    for b in range(batch):
        for q in range(num_queries):
            for h in range(heads):
                for lvl in range(levels):
                    height, width = (int(v) for v in shapes[lvl])
                    start = int(starts[lvl])
                    level_value = value[b, start : start + height * width, h].view(
                        height, width, head_dim
                    )
                    for p in range(points):
                        loc_x = ref[b, q, lvl, 0] + offsets[b, q, h, lvl, p, 0] / width
                        loc_y = ref[b, q, lvl, 1] + offsets[b, q, h, lvl, p, 1] / height
                        px = float(loc_x) * width - 0.5
                        py = float(loc_y) * height - 0.5
                        sample = _bilinear(level_value, px, py)
                        out[b, q, h] += attn[b, q, h, lvl, p] * sample
    out = out.view(batch, num_queries, heads * head_dim).float()
    return module.output_proj(out)


@pytest.mark.parametrize("ratio", [1.0, 0.5])
def test_matches_explicit_loop_reference(ratio: float) -> None:
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=3, ratio=ratio)
    # perturb the zero-initialised layers so offsets and weights are not trivial
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.5)
    torch.nn.init.normal_(module.attention_weights.weight, std=0.5)
    maps = [torch.randn(2, 16, 5, 6), torch.randn(2, 16, 3, 2)]
    flat, shapes, starts = flatten_levels(maps)
    query = torch.randn(2, 7, 16)
    ref = torch.rand(2, 7, 2, 2)
    with torch.no_grad():
        fast = module(query, ref, flat, shapes, starts)
        slow = _reference(module, query, ref, flat, shapes, starts)
    assert fast.shape == (2, 7, 16)
    assert torch.allclose(fast, slow, atol=1e-5), (fast - slow).abs().max()


def test_backward_gathers_level_gradients_without_zero_filled_copies() -> None:
    """Each level's sampling locations and weights are split off once (unbind), so the
    backward pass stacks their gradients instead of zero-filling one full copy per level."""
    torch.manual_seed(0)
    module = MSDeformAttn(d_model=16, n_levels=3, n_heads=2, n_points=2)
    torch.nn.init.normal_(module.sampling_offsets.weight, std=0.5)
    maps = [torch.randn(1, 16, 6, 6), torch.randn(1, 16, 3, 3), torch.randn(1, 16, 2, 2)]
    flat, shapes, starts = flatten_levels(maps)
    query = torch.randn(1, 5, 16, requires_grad=True)
    out = module(query, torch.rand(1, 5, 3, 2), flat, shapes, starts)
    with OpCounter() as ops:
        out.square().sum().backward()
    assert ops.counts["aten.select_backward"] == 0
    assert ops.counts["aten.stack"] >= 2  # one per split tensor: locations and weights
    assert query.grad is not None and query.grad.abs().sum() > 0


def test_deformable_detr_initialisation() -> None:
    module = MSDeformAttn(d_model=32, n_levels=3, n_heads=4, n_points=2, ratio=0.5)
    assert module.value_proj.out_features == 16
    assert module.output_proj.in_features == 16
    assert torch.all(module.sampling_offsets.weight == 0)
    assert torch.all(module.attention_weights.weight == 0)
    bias = module.sampling_offsets.bias.view(4, 3, 2, 2)
    # head 0 points along +x; point p sits at distance p + 1; same on every level
    assert torch.allclose(bias[0, 0, :, 0], torch.tensor([1.0, 2.0]))
    assert torch.allclose(bias[:, 0], bias[:, 2])
    assert torch.allclose(bias[:, 0, 0].abs().amax(-1), torch.ones(4))


def test_helpers_and_padding_mask() -> None:
    shapes, starts = level_layout([(4, 4), (2, 2), (1, 1)])
    assert starts.tolist() == [0, 16, 20]
    ref = grid_reference_points([(2, 4)])
    assert ref.shape == (1, 8, 1, 2)
    assert torch.allclose(ref[0, 0, 0], torch.tensor([0.125, 0.25]))
    module = MSDeformAttn(d_model=8, n_levels=3, n_heads=2, n_points=2)
    flat = torch.randn(1, 21, 8)
    query = torch.randn(1, 8, 8)
    mask = torch.zeros(1, 21, dtype=torch.bool)
    mask[:, 16:] = True
    out_masked = module(query, ref.expand(1, 8, 3, 2), flat, shapes, starts, mask)
    changed = flat.clone()
    changed[:, 16:] = 100.0
    out_changed = module(query, ref.expand(1, 8, 3, 2), changed, shapes, starts, mask)
    assert torch.allclose(out_masked, out_changed)


def test_bad_layout_raises_clear_error() -> None:
    module = MSDeformAttn(d_model=8, n_levels=2, n_heads=2, n_points=1)
    shapes, starts = level_layout([(2, 2), (1, 1)])
    with pytest.raises(ValueError, match="input_flatten has 6 positions"):
        module(torch.randn(1, 3, 8), torch.rand(1, 3, 2, 2), torch.randn(1, 6, 8), shapes, starts)
    with pytest.raises(ValueError, match="divisible by n_heads"):
        MSDeformAttn(d_model=10, n_heads=4)


def test_bf16_autocast_and_gradients() -> None:
    module = MSDeformAttn(d_model=16, n_levels=2, n_heads=2, n_points=2)
    flat, shapes, starts = flatten_levels([torch.randn(1, 16, 4, 4), torch.randn(1, 16, 2, 2)])
    query = torch.randn(1, 5, 16, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = module(query, torch.rand(1, 5, 2, 2), flat, shapes, starts)
    out.float().sum().backward()
    assert all(p.grad is not None for p in module.parameters())


def test_checkpointed_samples_keep_less_and_give_the_same_gradients() -> None:
    """``checkpoint_samples`` recomputes the sampled values in backward instead of keeping them:
    the same output and gradients with fewer bytes saved for the backward pass."""
    maps = [torch.randn(2, 32, 16, 16), torch.randn(2, 32, 8, 8)]
    flat, shapes, starts = flatten_levels(maps)
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        module = MSDeformAttn(32, 2, 4, 4, checkpoint_samples=checkpointed)
        query = torch.randn(2, 64, 32, requires_grad=True)
        saved: list[int] = []

        def pack(t: torch.Tensor, saved: list[int] = saved) -> torch.Tensor:
            saved.append(t.numel() * t.element_size())
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            out = module(query, torch.rand(2, 64, 2, 2), flat, shapes, starts)
        out.square().sum().backward()
        grads = [query.grad, *(p.grad for p in module.parameters())]
        results.append((out, grads, sum(saved)))
    (out_a, grads_a, saved_a), (out_b, grads_b, saved_b) = results
    assert torch.equal(out_a, out_b)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(grads_a, grads_b, strict=True))
    assert saved_b < 0.75 * saved_a
