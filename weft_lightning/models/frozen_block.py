"""Lean gradient checkpointing of frozen timm ViT blocks.

Backpropagating through a frozen block only needs the gradient of its *input*. Generic
checkpointing recomputes the whole block in the backward pass, although the input gradient
never needs the output of the MLP's last linear layer ``fc2``: its input gradient is
``grad @ W``. :class:`LeanFrozenBlock` keeps only the block input (one token tensor, like
checkpointing each block) and the drop-path masks, and recomputes ``norm1 -> qkv -> attention
-> proj`` and ``norm2 -> fc1 -> act``: 8 of the block's 12 ``D x D``-sized matrix products
instead of all 12, with the same gradients as autograd.

Only the standard pre-norm ``timm.models.vision_transformer.Block`` with fused attention and no
dropout is handled; :func:`supports_lean_backward` says when a block qualifies, and callers fall
back to :func:`torch.utils.checkpoint.checkpoint` otherwise.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerScale, Mlp
from timm.models.vision_transformer import Attention, Block
from torch import nn


def supports_lean_backward(block: nn.Module) -> bool:
    """True for a frozen pre-norm timm ``Block`` whose structure :class:`LeanFrozenBlock` knows."""
    if type(block) is not Block or any(p.requires_grad for p in block.parameters()):
        return False
    attn, mlp = block.attn, block.mlp
    return (
        type(attn) is Attention
        and attn.fused_attn
        and getattr(attn, "gate", None) is None
        and attn.attn_drop.p == 0
        and attn.proj_drop.p == 0
        and type(mlp) is Mlp
        and mlp.drop1.p == 0
        and mlp.drop2.p == 0
        and all(isinstance(m, LayerScale | nn.Identity) for m in (block.ls1, block.ls2))
        and all(isinstance(m, DropPath | nn.Identity) for m in (block.drop_path1, block.drop_path2))
    )


def lean_frozen_block(block: Block, x: torch.Tensor) -> torch.Tensor:
    """``block(x)`` whose backward recomputes only what the input gradient needs."""
    if not torch.is_grad_enabled() or not x.requires_grad:
        return block(x)
    return LeanFrozenBlock.apply(x, block)


class LeanFrozenBlock(torch.autograd.Function):
    """Forward without a graph; backward recomputes the block except ``fc2``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, block: Block) -> torch.Tensor:
        ctx.block = block
        ctx.autocast = _autocast_state(x.device.type)
        with torch.no_grad():
            branch = block.ls1(block.attn(block.norm1(x)))
            mask1 = _drop_path_mask(block.drop_path1, branch)
            x1 = x + (branch if mask1 is None else branch * mask1)
            branch = block.ls2(block.mlp(block.norm2(x1)))
            mask2 = _drop_path_mask(block.drop_path2, branch)
            out = x1 + (branch if mask2 is None else branch * mask2)
        ctx.masks = (mask1, mask2)
        ctx.save_for_backward(x)
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None]:
        block: Block = ctx.block
        (x,) = ctx.saved_tensors
        mask1, mask2 = ctx.masks
        device_type, enabled, dtype = ctx.autocast
        autocast = torch.autocast(device_type, dtype=dtype) if enabled else nullcontext()
        with torch.enable_grad(), autocast:
            leaf = x.detach().requires_grad_(True)
            attended = _attention_core(block, leaf)
            with torch.no_grad():  # the residual stream after the attention half, as in forward
                branch = block.ls1(block.attn.proj(attended))
                x1 = leaf + (branch if mask1 is None else branch * mask1)
            grad_x1 = grad_out + _half_input_grad(x1, _mlp_hidden, block, grad_out, mask2, 2)
            grad_attended = _output_grad(block, grad_x1, mask1, 1, attended.dtype)
            (grad_x,) = torch.autograd.grad(attended, leaf, grad_attended)
        return grad_x1 + grad_x, None


def _half_input_grad(
    x: torch.Tensor,
    core: Any,
    block: Block,
    grad: torch.Tensor,
    mask: torch.Tensor | None,
    half: int,
) -> torch.Tensor:
    """Input gradient of ``x -> drop_path(ls(last_linear(core(block, x))))`` for ``grad``."""
    leaf = x.detach().requires_grad_(True)
    hidden = core(block, leaf)
    grad_hidden = _output_grad(block, grad, mask, half, hidden.dtype)
    (grad_leaf,) = torch.autograd.grad(hidden, leaf, grad_hidden)
    return grad_leaf


def _output_grad(
    block: Block, grad: torch.Tensor, mask: torch.Tensor | None, half: int, dtype: torch.dtype
) -> torch.Tensor:
    """Gradient of the input of the half's last linear layer (``proj`` or ``fc2``) from the
    gradient of the residual stream, through drop path and LayerScale as autograd does it, in
    ``dtype`` (that of the layer's input: the autocast dtype under autocast)."""
    last = block.attn.proj if half == 1 else block.mlp.fc2
    scale = block.ls1 if half == 1 else block.ls2
    grad = grad if mask is None else grad * mask
    if isinstance(scale, LayerScale):
        grad = grad * scale.gamma
    return grad.to(dtype) @ last.weight.to(dtype)


def _attention_core(block: Block, x: torch.Tensor) -> torch.Tensor:
    """timm ``Attention`` on ``norm1(x)`` up to (not including) its output projection."""
    attn: Attention = block.attn
    batch, tokens, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    out = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
    return attn.norm(out.transpose(1, 2).reshape(batch, tokens, attn.attn_dim))


def _mlp_hidden(block: Block, x: torch.Tensor) -> torch.Tensor:
    """timm ``Mlp`` on ``norm2(x)`` up to (not including) ``fc2``."""
    mlp: Mlp = block.mlp
    return mlp.norm(mlp.drop1(mlp.act(mlp.fc1(block.norm2(x)))))


def _drop_path_mask(module: nn.Module, branch: torch.Tensor) -> torch.Tensor | None:
    """The per-sample stochastic-depth factor timm's ``drop_path`` would draw (None when off)."""
    if not isinstance(module, DropPath) or module.drop_prob == 0.0 or not module.training:
        return None
    keep = 1.0 - module.drop_prob
    mask = branch.new_empty((branch.shape[0],) + (1,) * (branch.ndim - 1)).bernoulli_(keep)
    if keep > 0.0 and module.scale_by_keep:
        mask.div_(keep)
    return mask


def _autocast_state(device_type: str) -> tuple[str, bool, torch.dtype | None]:
    """Autocast setting of the forward, re-entered for the recomputation (off on ``meta``)."""
    if device_type == "meta" or not torch.is_autocast_enabled(device_type):
        return device_type, False, None
    return device_type, True, torch.get_autocast_dtype(device_type)
