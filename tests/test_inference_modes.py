"""Segmentor inference modes: whole, sliding window and multi-scale + flip."""

from __future__ import annotations

import pytest
import torch

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.heads.mask2former import Mask2FormerHead
from weft_lightning.models.segmentor import Segmentor, slide_windows

HEAD = dict(
    hidden_dim=32,
    num_queries=6,
    enc_layers=1,
    enc_ffn=64,
    dec_layers=2,
    dec_ffn=64,
    nheads=4,
    norm_groups=8,
    num_points=128,
)


def make_segmentor(**options) -> Segmentor:
    torch.manual_seed(0)
    backbone = FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4})
    segmentor = Segmentor(backbone, lambda channels: Mask2FormerHead(channels, **HEAD), **options)
    with torch.no_grad():  # keep the untrained maps away from the clamp at 1
        segmentor.head.decoder.class_embed.bias[segmentor.head.foreground_class] -= 2.0
    return segmentor.eval()


@pytest.fixture(scope="module")
def segmentor() -> Segmentor:
    return make_segmentor()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def with_mode(segmentor: Segmentor, **options) -> Segmentor:
    """The same network under other inference options (validated like the constructor)."""
    other = make_segmentor(**options)
    other.load_state_dict(segmentor.state_dict())
    return other.eval()


def test_slide_equals_whole_when_the_crop_covers_the_image(segmentor, images) -> None:
    whole = segmentor.predict_proba(images)
    assert whole.std() > 0.01 and whole.max() < 1  # a map the comparisons can tell apart
    for crop in (96, 128):
        slide = with_mode(segmentor, inference="slide", crop_size=crop, stride=32)
        assert torch.allclose(slide.predict_proba(images), whole, atol=1e-6)


def test_slide_averages_overlapping_windows(segmentor, images) -> None:
    slide = with_mode(segmentor, inference="slide", crop_size=64, stride=32)
    left = segmentor.predict_proba(images[..., 0:64])
    right = segmentor.predict_proba(images[..., 32:96])
    expected = torch.cat(
        [left[..., :32], (left[..., 32:] + right[..., :32]) / 2, right[..., 32:]], dim=-1
    )
    assert torch.allclose(slide.predict_proba(images), expected, atol=1e-6)


def test_slide_windows_cover_the_image_and_stay_inside() -> None:
    windows = slide_windows((100, 512), (64, 512), (48, 426))
    rows = sorted({(w[0].start, w[0].stop) for w in windows})
    assert rows == [(0, 64), (36, 100)]
    assert {(w[1].start, w[1].stop) for w in windows} == {(0, 512)}
    columns = sorted(
        {(w[1].start, w[1].stop) for w in slide_windows((512, 1000), (512,) * 2, (426,) * 2)}
    )
    assert columns == [(0, 512), (426, 938), (488, 1000)]


def test_multiscale_with_one_scale_and_no_flip_equals_whole(segmentor, images) -> None:
    single = with_mode(segmentor, inference="multiscale_flip", scales=[1.0], flip=False)
    assert torch.allclose(single.predict_proba(images), segmentor.predict_proba(images), atol=1e-6)


def test_flip_averages_the_mirrored_prediction(segmentor, images) -> None:
    flipped = with_mode(segmentor, inference="multiscale_flip", scales=[1.0], flip=True)
    mirrored = segmentor.predict_proba(images.flip(-1)).flip(-1)
    expected = (segmentor.predict_proba(images) + mirrored) / 2
    assert torch.allclose(flipped.predict_proba(images), expected, atol=1e-6)


@pytest.mark.parametrize(
    "options",
    [
        {"inference": "slide", "crop_size": 64, "stride": 48},
        {"inference": "multiscale_flip", "scales": [0.5, 1.0, 1.5]},
        {
            "inference": "multiscale_flip",
            "scales": [0.75, 1.25],
            "multiscale_base": "slide",
            "crop_size": 64,
            "stride": 32,
        },
    ],
)
def test_modes_give_probabilities_at_the_original_size(segmentor, images, options) -> None:
    from weft_lightning.module import resize_to_originals

    probs = with_mode(segmentor, **options).predict_proba(images)
    assert probs.shape == (2, 1, 64, 96)
    assert probs.min() >= 0 and probs.max() <= 1
    originals = resize_to_originals(probs, [(120, 170), (50, 61)])
    assert [tuple(p.shape) for p in originals] == [(120, 170), (50, 61)]
    assert all(p.min() >= 0 and p.max() <= 1 for p in originals)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"inference": "tiles"}, "Unknown inference mode"),
        ({"crop_size": 500}, "crop_size=500"),
        ({"crop_size": 64, "stride": 96}, "stride=96"),
        ({"scales": []}, "scales="),
        ({"multiscale_base": "tiles"}, "multiscale_base"),
    ],
)
def test_bad_inference_options_raise_clear_errors(options, message) -> None:
    with pytest.raises(ValueError, match=message):
        make_segmentor(**options)
