"""Test-time protocol: how an image at its original size becomes a foreground probability map.

An :class:`InferenceProtocol` lists *views* of the image (resized copies at one or more ratios,
each also mirrored when ``flip`` is on), runs the network on each view whole or in sliding
windows, and combines the results in the order of mmseg's ``slide_inference`` and ``aug_test``,
which the WEFT reference uses to produce the paper's numbers:

1. per view, the head's class *scores* are averaged where windows overlap;
2. the view's scores are resized (bilinear) to the original size and turned into a foreground
   probability by the head (Mask2Former: softmax over the background and foreground scores,
   i.e. ``sigmoid(s_fg - s_bg)``; a head with one probability keeps it);
3. mirrored views are flipped back and the probabilities are averaged over all views.

The saliency map that is written and scored is that average, so its 0.5 threshold is the
reference's argmax decision. Images reach the protocol normalised, at their original size;
the resize happens here (the reference resizes the 8-bit image before normalising: the two
differ by the rounding of the resized image to 8 bits, at most half a grey level).

:class:`EvaluationProtocol` pairs the test protocol with the (usually single-scale) one used
for validation during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch

from weft_lightning.constants import SIZE_MULTIPLE
from weft_lightning.data.augment import keep_ratio_size
from weft_lightning.models.layers import resize_bilinear

__all__ = [
    "EvaluationProtocol",
    "InferenceProtocol",
    "View",
    "predict_probability",
    "slide_windows",
]

Resize = Literal["short_side", "fixed"]
Mode = Literal["whole", "slide"]
Window = tuple[slice, slice]
ScoreFn = Callable[[torch.Tensor], torch.Tensor]
ProbabilityFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class View:
    """One resized (and possibly mirrored) copy of an image: its ratio, flip and (H, W)."""

    ratio: float
    flip: bool
    size: tuple[int, int]


@dataclass(frozen=True)
class InferenceProtocol:
    """Views, windows and batching of test-time inference.

    Args:
        resize: ``short_side`` keeps the aspect ratio and sets the short side to
            ``int(size * ratio)`` (in ``slide`` mode at least ``window``, the reference's
            ``SETR_Resize``; the long side follows mmcv's rescale rule); ``fixed`` resizes
            to a ``size * ratio`` square (the fixed-size protocols of COD, SOD and polyps).
        size: base side of the views (pixels).
        ratios: one view per ratio.
        flip: also run each view mirrored left-right.
        mode: ``slide`` runs ``window`` x ``window`` crops every ``stride`` pixels (the last
            one per axis ends at the border) and averages scores where they overlap;
            ``whole`` runs each view at once, its sides rounded up to multiples of 32.
        window: sliding-window side (a multiple of 32).
        stride: sliding-window step, at most ``window``.
        batch: crops (windows or views) run through the network together; the result does
            not depend on it.
    """

    resize: Resize = "short_side"
    size: int = 512
    ratios: tuple[float, ...] = (1.0,)
    flip: bool = False
    mode: Mode = "slide"
    window: int = 512
    stride: int = 426
    batch: int = 4

    def __post_init__(self) -> None:
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        _check_protocol(self)

    def view_size(self, height: int, width: int, ratio: float) -> tuple[int, int]:
        """(H, W) of the view at ``ratio`` of an ``height`` x ``width`` image."""
        side = int(self.size * ratio)
        size: tuple[int, ...]
        if self.resize == "fixed":
            size = (side, side)
        else:
            if self.mode == "slide":
                side = max(side, self.window)
            long_side = side * max(height, width) / min(height, width)
            size = keep_ratio_size(height, width, (long_side, side))
        if self.mode == "whole":
            size = tuple(_round_up(s) for s in size)
        return int(size[0]), int(size[1])

    def views(self, height: int, width: int) -> list[View]:
        """Every view of an image, ratio by ratio, the unflipped one first."""
        flips = (False, True) if self.flip else (False,)
        return [
            View(ratio, flipped, self.view_size(height, width, ratio))
            for ratio in self.ratios
            for flipped in flips
        ]

    def windows(self, size: tuple[int, int]) -> list[Window]:
        """The crops of one view: sliding windows, or the whole view."""
        if self.mode == "whole":
            return [(slice(0, size[0]), slice(0, size[1]))]
        return slide_windows(size, self.window, self.stride)


def _single_scale() -> InferenceProtocol:
    return InferenceProtocol()


def _paper_test() -> InferenceProtocol:
    return InferenceProtocol(ratios=(0.5, 1.0, 1.5), flip=True)


@dataclass(frozen=True)
class EvaluationProtocol:
    """The test-time protocol of ``weft test`` / ``weft predict`` and that of validation.

    Defaults are the WEFT paper's ORSI protocol: views with the short side at
    ``max(512 * r, 512)`` for r in (0.5, 1.0, 1.5), each also mirrored, 512 windows with stride
    426; validation during training uses the single view r = 1.0 with the same windows.
    """

    test: InferenceProtocol = field(default_factory=_paper_test)
    validation: InferenceProtocol = field(default_factory=_single_scale)


def slide_windows(size: tuple[int, int], window: int, stride: int) -> list[Window]:
    """mmseg's sliding windows over an (H, W) view: ``max(L - window + stride - 1, 0) //
    stride + 1`` per axis, every ``stride`` pixels, the last one shifted back to end at the
    border (so every window lies inside the view), rows outermost."""
    axes = []
    for length in size:
        count = max(length - window + stride - 1, 0) // stride + 1
        ends = [min(i * stride + window, length) for i in range(count)]
        axes.append([slice(max(end - window, 0), end) for end in ends])
    return [(rows, cols) for rows in axes[0] for cols in axes[1]]


@torch.no_grad()
def predict_probability(
    image: torch.Tensor,
    scores: ScoreFn,
    probability: ProbabilityFn,
    protocol: InferenceProtocol,
) -> torch.Tensor:
    """Foreground probability (H, W) in [0, 1] of one normalised image (3, H, W).

    ``scores`` maps a batch of crops (N, 3, h, w) to class scores (N, K, h, w) at the crop
    size; ``probability`` maps scores (1, K, H, W) to a probability (1, 1, H, W).
    """
    height, width = int(image.shape[-2]), int(image.shape[-1])
    views = protocol.views(height, width)
    totals, counts = _view_scores(image, views, scores, protocol)
    result = image.new_zeros((height, width), dtype=torch.float32)
    for view, total, count in zip(views, totals, counts, strict=True):
        view_scores = resize_bilinear(total / count, (height, width))
        prob = probability(view_scores)[0, 0].float()
        result += prob.flip(-1) if view.flip else prob
    return (result / len(views)).clamp_(0, 1)


def _view_scores(
    image: torch.Tensor, views: Sequence[View], scores: ScoreFn, protocol: InferenceProtocol
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Per view: the sum of window scores and the window count per pixel."""
    resized = {view.size: resize_bilinear(image[None].float(), view.size) for view in views}
    inputs = [resized[v.size].flip(-1) if v.flip else resized[v.size] for v in views]
    totals: list[torch.Tensor | None] = [None] * len(views)
    counts = [image.new_zeros((1, 1, *view.size), dtype=torch.float32) for view in views]
    for group in _crop_groups(views, protocol):
        crops = torch.cat([inputs[v][..., rows, cols] for v, (rows, cols) in group])
        out = scores(crops).float()
        for (v, (rows, cols)), crop_scores in zip(group, out, strict=True):
            if totals[v] is None:
                totals[v] = out.new_zeros((1, out.shape[1], *views[v].size))
            totals[v][..., rows, cols] += crop_scores  # type: ignore[index]
            counts[v][..., rows, cols] += 1
    return [t for t in totals if t is not None], counts


def _crop_groups(
    views: Sequence[View], protocol: InferenceProtocol
) -> Iterator[list[tuple[int, Window]]]:
    """Crops of every view, grouped by crop size, in batches of ``protocol.batch``."""
    by_size: dict[tuple[int, int], list[tuple[int, Window]]] = {}
    for index, view in enumerate(views):
        for rows, cols in protocol.windows(view.size):
            shape = (rows.stop - rows.start, cols.stop - cols.start)
            by_size.setdefault(shape, []).append((index, (rows, cols)))
    for crops in by_size.values():
        for start in range(0, len(crops), protocol.batch):
            yield crops[start : start + protocol.batch]


def _round_up(side: int) -> int:
    return max(SIZE_MULTIPLE, math.ceil(side / SIZE_MULTIPLE) * SIZE_MULTIPLE)


def _check_protocol(p: InferenceProtocol) -> None:
    """One clear error per impossible setting, naming the key."""
    if p.size <= 0 or not p.ratios or any(r <= 0 for r in p.ratios):
        raise ValueError(
            f"protocol: size={p.size} and ratios={list(p.ratios)} must be positive (and ratios "
            "non-empty)."
        )
    if p.batch < 1:
        raise ValueError(f"protocol: batch={p.batch} must be at least 1.")
    if p.mode == "whole":
        return
    if p.window <= 0 or p.window % SIZE_MULTIPLE:
        raise ValueError(f"protocol: window={p.window} must be a multiple of {SIZE_MULTIPLE}.")
    if not 0 < p.stride <= p.window:
        raise ValueError(
            f"protocol: stride={p.stride} must lie in 1..window ({p.window}): a larger stride "
            "leaves pixels no window covers."
        )
    smallest = int(p.size * min(p.ratios))
    if p.resize == "fixed" and smallest < p.window:
        raise ValueError(
            f"protocol: resize=fixed gives {smallest}-pixel views at ratio {min(p.ratios)}, "
            f"smaller than window={p.window}; use mode=whole or a larger size."
        )
