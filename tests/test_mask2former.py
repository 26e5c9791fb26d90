"""Mask2Former head: sizes, losses, gradients, inference and a one-batch overfit."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import yaml
from helpers import OpCounter
from torch import nn

from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.heads.mask2former import Mask2FormerHead
from weft_lightning.models.heads.point_sampling import importance_points
from weft_lightning.models.heads.position_encoding import SinePositionEncoding
from weft_lightning.models.heads.transformer_decoder import AttentionLayer, _unblock_empty_rows
from weft_lightning.models.segmentor import Segmentor

TINY = dict(
    hidden_dim=32,
    num_queries=8,
    enc_layers=1,
    enc_ffn=64,
    dec_layers=3,
    dec_ffn=64,
    nheads=4,
    norm_groups=8,
    num_points=256,
)


class ConvPyramid(nn.Module):
    """A small trainable conv net with the backbone interface (strides 4, 8, 16, 32)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 2, 1), nn.ReLU(), nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()
        )
        self.stages = nn.ModuleList(
            nn.Sequential(nn.Conv2d(width, width, 3, 2, 1), nn.ReLU()) for _ in range(3)
        )
        self.out_channels = [width] * 4

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        maps = [self.stem(images)]
        for stage in self.stages:
            maps.append(stage(maps[-1]))
        return maps


