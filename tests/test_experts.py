"""Wavelet experts, the routed mixture and the expert extractor."""

from __future__ import annotations

import copy

import pytest
import torch

from weft_lightning.models.expert_branch import WaveletExpertExtractor
from weft_lightning.models.experts import ExpertMixture, WaveletExpert
from weft_lightning.models.wavelet import is_channels_last


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_expert_shares_one_wtconv_across_groups() -> None:
    expert = WaveletExpert(64, 5)
    x = torch.randn(2, 64, 12, 10)
    assert expert(x).shape == x.shape
    wtconv = 5 * 16 * 25 + 6 * 16
    # one WTConv + BN(16) for the 4 groups, then 1x1 conv (bias) + BN(64)
    assert _count(expert) == wtconv + 32 + 64 * 64 + 64 + 128


def test_topk_weights_positive_and_normalised() -> None:
    torch.manual_seed(0)
    mixture = ExpertMixture(16, (1, 3, 5, 7), top_k=3)
    torch.nn.init.normal_(mixture.router.weight, std=1.0)
    probs, indices, weights = mixture.route(torch.randn(5, 16, 8, 8))
    assert probs.shape == (5, 4) and indices.shape == weights.shape == (5, 3)
    assert torch.all(weights > 0)
    assert torch.allclose(weights.sum(-1), torch.ones(5))
    # the chosen experts are the most probable ones
    assert torch.equal(probs.gather(1, indices), probs.topk(3, dim=-1).values)


def test_sparse_equals_dense_in_eval() -> None:
    torch.manual_seed(0)
    dense = ExpertMixture(16, (1, 3, 5, 7, 9), top_k=2, dispatch="dense")
    torch.nn.init.normal_(dense.router.weight, std=2.0)  # spread the routing over experts
    dense.train()
    dense(torch.randn(4, 16, 16, 16))  # non-trivial batch-norm running statistics
    sparse = ExpertMixture(16, (1, 3, 5, 7, 9), top_k=2, dispatch="sparse")
    sparse.load_state_dict(dense.state_dict())
    dense.eval()
    sparse.eval()
    x = torch.randn(6, 16, 16, 16)
    with torch.no_grad():
        out_dense, out_sparse = dense(x), sparse(x)
    assert (out_dense - out_sparse).abs().max() < 1e-5
    assert len(set(dense.route(x)[1].flatten().tolist())) > 2  # several experts really used


@pytest.mark.parametrize("dispatch", ["dense", "sparse"])
def test_router_and_every_expert_get_gradients(dispatch: str) -> None:
    torch.manual_seed(0)
    mixture = ExpertMixture(16, (1, 3, 5, 7, 9), top_k=2, dispatch=dispatch)
    x = torch.randn(2, 16, 8, 8)
    mixture(x).square().mean().backward()
    assert mixture.router.weight.grad is not None
    assert mixture.router.weight.grad.abs().sum() > 0
    missing = [n for n, p in mixture.named_parameters() if p.grad is None]
    assert missing == []  # idle experts stay in the graph (plain DDP works)


def test_routing_stats_and_balance_loss() -> None:
    mixture = ExpertMixture(16, (1, 3, 5), top_k=2)
    mixture(torch.randn(3, 16, 8, 8))
    assert mixture.pop_auxiliary_loss() is None  # off by default: the paper preset
    stats = mixture.routing_stats()
    chosen = [v for k, v in stats.items() if k.endswith("/chosen")]
    weights = [v for k, v in stats.items() if k.endswith("/weight")]
    assert sum(chosen) == pytest.approx(2.0)  # top-2 per sample
    assert sum(weights) == pytest.approx(1.0)
    assert mixture.routing_stats()["expert0_k1/chosen"] == 0.0  # reset after reading

    balanced = ExpertMixture(16, (1, 3, 5), top_k=2, balance_loss_weight=0.5)
    balanced(torch.randn(3, 16, 8, 8))
    loss = balanced.pop_auxiliary_loss()
    assert loss is not None and loss.ndim == 0 and loss > 0
    loss.backward()
    assert balanced.router.weight.grad.abs().sum() > 0
    assert balanced.pop_auxiliary_loss() is None


def test_bad_mixture_arguments() -> None:
    with pytest.raises(ValueError, match="dispatch must be one of"):
        ExpertMixture(16, (1, 3), dispatch="fast")
    with pytest.raises(ValueError, match="top_k=3"):
        ExpertMixture(16, (1, 3), top_k=3)


