"""FPN head: output shapes, probability range and the structure loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from weft_lightning.constants import IGNORE_INDEX
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
    probs = head.probability(head.scores(logits, (70, 50)))
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


def padded_mask() -> torch.Tensor:
    """A 64 x 64 training mask whose bottom rows and right columns are padding (ignored)."""
    mask = torch.zeros(2, 1, 64, 64)
    mask[:, :, 10:30, 12:40] = 1
    mask[:, :, 48:, :] = IGNORE_INDEX
    mask[:, :, :, 44:] = IGNORE_INDEX
    return mask


def test_ignored_pixels_change_no_loss_and_get_no_gradient() -> None:
    head = FPNHead([8, 8, 8, 8], channels=16)
    logits = torch.randn(2, 1, 16, 16, requires_grad=True)
    mask = padded_mask()
    losses = head.loss(logits, mask)
    losses["loss"].backward()
    # logit cells whose whole upsampling footprint lies in the padding: no gradient
    assert logits.grad[..., 13:, :].abs().max() == 0 and logits.grad[..., :, 12:].abs().max() == 0
    assert logits.grad[..., :10, :10].abs().max() > 0
    changed = logits.detach().clone()
    changed[..., 13:, :] += 5.0
    changed[..., :, 12:] -= 5.0
    again = head.loss(changed, mask)
    for key, value in losses.items():
        torch.testing.assert_close(again[key], value.detach(), rtol=0, atol=0)
    # without padding the loss is the plain structure loss of the whole map
    full = (mask == 1).float()
    torch.testing.assert_close(
        head.loss(logits.detach(), full)["loss"],
        structure_loss(F.interpolate(logits.detach(), size=(64, 64), mode="bilinear"), full)[
            "loss"
        ],
    )