def pyramid(batch: int = 2, channels: int = 16, size: int = 64) -> list[torch.Tensor]:
    return [torch.randn(batch, channels, size // s, size // s) for s in (4, 8, 16, 32)]


def blob_batch(batch: int = 4, size: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright rectangle each on a noisy dark background, and its mask."""
    generator = torch.Generator().manual_seed(0)
    images = 0.2 * torch.randn(batch, 3, size, size, generator=generator)
    masks = torch.zeros(batch, 1, size, size)
    for i in range(batch):
        top, left = torch.randint(0, size // 2, (2,), generator=generator).tolist()
        height, width = torch.randint(size // 4, size // 2, (2,), generator=generator).tolist()
        masks[i, :, top : top + height, left : left + width] = 1.0
    images = images + masks * torch.tensor([1.0, 0.5, -0.5]).view(1, 3, 1, 1)
    return images, masks


def test_paper_head_has_the_paper_parameter_count() -> None:
    head = Mask2FormerHead([1024] * 4)
    trainable = sum(p.numel() for p in head.parameters() if p.requires_grad)
    assert trainable == 3_198_243
    assert abs(trainable - 3_198_000) / 3_198_000 < 0.005


def test_paper_config_uses_the_paper_head() -> None:
    config = Path(__file__).parents[1] / "configs" / "model" / "weft_l_paper.yaml"
    head_config = yaml.safe_load(config.read_text())["init_args"]["head"]
    assert head_config["class_path"] == "weft_lightning.models.Mask2FormerHead"
    head = Mask2FormerHead([1024] * 4, **head_config.get("init_args", {}))
    assert sum(p.numel() for p in head.parameters() if p.requires_grad) == 3_198_243


def test_outputs_have_one_prediction_per_layer() -> None:
    head = Mask2FormerHead([16] * 4, **TINY)
    out = head(pyramid())
    assert out["pred_logits"].shape == (2, 8, 3)
    assert out["pred_masks"].shape == (2, 8, 16, 16)
    assert len(out["aux_outputs"]) == TINY["dec_layers"]
    probs = head.probability(head.scores(out, (70, 50)))
    assert probs.shape == (2, 1, 70, 50)
    assert probs.min() >= 0 and probs.max() <= 1


def test_targets_drop_empty_segments() -> None:
    head = Mask2FormerHead([16] * 4, **TINY)
    masks = torch.zeros(3, 1, 8, 8)
    masks[0, :, 2:4, 2:4] = 1.0
    masks[2] = 1.0
    targets = head.targets(masks)
    assert targets[0]["labels"].tolist() == [0, 1]
    assert torch.equal(targets[0]["masks"][1], masks[0, 0])
    assert torch.equal(targets[0]["masks"][0], 1 - masks[0, 0])
    assert targets[1]["labels"].tolist() == [0]
    assert targets[2]["labels"].tolist() == [1]
    foreground_only = Mask2FormerHead([16] * 4, **{**TINY, "num_classes": 1})
    assert foreground_only.targets(masks)[1]["labels"].numel() == 0


def test_every_head_parameter_receives_a_gradient() -> None:
    torch.manual_seed(0)
    head = Mask2FormerHead([16] * 4, **TINY)
    optimizer = torch.optim.AdamW(head.parameters(), lr=1e-3)
    features = pyramid()
    masks = torch.zeros(2, 1, 64, 64)
    masks[0, :, 10:40, 20:50] = 1.0
    for _ in range(2):  # at init the deformable queries have zero weights: step once first
        optimizer.zero_grad()
        losses = head.loss(head(features), masks)
        losses["loss"].backward()
        assert all(p.grad is not None for p in head.parameters())
        optimizer.step()
    assert set(losses) >= {"loss", "loss_ce", "loss_mask", "loss_dice", "loss_deep"}
    missing = [n for n, p in head.named_parameters() if not p.grad.any()]
    assert not missing


def test_all_background_ground_truth_trains_without_nan() -> None:
    torch.manual_seed(0)
    backbone = ConvPyramid()
    head = Mask2FormerHead(backbone.out_channels, **TINY)
    params = [*backbone.parameters(), *head.parameters()]
    optimizer = torch.optim.AdamW(params, lr=1e-3)
    images, masks = torch.randn(2, 3, 64, 64), torch.zeros(2, 1, 64, 64)
    for _ in range(5):
        loss = head.loss(head(backbone(images)), masks)["loss"]
        assert torch.isfinite(loss)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in params if p.grad is not None)
        optimizer.step()
    probs = head.probability(head.scores(head(backbone(images)), (64, 64)))
    assert torch.isfinite(probs).all()


def test_loss_is_float32_under_bf16_autocast() -> None:
    head = Mask2FormerHead([16] * 4, **TINY)
    masks = torch.zeros(2, 1, 64, 64)
    masks[:, :, 8:24, 8:40] = 1.0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head(pyramid())
        losses = head.loss(out, masks)
    assert all(v.dtype == torch.float32 for v in losses.values())
    assert torch.isfinite(losses["loss"])


def test_overfitting_one_batch_separates_the_object() -> None:
    torch.manual_seed(0)
    images, masks = blob_batch()
    backbone = ConvPyramid()
    head = Mask2FormerHead(backbone.out_channels, **TINY)
    optimizer = torch.optim.AdamW([*backbone.parameters(), *head.parameters()], lr=2e-3)
    losses = []
    for _ in range(50):
        loss = head.loss(head(backbone(images)), masks)["loss"]
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    with torch.no_grad():
        probs = head.probability(head.scores(head(backbone(images)), (64, 64)))
    pred = probs > 0.5
    truth = masks > 0.5
    iou = (pred & truth).sum() / (pred | truth).sum()
    assert iou > 0.7


def test_unblock_empty_rows_only_touches_fully_masked_rows() -> None:
    mask = torch.tensor([[[True, True, True], [True, False, True]]])
    fixed = _unblock_empty_rows(mask)
    assert fixed[0, 0].tolist() == [False, False, False]
    assert fixed[0, 1].tolist() == [True, False, True]


def test_masked_attention_runs_the_fused_kernel_with_the_same_output() -> None:
    torch.manual_seed(0)
    layer = AttentionLayer(16, heads=4).train()
    queries, memory = torch.randn(2, 10, 16, requires_grad=True), torch.randn(2, 300, 16)
    blocked = _unblock_empty_rows(torch.rand(8, 10, 300) < 0.5)
    with OpCounter() as ops:
        out = layer(queries, memory, torch.zeros_like(queries), torch.zeros_like(memory), blocked)
    assert ops.counts["aten._scaled_dot_product_flash_attention_for_cpu"] == 1
    assert ops.counts["aten._softmax"] == 0  # no explicit attention probabilities
    # the same output as the path that computes the probabilities (need_weights=True)
    reference = layer.norm(queries + layer.attn(queries, memory, memory, attn_mask=blocked)[0])
    torch.testing.assert_close(out, reference)


def test_importance_points_prefer_uncertain_regions() -> None:
    logits = torch.full((1, 1, 32, 32), 10.0)
    logits[..., :, 16:] = 0.0  # uncertain right half
    coords = importance_points(logits, 400, oversample_ratio=3.0, importance_sample_ratio=0.75)
    assert coords.shape == (1, 400, 2)
    assert (coords[0, :300, 0] > 0.49).all()
    assert coords.min() >= 0 and coords.max() <= 1


def test_position_encoding_is_distinct_per_position() -> None:
    encoding = SinePositionEncoding(16)(torch.zeros(2, 5, 6, 7))
    assert encoding.shape == (2, 32, 6, 7)
    flat = encoding[0].flatten(1).T
    assert torch.cdist(flat, flat).add(torch.eye(42) * 1e3).min() > 1e-3


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"in_channels": [16] * 3}, "4 pyramid levels"),
        ({"num_classes": 3}, "num_classes=3"),
        ({"hidden_dim": 30}, "hidden_dim=30"),
        ({"norm_groups": 5}, "norm_groups=5"),
    ],
)
def test_bad_options_raise_clear_errors(kwargs: dict, message: str) -> None:
    options = {**TINY, **kwargs}
    in_channels = options.pop("in_channels", [16] * 4)
    with pytest.raises(ValueError, match=message):
        Mask2FormerHead(in_channels, **options)


def test_scores_sum_class_probability_times_mask() -> None:
    head = Mask2FormerHead([16] * 4, **TINY)
    logits = torch.tensor([[[0.0, 2.0, -1.0], [1.0, -1.0, 0.5]]])
    masks = torch.tensor([[[[3.0, -3.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    class_probs = logits.softmax(-1)[0]
    scores = head.scores({"pred_logits": logits, "pred_masks": masks}, (1, 2))
    for label in (0, 1):
        expected = sum(class_probs[q, label] * masks[0, q].sigmoid() for q in range(2))
        assert torch.allclose(scores[0, label], expected)
    probs = head.probability(scores)
    assert torch.allclose(probs[0, 0], torch.sigmoid(scores[0, 1] - scores[0, 0]))


def padded_targets(size: int = 64) -> torch.Tensor:
    """Masks whose bottom rows and right columns are padding (ignored)."""
    masks = torch.zeros(2, 1, size, size)
    masks[0, :, 8:30, 10:36] = 1
    masks[1, :, 20:40, 4:20] = 1
    masks[:, :, 44:, :] = IGNORE_INDEX
    masks[1, :, :, 40:] = IGNORE_INDEX
    return masks


def test_ignored_pixels_change_no_loss_no_matching_and_no_gradient() -> None:
    head = Mask2FormerHead([16] * 4, **TINY)
    masks = padded_targets()
    targets = head.targets(masks)
    assert all(t["ignored"].sum() > 0 for t in targets)
    assert all(((t["masks"].sum(0) > 0) == (t["ignored"] == 0)).all() for t in targets)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, TINY["num_queries"], 3, generator=generator)
    pred = torch.randn(2, TINY["num_queries"], 16, 16, generator=generator, requires_grad=True)
    outputs = {"pred_logits": logits, "pred_masks": pred}
    torch.manual_seed(3)
    losses = head.loss(outputs, masks)
    losses["loss"].backward()
    # 1/4-resolution cells whose bilinear footprint lies in the padding get no gradient
    assert pred.grad[:, :, 12:, :].abs().max() == 0
    assert pred.grad[1, :, :, 11:].abs().max() == 0
    assert pred.grad[:, :, :8, :8].abs().max() > 0
    changed = pred.detach().clone()
    changed[:, :, 12:, :] = 10.0 * torch.randn_like(changed[:, :, 12:, :])
    changed[1, :, :, 11:] = -7.0
    torch.manual_seed(3)
    again = head.loss({"pred_logits": logits, "pred_masks": changed}, masks)
    for key, value in losses.items():
        torch.testing.assert_close(again[key], value.detach())


def test_sampled_points_stay_in_the_valid_region() -> None:
    ignored = torch.zeros(3, 1, 40, 60)
    ignored[:, :, 30:, :] = 1
    ignored[2, :, :, 20:] = 1
    points = importance_points(torch.randn(3, 1, 10, 15), 500, ignored=ignored)
    assert (points[..., 1] <= 30 / 40).all()
    assert (points[2, :, 0] <= 20 / 60).all() and (points[0, :, 0] > 0.5).any()


@pytest.mark.parametrize("head_kind", ["mask2former", "fpn"])
def test_checkpointed_head_gives_the_same_loss_and_gradients(head_kind: str) -> None:
    """Segmentor(checkpoint_head=True): M2F checkpoints its encoder layers, other heads their
    whole forward; loss and gradients stay those of the plain head."""
    images, masks = blob_batch(batch=2)
    head = partial(Mask2FormerHead, **TINY) if head_kind == "mask2former" else FPNHead
    results = []
    for checkpointed in (False, True):
        torch.manual_seed(0)
        segmentor = Segmentor(ConvPyramid(), head, checkpoint_head=checkpointed).train()
        torch.manual_seed(1)  # same sampled loss points
        loss = segmentor.loss(images, masks)["loss"]
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in segmentor.parameters()]))
    (plain_loss, plain_grads), (cp_loss, cp_grads) = results
    torch.testing.assert_close(cp_loss, plain_loss)
    for cp_grad, plain_grad in zip(cp_grads, plain_grads, strict=True):
        torch.testing.assert_close(cp_grad, plain_grad, rtol=1e-4, atol=1e-6)
