"""WaveletExpertExtractor: the trainable convolutional branch that gives WEFT its spatial prior.

A small stem brings the image to 1/4 resolution; one expert mixture and one down-sampling block,
both shared by all scales, refine and reduce it to 1/8, 1/16 and 1/32; one shared 1x1 conv lifts
every scale to the ViT width. The three coarse scales become tokens with a level embedding.
The branch runs in the channels-last layout, in which its depthwise convolutions (and their
gradients) are several times faster, wherever that costs no precision: on GPUs, and in
evaluation on the CPU. A training-mode batch norm on channels-last input is about 20-100x less
accurate on the CPU than on the usual layout, so CPU training keeps the usual layout. The
outputs come out in the usual layout either way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from weft_lightning.models.experts import Dispatch, ExpertMixture
from weft_lightning.models.grad_checkpointing import checkpoint_once
from weft_lightning.models.layers import conv_bn_relu


class WaveletExpertExtractor(nn.Module):
    """Image -> ``(c1 (B, D, H/4, W/4), tokens (B, N8 + N16 + N32, D), shapes of c2..c4)``.

    Args:
        embed_dim: ViT width D.
        channels: width C of the convolutional branch.
        kernel_sizes: one wavelet expert per kernel size.
        top_k: experts per sample.
        dispatch: ``dense``, ``sparse`` or ``fused`` expert dispatch (see ExpertMixture).
        balance_loss_weight: load-balancing loss weight (0 = off, the paper's setting).
        wavelet: pywt wavelet of the experts.
        use_experts: False replaces the expert mixture by one plain 3x3 conv block (ablation).
    """

    def __init__(
        self,
        embed_dim: int = 1024,
        channels: int = 64,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7, 9, 11, 13),
        top_k: int = 4,
        dispatch: Dispatch = "dense",
        balance_loss_weight: float = 0.0,
        wavelet: str = "db1",
        use_experts: bool = True,
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            conv_bn_relu(3, channels, 3, stride=2), nn.MaxPool2d(3, stride=2, padding=1)
        )
        if use_experts:
            self.mixture: nn.Module = ExpertMixture(
                channels,
                kernel_sizes,
                top_k,
                dispatch,
                balance_loss_weight,
                wavelet,
            )
        else:
            self.mixture = conv_bn_relu(channels, channels, 3)
        self.down = conv_bn_relu(channels, channels, 3, stride=2)
        self.lift = nn.Conv2d(channels, embed_dim, 1)
        self.level_embed = nn.Parameter(torch.zeros(3, embed_dim))
        self.grad_checkpointing = False
        self.reset_special_parameters()

    def reset_special_parameters(self) -> None:
        nn.init.normal_(self.level_embed)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute the whole branch in the backward pass instead of keeping its activations."""
        self.grad_checkpointing = enable

    def forward(
        self, images: torch.Tensor, lift_finest: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        """``lift_finest=False`` returns the stride-4 map at width C, for the caller to apply
        :attr:`lift` where it uses it (so that a checkpoint there need not keep the wide map)."""
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint_once(self._branch, images, lift_finest, module=self)
        return self._branch(images, lift_finest)

    def _layout(self, images: torch.Tensor) -> torch.memory_format:
        """Channels-last where it costs no precision (see the module docstring)."""
        precise = images.device.type != "cpu" or not self.training
        return torch.channels_last if precise else torch.contiguous_format

    def _branch(
        self, images: torch.Tensor, lift_finest: bool
    ) -> tuple[torch.Tensor, torch.Tensor, list[tuple[int, int]]]:
        c = self.stem(images.contiguous(memory_format=self._layout(images)))
        scales = [c + self.mixture(c)]
        for _ in range(3):
            c = self.down(scales[-1])
            scales.append(c + self.mixture(c))
        lifted = [self.lift(c) for c in scales[1:]]
        shapes = [(int(m.shape[-2]), int(m.shape[-1])) for m in lifted]
        tokens = [
            m.flatten(2).transpose(1, 2) + self.level_embed[i].to(m.dtype)
            for i, m in enumerate(lifted)
        ]
        finest = scales[0].contiguous()  # the usual layout again, before any widening
        return self.lift(finest) if lift_finest else finest, torch.cat(tokens, dim=1), shapes
