"""Lean checkpointing of frozen ViT blocks: autograd's gradients with less recomputation."""

from __future__ import annotations

import pytest
import timm
import torch
from helpers import OpCounter

from weft_lightning.models.backbone import FrozenViT
from weft_lightning.models.frozen_block import (
    keeps_attention,
    lean_frozen_block,
    supports_lean_backward,
)


def _blocks(**kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    vit = timm.create_model("vit_tiny_patch16_224", depth=2, **kwargs)
    return vit.blocks.requires_grad_(False).train()


@pytest.mark.parametrize("keep", [True, False])
@pytest.mark.parametrize("options", [{}, {"init_values": 0.1, "drop_path_rate": 0.5}])
def test_input_gradient_equals_autograd(options: dict, keep: bool) -> None:
    blocks = _blocks(**options)
    x = torch.randn(3, 20, 192, requires_grad=True)
    seed = torch.seed()
    reference = blocks(x)
    (expected,) = torch.autograd.grad((reference * reference.detach().cos()).sum(), x)
    torch.manual_seed(seed)  # the same drop-path draws
    out = x
    for block in blocks:
        out = lean_frozen_block(block, out, keep_attention=keep)
    torch.testing.assert_close(out, reference, rtol=0, atol=0)
    (grad,) = torch.autograd.grad((out * out.detach().cos()).sum(), x)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("keep", [True, False])
def test_backward_skips_the_mlp_output_linear(keep: bool) -> None:
    blocks = _blocks(init_values=0.1)
    x = torch.randn(2, 16, 192, requires_grad=True)
    out = x
    for block in blocks:
        out = lean_frozen_block(block, out, keep_attention=keep)
    with OpCounter() as ops:
        out.sum().backward()
    # qkv, proj and fc1 are recomputed (addmm); fc2 never runs forward again
    assert ops.counts["aten.addmm"] == 3 * len(blocks)
    # a kept attention output is not computed again
    recomputed = ops.counts["aten._scaled_dot_product_flash_attention_for_cpu"]
    assert recomputed == (0 if keep else len(blocks))
    assert ops.counts["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == len(blocks)


def test_cpu_blocks_keep_attention_and_say_when_they_cannot() -> None:
    block = _blocks()[0]
    x = torch.randn(1, 4, 192, requires_grad=True)
    assert keeps_attention(block, x)
    assert not keeps_attention(block, x.to("meta"))
    with pytest.raises(ValueError, match="keep_attention=True needs a CPU input"):
        lean_frozen_block(block, x.detach().to("meta").requires_grad_(), keep_attention=True)


@pytest.mark.parametrize("keep", [True, False])
def test_bf16_autocast_matches_autograd(keep: bool) -> None:
    blocks = _blocks(init_values=0.1)
    x = torch.randn(2, 16, 192, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reference = blocks(x)
        out = x
        for block in blocks:
            out = lean_frozen_block(block, out, keep_attention=keep)
    (expected,) = torch.autograd.grad(reference.float().sum(), x)
    (grad,) = torch.autograd.grad(out.float().sum(), x)
    assert out.dtype == reference.dtype
    torch.testing.assert_close(grad, expected, rtol=2e-2, atol=2e-2)


def test_only_frozen_standard_blocks_qualify() -> None:
    assert supports_lean_backward(_blocks()[0])
    assert not supports_lean_backward(_blocks()[0].requires_grad_(True))
    eva = FrozenViT("eva02_tiny_patch14_224", model_kwargs={"depth": 4})
    assert not supports_lean_backward(eva.vit.blocks[0])


def test_group_runner_gives_autograd_gradients() -> None:
    vit = FrozenViT("vit_tiny_patch16_224", model_kwargs={"depth": 4}).train()
    tokens, prefix, _ = vit.embed(torch.randn(2, 3, 64, 64))
    tokens = tokens.detach().requires_grad_(True)
    plain, _ = vit.run_group(1, tokens, prefix)
    (expected,) = torch.autograd.grad(plain.square().sum(), tokens)
    lean, _ = vit.run_group_checkpointed(1, tokens, prefix)
    (grad,) = torch.autograd.grad(lean.square().sum(), tokens)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)
