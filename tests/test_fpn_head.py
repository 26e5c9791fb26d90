"""FPN head: output shapes, probability range and the structure loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weft_lightning.models.heads.fpn import FPNHead, box_filter, structure_loss


def test_box_filter_equals_average_pooling() -> None:
    x = (torch.rand(2, 1, 45, 37) > 0.7).float()
    expected = F.avg_pool2d(x, 31, stride=1, padding=15)
    torch.testing.assert_close(box_filter(x, 31), expected, atol=1e-6, rtol=0)


def test_head_shapes_and_probabilities() -> None:
    head = FPNHead([8, 8, 8, 8], channels=16)
    features = [torch.randn(2, 8, 64 // s, 64 // s) for s in (4, 8, 16, 32)]
    logits = head(features)
    assert logits.shape == (2, 1, 16, 16)
    probs = head.predict(logits, (70, 50))
    assert probs.shape == (2, 1, 70, 50) and probs.min() >= 0 and probs.max() <= 1


def test_structure_loss_prefers_the_right_mask() -> None:
    mask = torch.zeros(1, 1, 32, 32)
    mask[..., 8:24, 8:24] = 1
    good = structure_loss((mask * 2 - 1) * 8, mask)["loss"]
    bad = structure_loss((1 - mask * 2) * 8, mask)["loss"]
    assert good < 0.1 < bad
    background = torch.zeros(1, 1, 32, 32)
    empty_right = structure_loss(torch.full((1, 1, 32, 32), -8.0), background)["loss"]
    empty_wrong = structure_loss(torch.full((1, 1, 32, 32), 8.0), background)["loss"]
    assert torch.isfinite(empty_right) and empty_right < 0.3 < empty_wrong
