"""One-level 2-D discrete wavelet transform in torch, and the wavelet convolution WTConv2d.

The filter banks come from PyWavelets; the transforms themselves are fixed depthwise
(transposed) convolutions, or for two-tap banks (Haar, the default) the equivalent pixel
(un)shuffle with a 4x4 matrix, so that they run on any device, under autocast, and are
differentiable. WTConv2d (Finder et al., ECCV 2024) adds a depthwise convolution in the
wavelet domain to a plain depthwise convolution, which enlarges the receptive field cheaply.
"""

from __future__ import annotations

import pywt
import torch
import torch.nn.functional as F
from torch import nn


def wavelet_filters(wavelet: str = "db1") -> tuple[torch.Tensor, torch.Tensor]:
    """Analysis and synthesis filters (4, k, k) ordered LL, LH, HL, HH for a pywt wavelet name."""
    try:
        bank = pywt.Wavelet(wavelet)
    except ValueError as error:
        raise ValueError(
            f"Unknown wavelet {wavelet!r}; use a discrete wavelet from pywt.wavelist(kind="
            "'discrete'), e.g. 'db1' (Haar)."
        ) from error
    dec_lo = torch.tensor(bank.dec_lo[::-1], dtype=torch.float32)
    dec_hi = torch.tensor(bank.dec_hi[::-1], dtype=torch.float32)
    rec_lo = torch.tensor(bank.rec_lo, dtype=torch.float32)
    rec_hi = torch.tensor(bank.rec_hi, dtype=torch.float32)
    return _outer_bank(dec_lo, dec_hi), _outer_bank(rec_lo, rec_hi)


def _outer_bank(low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
    """Separable 2-D filters (rows x columns): LL, LH, HL, HH."""
    pairs = ((low, low), (high, low), (low, high), (high, high))
    return torch.stack([rows[:, None] * cols[None] for rows, cols in pairs])


def dwt2d(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """One-level DWT of every channel: (B, C, H, W) -> (B, C, 4, ceil(H/2), ceil(W/2)).

    ``bank`` holds the 4 analysis filters (4, k, k). Odd sides are zero-padded by one at the
    bottom/right. Two-tap banks (Haar) take an exact fast path: a pixel unshuffle and a 4x4
    matrix product, which is much faster on GPU than a grouped strided convolution.
    """
    _, channels, height, width = x.shape
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2))
    bank = bank.to(x.dtype)
    if bank.shape[-1] == 2:
        phases = F.pixel_unshuffle(x, 2).unflatten(1, (channels, 4))
        return torch.einsum("bcphw,fp->bcfhw", phases, bank.reshape(4, 4))
    filters = bank[:, None].repeat(channels, 1, 1, 1)
    out = F.conv2d(x, filters, stride=2, padding=bank.shape[-1] // 2 - 1, groups=channels)
    return out.unflatten(1, (channels, 4))


def idwt2d(
    bands: torch.Tensor, bank: torch.Tensor, size: tuple[int, int] | None = None
) -> torch.Tensor:
    """Inverse of :func:`dwt2d` with the synthesis ``bank``: (B, C, 4, h, w) -> (B, C, 2h, 2w).

    The result is cropped to ``size`` when given (undoing the odd-size padding).
    """
    channels = bands.shape[1]
    bank = bank.to(bands.dtype)
    if bank.shape[-1] == 2:
        phases = torch.einsum("bcfhw,fp->bcphw", bands, bank.reshape(4, 4))
        out = F.pixel_shuffle(phases.flatten(1, 2), 2)
    else:
        filters = bank[:, None].repeat(channels, 1, 1, 1)
        padding = bank.shape[-1] // 2 - 1
        out = F.conv_transpose2d(
            bands.flatten(1, 2), filters, stride=2, padding=padding, groups=channels
        )
    return out if size is None else out[..., : size[0], : size[1]]


class DWT2d(nn.Module):
    """Module form of :func:`dwt2d` with a fixed (non-persistent) pywt analysis bank."""

    bank: torch.Tensor

    def __init__(self, wavelet: str = "db1") -> None:
        super().__init__()
        self.register_buffer("bank", wavelet_filters(wavelet)[0], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dwt2d(x, self.bank)


class IDWT2d(nn.Module):
    """Module form of :func:`idwt2d` with a fixed (non-persistent) pywt synthesis bank."""

    bank: torch.Tensor

    def __init__(self, wavelet: str = "db1") -> None:
        super().__init__()
        self.register_buffer("bank", wavelet_filters(wavelet)[1], persistent=False)

    def forward(self, bands: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return idwt2d(bands, self.bank, size)


class ChannelScale(nn.Module):
    """Learnable per-channel multiplier (no bias)."""

    def __init__(self, channels: int, init: float) -> None:
        super().__init__()
        self.init = init
        self.weight = nn.Parameter(torch.full((1, channels, 1, 1), init))

    def reset_special_parameters(self) -> None:
        nn.init.constant_(self.weight, self.init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.weight


class WTConv2d(nn.Module):
    """Wavelet convolution: ``s_base * DWConv_k(x) + IDWT(s_wav * DWConv_k(DWT(x)))``.

    Args:
        channels: input and output channels (the convolution is depthwise).
        kernel_size: size of both depthwise kernels ('same' padding).
        wavelet: pywt wavelet name for the one-level transform.
        wavelet_scale: initial value of the wavelet-branch scale.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int = 5,
        wavelet: str = "db1",
        wavelet_scale: float = 0.1,
    ) -> None:
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"WTConv2d kernel_size must be odd and positive, got {kernel_size}.")
        pad = kernel_size // 2
        self.dwt = DWT2d(wavelet)
        self.idwt = IDWT2d(wavelet)
        self.base_conv = nn.Conv2d(channels, channels, kernel_size, padding=pad, groups=channels)
        self.base_scale = ChannelScale(channels, 1.0)
        self.wavelet_conv = nn.Conv2d(
            4 * channels, 4 * channels, kernel_size, padding=pad, groups=4 * channels, bias=False
        )
        self.wavelet_scale = ChannelScale(4 * channels, wavelet_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        height, width = x.shape[-2:]
        bands = self.dwt(x).flatten(1, 2)  # (B, 4C, h, w), the bands of a channel adjacent
        if is_channels_last(x):  # the wavelet-domain conv in the caller's layout
            bands = bands.contiguous(memory_format=torch.channels_last)
        bands = self.wavelet_scale(self.wavelet_conv(bands))
        detail = self.idwt(bands.unflatten(1, (-1, 4)).contiguous(), size=(height, width))
        return self.base_scale(self.base_conv(x)) + detail


def is_channels_last(x: torch.Tensor) -> bool:
    """True when channels are the innermost axis of a 4-D ``x`` (channels-last strides, also
    for a channel slice of a channels-last tensor). Depthwise convolutions run several times
    faster in that layout on CPU."""
    return x.dim() == 4 and x.shape[1] > 1 and x.stride(1) < x.stride(3)
