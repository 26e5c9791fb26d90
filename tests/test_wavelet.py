"""DWT / IDWT from pywt filter banks and the wavelet convolution."""

from __future__ import annotations

import pytest
import pywt
import torch
import torch.nn.functional as F

from weft_lightning.models.wavelet import DWT2d, IDWT2d, WTConv2d, dwt2d, idwt2d, wavelet_filters


@pytest.mark.parametrize("size", [(16, 16), (9, 14), (7, 5)])
def test_dwt_then_idwt_reconstructs_input(size: tuple[int, int]) -> None:
    x = torch.randn(2, 3, *size)
    bands = DWT2d()(x)
    assert bands.shape == (2, 3, 4, (size[0] + 1) // 2, (size[1] + 1) // 2)
    restored = IDWT2d()(bands, size=size)
    assert restored.shape == x.shape
    assert (restored - x).abs().max() < 1e-5


def test_dwt_matches_pywt() -> None:
    x = torch.randn(1, 1, 8, 10, dtype=torch.float64)
    bands = DWT2d()(x.float())[0, 0]
    approx, (horizontal, vertical, diagonal) = pywt.dwt2(x[0, 0].numpy(), "db1")
    for band, expected in zip(bands, (approx, horizontal, vertical, diagonal), strict=True):
        assert torch.allclose(band.double(), torch.from_numpy(expected), atol=1e-5)


def test_filters_are_fixed_buffers() -> None:
    conv = WTConv2d(8, 3)
    names = {name for name, _ in conv.named_parameters()}
    assert not any("bank" in name for name in names)
    assert "dwt.bank" not in conv.state_dict()  # rebuilt from pywt, never saved
    analysis, synthesis = wavelet_filters("db1")
    assert analysis.shape == synthesis.shape == (4, 2, 2)


def test_wtconv_shapes_init_and_parameter_count() -> None:
    conv = WTConv2d(16, 5)
    x = torch.randn(2, 16, 15, 22)
    assert conv(x).shape == x.shape
    assert torch.all(conv.base_scale.weight == 1.0)
    assert torch.allclose(
        conv.wavelet_scale.weight, torch.full_like(conv.wavelet_scale.weight, 0.1)
    )
    # base depthwise conv + bias, base scale, wavelet depthwise conv (4C, no bias), wavelet scale
    assert sum(p.numel() for p in conv.parameters()) == 5 * 16 * 25 + 6 * 16


def test_wtconv_wavelet_branch_sees_beyond_its_kernel() -> None:
    """The wavelet branch doubles the receptive field: a 1x1 WTConv mixes 2x2 neighbours."""
    conv = WTConv2d(1, 1)
    with torch.no_grad():
        conv.base_conv.weight.zero_()
        conv.base_conv.bias.zero_()
    x = torch.zeros(1, 1, 4, 4)
    x[0, 0, 0, 0] = 1.0
    out = conv(x)
    assert out[0, 0, 1, 1].abs() > 0
    assert out[0, 0, 2, 2] == 0


def test_bad_wavelet_and_kernel_raise() -> None:
    with pytest.raises(ValueError, match="Unknown wavelet 'nope'"):
        DWT2d("nope")
    with pytest.raises(ValueError, match="odd"):
        WTConv2d(4, 4)


@pytest.mark.parametrize("wavelet", ["db1", "db2"])
def test_fast_haar_path_equals_convolution(wavelet: str) -> None:
    """The pixel-shuffle path (2-tap banks) and the convolution path agree; db2 also inverts."""
    analysis, synthesis = wavelet_filters(wavelet)
    x = torch.randn(2, 3, 12, 10)
    bands = dwt2d(x, analysis)
    size = analysis.shape[-1]
    filters = analysis[:, None].repeat(3, 1, 1, 1)
    reference = F.conv2d(x, filters, stride=2, padding=size // 2 - 1, groups=3)
    assert torch.allclose(bands.flatten(1, 2), reference, atol=1e-6)
    restored = idwt2d(bands, synthesis)
    transposed = F.conv_transpose2d(
        bands.flatten(1, 2),
        synthesis[:, None].repeat(3, 1, 1, 1),
        stride=2,
        padding=size // 2 - 1,
        groups=3,
    )
    assert torch.allclose(restored, transposed, atol=1e-6)
    if wavelet == "db1":
        assert torch.allclose(restored, x, atol=1e-5)


def test_wtconv_keeps_the_channels_last_layout_and_values() -> None:
    """Channels-last input (the expert branch's layout, fast on CPU): the wavelet-domain conv
    runs channels-last too and the output equals that of the contiguous input."""
    torch.manual_seed(0)
    conv = WTConv2d(8, 5)
    x = torch.randn(2, 8, 12, 10)
    layouts = []
    conv.wavelet_conv.register_forward_pre_hook(
        lambda module, inputs: layouts.append(
            inputs[0].is_contiguous(memory_format=torch.channels_last)
        )
    )
    expected = conv(x)
    out = conv(x.contiguous(memory_format=torch.channels_last))
    assert layouts == [False, True]
    assert torch.allclose(out, expected, atol=1e-5)
