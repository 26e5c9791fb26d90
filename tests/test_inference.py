"""Test-time protocol: views, windows, the order in which scores become a map, batching."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from weft_lightning.inference import (
    EvaluationProtocol,
    InferenceProtocol,
    predict_probability,
    slide_windows,
)
from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.heads.fpn import FPNHead
from weft_lightning.models.heads.mask2former import Mask2FormerHead
from weft_lightning.models.segmentor import Segmentor

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


@pytest.fixture(scope="module")
def segmentor() -> Segmentor:
    torch.manual_seed(0)
    backbone = FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4})
    return Segmentor(backbone, lambda channels: Mask2FormerHead(channels, **HEAD)).eval()


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(1))


class CropRecorder:
    """A scores function that records every crop batch; scores are a fixed function of the
    pixels (two channels that do not sum to one)."""

    def __init__(self) -> None:
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(crops.shape))
        fg = crops[:, :1].sigmoid() * 0.9
        bg = crops[:, 1:2].sigmoid() * 0.6
        return torch.cat([bg, fg], dim=1)


def two_class_probability(scores: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(scores[:, 1:2] - scores[:, 0:1])


def resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def test_paper_protocol_views_and_windows_of_an_800x600_image() -> None:
    """The reference's ORSI test: short side max(512 r, 512), flipped and not; 2 windows of 512
    at 683x512 and 6 at 1024x768; the map at the original size."""
    protocol = EvaluationProtocol().test
    views = protocol.views(600, 800)
    assert [(v.ratio, v.flip, v.size) for v in views] == [
        (0.5, False, (512, 683)),
        (0.5, True, (512, 683)),
        (1.0, False, (512, 683)),
        (1.0, True, (512, 683)),
        (1.5, False, (768, 1024)),
        (1.5, True, (768, 1024)),
    ]
    assert [len(protocol.windows(v.size)) for v in views] == [2, 2, 2, 2, 6, 6]
    assert protocol.windows((512, 683)) == [
        (slice(0, 512), slice(0, 512)),
        (slice(0, 512), slice(171, 683)),
    ]
    recorder = CropRecorder()
    image = torch.randn(3, 600, 800)
    prob = predict_probability(image, recorder, two_class_probability, protocol)
    assert prob.shape == (600, 800)
    assert all(shape[-2:] == (512, 512) for shape in recorder.shapes)
    assert sum(shape[0] for shape in recorder.shapes) == 20
    assert max(shape[0] for shape in recorder.shapes) <= protocol.batch


def test_validation_protocol_is_the_single_unflipped_view() -> None:
    protocol = EvaluationProtocol().validation
    assert [(v.ratio, v.flip, v.size) for v in protocol.views(600, 800)] == [
        (1.0, False, (512, 683))
    ]
    portrait = protocol.views(1241, 2146 // 2)[0].size
    assert min(portrait) == 512 and portrait[0] > portrait[1]


def test_sliding_windows_follow_mmseg() -> None:
    rows = slide_windows((100, 512), 64, 48)
    assert sorted({(w[0].start, w[0].stop) for w in rows}) == [(0, 64), (36, 100)]
    columns = sorted({(w[1].start, w[1].stop) for w in slide_windows((512, 1000), 512, 426)})
    assert columns == [(0, 512), (426, 938), (488, 1000)]
    assert slide_windows((512, 512), 512, 426) == [(slice(0, 512), slice(0, 512))]


def direct_probability(
    image: torch.Tensor, protocol: InferenceProtocol, scores=CropRecorder()
) -> torch.Tensor:
    """The reference's order written out: per view, window scores averaged where they overlap,
    resized to the original size, softmax over the two classes, flipped back; views averaged."""
    height, width = image.shape[-2:]
    views = []
    for view in protocol.views(height, width):
        x = resize(image[None], view.size)
        x = x.flip(-1) if view.flip else x
        total = torch.zeros(1, 2, *view.size)
        count = torch.zeros(1, 1, *view.size)
        for rows, cols in protocol.windows(view.size):
            total[..., rows, cols] += scores(x[..., rows, cols])
            count[..., rows, cols] += 1
        prob = two_class_probability(resize(total / count, (height, width)))
        views.append(prob.flip(-1) if view.flip else prob)
    return torch.stack(views).mean(0)[0, 0]


@pytest.mark.parametrize(
    "protocol",
    [
        InferenceProtocol(size=64, window=64, stride=40),
        InferenceProtocol(size=64, ratios=(0.5, 1.0, 1.5), flip=True, window=64, stride=48),
        InferenceProtocol(resize="fixed", size=96, ratios=(1.0, 0.75), flip=True, mode="whole"),
    ],
    ids=["single", "multi_flip", "fixed_whole"],
)
def test_scores_become_a_map_in_the_reference_order(protocol: InferenceProtocol) -> None:
    image = torch.randn(3, 70, 100, generator=torch.Generator().manual_seed(2))
    got = predict_probability(image, CropRecorder(), two_class_probability, protocol)
    torch.testing.assert_close(got, direct_probability(image, protocol), atol=1e-6, rtol=0)


def test_map_above_half_exactly_where_the_foreground_score_wins() -> None:
    """One view: p > 0.5 <=> s_fg > s_bg, although the two scores do not sum to one."""
    protocol = InferenceProtocol(resize="fixed", size=64, mode="whole")
    image = torch.randn(3, 64, 64, generator=torch.Generator().manual_seed(3))
    scores = CropRecorder()(image[None])
    assert not torch.allclose(scores.sum(1), torch.ones(1, 64, 64), atol=0.05)
    prob = predict_probability(image, CropRecorder(), two_class_probability, protocol)
    decided = scores[0, 1] > scores[0, 0]
    assert torch.equal(prob > 0.5, decided)
    assert 0.05 < decided.float().mean() < 0.95  # both decisions occur


def test_mask2former_probability_is_the_two_class_softmax() -> None:
    head = Mask2FormerHead([32] * 4, **HEAD)
    scores = torch.rand(2, 2, 5, 7) * 1.7
    expected = scores.softmax(dim=1)[:, 1:2]
    torch.testing.assert_close(head.probability(scores), expected)
    one_class = Mask2FormerHead([32] * 4, **{**HEAD, "num_classes": 1})
    torch.testing.assert_close(one_class.probability(scores[:, :1]), scores[:, :1].clamp(0, 1))


def test_mask2former_scores_sum_class_probability_times_mask() -> None:
    head = Mask2FormerHead([32] * 4, **HEAD)
    logits = torch.randn(1, 6, 3)
    masks = torch.randn(1, 6, 4, 4)
    scores = head.scores({"pred_logits": logits, "pred_masks": masks}, (8, 8))
    up = resize(masks, (8, 8)).sigmoid()
    expected = torch.einsum("bqc,bqhw->bchw", logits.softmax(-1)[..., :2], up)
    torch.testing.assert_close(scores, expected)


def test_fpn_head_keeps_its_probability() -> None:
    head = FPNHead([16] * 4, channels=8)
    logits = torch.randn(2, 1, 4, 4)
    scores = head.scores(logits, (8, 8))
    torch.testing.assert_close(scores, resize(logits, (8, 8)).sigmoid())
    torch.testing.assert_close(head.probability(scores), scores)


def test_real_segmentor_map_at_the_original_size(segmentor, image) -> None:
    protocol = InferenceProtocol(size=64, ratios=(0.5, 1.0), flip=True, window=64, stride=32)
    prob = predict_probability(image, segmentor.scores, segmentor.probability, protocol)
    assert prob.shape == image.shape[-2:]
    assert float(prob.min()) >= 0 and float(prob.max()) <= 1 and prob.std() > 0


def test_window_batching_does_not_change_the_map(segmentor, image) -> None:
    one = InferenceProtocol(size=64, ratios=(1.0, 1.5), flip=True, window=64, stride=32, batch=1)
    many = InferenceProtocol(size=64, ratios=(1.0, 1.5), flip=True, window=64, stride=32, batch=9)
    a = predict_probability(image, segmentor.scores, segmentor.probability, one)
    b = predict_probability(image, segmentor.scores, segmentor.probability, many)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"window": 500}, "window=500"),
        ({"window": 64, "stride": 96}, "stride=96"),
        ({"ratios": ()}, "ratios="),
        ({"size": 0}, "size=0"),
        ({"batch": 0}, "batch=0"),
        ({"resize": "fixed", "size": 384, "window": 512}, "smaller than window"),
    ],
)
def test_bad_protocols_raise_clear_errors(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        InferenceProtocol(**options)


def test_eorssd_print_config_shows_the_whole_protocol_the_readme_states(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The paper's test protocol is one section of the resolved config, and the README's
    reproduction section states the same numbers."""
    import yaml

    from weft_lightning.cli import main

    repo = Path(__file__).resolve().parents[1]
    config = repo / "configs" / "orsi" / "eorssd.yaml"
    assert main(["fit", "--config", str(config), "--print_config"]) == 0
    protocol = yaml.safe_load(capsys.readouterr().out)["model"]["init_args"]["protocol"]
    assert protocol["test"] == {
        "resize": "short_side", "size": 512, "ratios": [0.5, 1.0, 1.5], "flip": True,
        "mode": "slide", "window": 512, "stride": 426, "batch": 4,
    }  # fmt: skip
    assert protocol["validation"] == {**protocol["test"], "ratios": [1.0], "flip": False}
    readme = (repo / "README.md").read_text()
    section = readme[readme.index("## Reproducing the paper") : readme.index("## GPU memory")]
    for statement in (
        "ratio r in (0.5, 1.0, 1.5)",
        "short side is max(512 r, 512)",
        "as is and mirrored",
        "512 x 512\nwindows every 426 pixels",
        "r = 1.0 view alone",
    ):
        assert statement in section, statement