@pytest.mark.parametrize("size", [(512, 512), (480, 640)])
def test_extractor_shapes(size: tuple[int, int]) -> None:
    extractor = WaveletExpertExtractor(embed_dim=32, channels=16, kernel_sizes=(1, 3), top_k=1)
    with torch.no_grad():
        c1, tokens, shapes = extractor(torch.randn(1, 3, *size))
    h, w = size
    assert c1.shape == (1, 32, h // 4, w // 4)
    assert shapes == [(h // 8, w // 8), (h // 16, w // 16), (h // 32, w // 32)]
    assert tokens.shape == (1, sum(a * b for a, b in shapes), 32)


def test_extractor_shares_mixture_and_down_block() -> None:
    extractor = WaveletExpertExtractor(embed_dim=1024)  # the paper's widths
    stem = 3 * 64 * 9 + 64 + 128
    down = 64 * 64 * 9 + 64 + 128
    lift = 64 * 1024 + 1024
    assert _count(extractor) == stem + _count(extractor.mixture) + down + lift + 3 * 1024
    assert _count(extractor) == 176_375
    assert not hasattr(extractor, "mixtures")


def test_plain_conv_prior_ablation() -> None:
    extractor = WaveletExpertExtractor(embed_dim=32, channels=16, use_experts=False)
    assert not isinstance(extractor.mixture, ExpertMixture)
    c1, tokens, _ = extractor(torch.randn(2, 3, 64, 64))
    (c1.sum() + tokens.sum()).backward()
    assert all(p.grad is not None for p in extractor.parameters())


@pytest.mark.parametrize("size", [(12, 10), (9, 7)])
def test_fused_equals_dense_in_train_and_eval(size: tuple[int, int]) -> None:
    torch.manual_seed(0)
    dense = ExpertMixture(16, (1, 3, 5), top_k=2, dispatch="dense")
    torch.nn.init.normal_(dense.router.weight, std=2.0)
    fused = ExpertMixture(16, (1, 3, 5), top_k=2, dispatch="fused")
    fused.load_state_dict(dense.state_dict())
    x = torch.randn(3, 16, *size)
    outs = []
    for mixture in (dense, fused):
        out = mixture.train()(x)
        out.square().mean().backward()
        outs.append(out)
    assert (outs[0] - outs[1]).abs().max() < 1e-5
    for (name, a), b in zip(dense.named_parameters(), fused.parameters(), strict=True):
        assert torch.allclose(a.grad, b.grad, atol=1e-5), name
    for (name, a), b in zip(dense.state_dict().items(), fused.state_dict().values(), strict=True):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name  # running statistics
    dense.eval()
    fused.eval()
    with torch.no_grad():
        assert (dense(x) - fused(x)).abs().max() < 1e-5


def conv_layouts(extractor: WaveletExpertExtractor, images: torch.Tensor) -> list[bool]:
    """Whether each convolution of one forward pass saw channels-last input."""
    layouts: list[bool] = []
    hooks = [
        module.register_forward_pre_hook(
            lambda m, inputs: layouts.append(is_channels_last(inputs[0]))
        )
        for module in extractor.modules()
        if isinstance(module, torch.nn.Conv2d)
    ]
    c1, tokens, _ = extractor(images, lift_finest=False)
    assert c1.is_contiguous() and tokens.is_contiguous()
    (c1.sum() + tokens.sum()).backward()
    for hook in hooks:
        hook.remove()
    return layouts


def test_branch_runs_channels_last_only_where_it_costs_no_precision() -> None:
    """Evaluation on the CPU (and every GPU pass) runs the convolutions channels-last (faster
    depthwise convolutions); CPU training keeps the usual layout, whose train-mode batch norm
    is exact to float32 rounding; outputs come out contiguous either way."""
    extractor = WaveletExpertExtractor(embed_dim=32, channels=16, kernel_sizes=(1, 3, 5), top_k=2)
    # 256 px: no 1 x 1 map (whose layout is both at once), and enough pixels per channel for a
    # channels-last batch norm to show its error (about 3e-3 of the largest gradient)
    torch.manual_seed(0)
    images = torch.randn(2, 3, 256, 256) * 2 + 1
    training = conv_layouts(extractor.train(), images)
    evaluation = conv_layouts(extractor.eval(), images)
    assert training and not any(training)
    assert evaluation and all(evaluation)
    reference = copy.deepcopy(extractor).double().train()
    extractor.train().zero_grad()
    expected = reference(images.double(), lift_finest=False)[0]
    got = extractor(images, lift_finest=False)[0]
    assert (got.double() - expected).abs().max() / expected.abs().max() < 1e-6
    weights = torch.randn(got.shape, generator=torch.Generator().manual_seed(0))
    (got * weights).sum().backward()
    (expected * weights.double()).sum().backward()
    pairs = [
        (p32.grad.double(), p64.grad)
        for p32, p64 in zip(extractor.parameters(), reference.parameters(), strict=True)
        if p64.grad is not None
    ]
    largest = max(float(g64.abs().max()) for _, g64 in pairs)
    worst = max(float((g32 - g64).abs().max()) for g32, g64 in pairs)
    assert worst / largest < 1e-4  # of the largest gradient
