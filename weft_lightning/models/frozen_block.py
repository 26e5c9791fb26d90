"""Lean gradient checkpointing of frozen timm ViT blocks.

Backpropagating through a frozen block only needs the gradient of its *input*. Generic
checkpointing recomputes the whole block in the backward pass, although the input gradient
never needs the output of the MLP's last linear layer ``fc2``: its input gradient is
``grad @ W``. :class:`LeanFrozenBlock` keeps the block input and the drop-path masks, and
recomputes ``norm1 -> qkv``, ``proj`` and ``norm2 -> fc1 -> act``: 8 of the block's 12
``D x D``-sized matrix products instead of all 12, with the same gradients as autograd.

On the CPU the block also keeps the attention output and its log-sum-exp (one more token
tensor per block), so the backward pass feeds the fused attention kernel's backward directly
instead of running the attention forward again. Elsewhere the attention is recomputed.

Only the standard pre-norm ``timm.models.vision_transformer.Block`` with fused attention and no
dropout is handled; :func:`supports_lean_backward` says when a block qualifies, and callers fall
back to :func:`torch.utils.checkpoint.checkpoint` otherwise.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, cast

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


def lean_frozen_block(
    block: Block, x: torch.Tensor, keep_attention: bool | None = None
) -> torch.Tensor:
    """``block(x)`` whose backward recomputes only what the input gradient needs.

    ``keep_attention`` keeps the attention output for the backward pass (CPU only); None
    decides by :func:`keeps_attention`.
    """
    if not torch.is_grad_enabled() or not x.requires_grad:
        return block(x)
    if keep_attention is None:
        keep_attention = keeps_attention(block, x)
    elif keep_attention and not keeps_attention(block, x):
        raise ValueError(
            f"keep_attention=True needs a CPU input and a block without attention norm; got a "
            f"{x.device.type} input. Pass keep_attention=None to decide automatically."
        )
    return LeanFrozenBlock.apply(x, block, keep_attention)


class LeanFrozenBlock(torch.autograd.Function):
    """Forward without a graph; backward recomputes the block except ``fc2``."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, block: Block, keep_attention: bool) -> torch.Tensor:
        ctx.block = block
        ctx.autocast = _autocast_state(x.device.type)
        ctx.keep = keep_attention
        with torch.no_grad():
            if ctx.keep:
                attended, lse = _fused_attention(*_qkv(block, x))
            else:
                attended, lse = _attention_core(block, x), None
            branch = block.ls1(cast(Attention, block.attn).proj(attended))
            mask1 = _drop_path_mask(block.drop_path1, branch)
            x1 = x + (branch if mask1 is None else branch * mask1)
            branch = block.ls2(block.mlp(block.norm2(x1)))
            mask2 = _drop_path_mask(block.drop_path2, branch)
            out = x1 + (branch if mask2 is None else branch * mask2)
        ctx.masks = (mask1, mask2)
        ctx.save_for_backward(*((x, attended, lse) if ctx.keep else (x,)))
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        block: Block = ctx.block
        x, *kept = ctx.saved_tensors
        mask1, mask2 = ctx.masks
        device_type, enabled, dtype = ctx.autocast
        autocast = torch.autocast(device_type, dtype=dtype) if enabled else nullcontext()
        with torch.enable_grad(), autocast:
            leaf = x.detach().requires_grad_(True)
            attended = kept[0] if ctx.keep else _attention_core(block, leaf)
            with torch.no_grad():  # the residual stream after the attention half, as in forward
                branch = block.ls1(cast(Attention, block.attn).proj(attended))
                x1 = leaf + (branch if mask1 is None else branch * mask1)
            grad_x1 = grad_out + _half_input_grad(x1, _mlp_hidden, block, grad_out, mask2, 2)
            grad_attended = _output_grad(block, grad_x1, mask1, 1, attended.dtype)
            if ctx.keep:  # q, k, v only now: they are not alive during the MLP half
                qkv = _qkv(block, leaf)
                grad_qkv = _fused_attention_backward(block, grad_attended, qkv, *kept)
                (grad_x,) = torch.autograd.grad(qkv, leaf, grad_qkv)
            else:
                (grad_x,) = torch.autograd.grad(attended, leaf, grad_attended)
        return grad_x1 + grad_x, None, None


def keeps_attention(block: Block, x: torch.Tensor) -> bool:
    """Whether :class:`LeanFrozenBlock` keeps ``block``'s attention output for input ``x``.

    The CPU fused attention kernel returns its log-sum-exp, which its backward takes together
    with the output; other devices recompute the attention in the backward pass.
    """
    return x.device.type == "cpu" and isinstance(block.attn.norm, nn.Identity)


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
    last = cast(Attention, block.attn).proj if half == 1 else cast(Mlp, block.mlp).fc2
    scale = block.ls1 if half == 1 else block.ls2
    grad = grad if mask is None else grad * mask
    if isinstance(scale, LayerScale):
        grad = grad * scale.gamma
    return grad.to(dtype) @ last.weight.to(dtype)


def _qkv(block: Block, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Queries, keys and values (batch, heads, tokens, head_dim) of ``block`` for input ``x``."""
    attn = cast(Attention, block.attn)
    batch, tokens, _ = x.shape
    qkv = attn.qkv(block.norm1(x)).reshape(batch, tokens, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
    return attn.q_norm(q), attn.k_norm(k), v


def _attention_core(block: Block, x: torch.Tensor) -> torch.Tensor:
    """timm ``Attention`` on ``norm1(x)`` up to (not including) its output projection."""
    q, k, v = _qkv(block, x)
    out = F.scaled_dot_product_attention(q, k, v)
    return cast(Attention, block.attn).norm(_merge_heads(out))


def _fused_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The CPU fused attention of ``q, k, v``: heads merged (batch, tokens, dim), log-sum-exp."""
    out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v)
    return _merge_heads(out), lse


def _fused_attention_backward(
    block: Block,
    grad: torch.Tensor,
    qkv: tuple[torch.Tensor, ...],
    attended: torch.Tensor,
    lse: torch.Tensor,
) -> tuple[torch.Tensor, ...]:
    """Gradients of ``q, k, v`` for the gradient ``grad`` of the merged attention output."""
    heads = cast(Attention, block.attn).num_heads
    q, k, v = (t.detach() for t in qkv)
    return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
        _split_heads(grad, heads), q, k, v, _split_heads(attended, heads), lse, 0.0, False
    )


def _merge_heads(out: torch.Tensor) -> torch.Tensor:
    """(batch, heads, tokens, head_dim) -> (batch, tokens, heads * head_dim)."""
    batch, heads, tokens, head_dim = out.shape
    return out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)


def _split_heads(merged: torch.Tensor, heads: int) -> torch.Tensor:
    """(batch, tokens, dim) -> a (batch, heads, tokens, head_dim) view."""
    batch, tokens, dim = merged.shape
    return merged.view(batch, tokens, heads, dim // heads).transpose(1, 2)


def _mlp_hidden(block: Block, x: torch.Tensor) -> torch.Tensor:
    """timm ``Mlp`` on ``norm2(x)`` up to (not including) ``fc2``."""
    mlp = cast(Mlp, block.mlp)
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
