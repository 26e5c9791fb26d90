"""Wavelet experts and their dynamically routed mixture.

Each expert is a 4-group cascade of one shared wavelet convolution with its own kernel size, so
the experts see the image at different receptive fields; a per-sample router picks the top-k of
them and mixes their outputs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, cast, get_args

import torch
import torch.nn.functional as F
from torch import nn

from weft_lightning.models.grad_checkpointing import is_recomputing
from weft_lightning.models.layers import conv_bn_relu
from weft_lightning.models.wavelet import WTConv2d, dwt2d, idwt2d

Dispatch = Literal["dense", "sparse", "fused"]
DISPATCH_MODES: tuple[str, ...] = get_args(Dispatch)


class GroupCascade(nn.Module):
    """Split channels into 4 groups and run one shared block as a cascade, then fuse.

    ``y0 = phi(x0), y_i = phi(y_{i-1} + x_i)``; output ``ReLU(BN(Conv1x1(cat(y) + x)))``.
    Sharing ``phi`` across the groups keeps the block small while the cascade grows the
    receptive field group by group.
    """

    def __init__(self, channels: int, phi: nn.Module, groups: int = 4) -> None:
        super().__init__()
        if channels % groups:
            raise ValueError(f"channels={channels} must be divisible by the {groups} groups.")
        self.groups = groups
        self.phi = phi
        self.fuse = conv_bn_relu(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outputs = []
        previous = None
        for part in x.chunk(self.groups, dim=1):
            previous = self.phi(part if previous is None else previous + part)
            outputs.append(previous)
        return self.fuse(torch.cat(outputs, dim=1) + x)


class WaveletExpert(GroupCascade):
    """Expert E_k: the 4-group cascade of ``WTConv2d(C/4, k) -> BN -> ReLU``."""

    phi: nn.Sequential  # conv_bn_relu around a WTConv2d

    def __init__(self, channels: int = 64, kernel_size: int = 3, wavelet: str = "db1") -> None:
        quarter = channels // 4
        phi = conv_bn_relu(quarter, quarter, conv=WTConv2d(quarter, kernel_size, wavelet))
        super().__init__(channels, phi)
        self.kernel_size = kernel_size


class ExpertMixture(nn.Module):
    """Per-sample top-k mixture of wavelet experts.

    The router is ``softmax(Linear(GAP(x)))``; the top-k probabilities are re-normalised with a
    softmax (+1e-8, divided by their sum) into the mixing weights.

    Args:
        channels: feature width C.
        kernel_sizes: one expert per kernel size.
        top_k: experts used per sample (with 1 the task loss gives the router no gradient,
            since the single weight is always 1).
        dispatch: ``dense`` runs every expert on the whole batch (batch-norm statistics see the
            whole batch, as in the reference); ``sparse`` runs each expert only on the samples
            routed to it (same outputs in eval mode, less compute); ``fused`` computes exactly
            what ``dense`` computes, all experts at once (kernels zero-padded to the largest
            size, one grouped op per step instead of one per expert): far fewer kernel launches
            on GPU; its batch norms bypass the modules, so SyncBatchNorm does not apply to them.
        balance_loss_weight: weight of a Switch-style load-balancing loss; 0 disables it.
        wavelet: pywt wavelet name of the experts' WTConv.
        expert_factory: builds one expert from ``(channels, kernel_size)``; defaults to
            :class:`WaveletExpert`.
    """

    def __init__(
        self,
        channels: int = 64,
        kernel_sizes: Sequence[int] = (1, 3, 5, 7, 9, 11, 13),
        top_k: int = 4,
        dispatch: Dispatch = "dense",
        balance_loss_weight: float = 0.0,
        wavelet: str = "db1",
        expert_factory: Callable[[int, int], nn.Module] | None = None,
    ) -> None:
        super().__init__()
        if dispatch not in DISPATCH_MODES:
            raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {dispatch!r}.")
        if not 1 <= top_k <= len(kernel_sizes):
            raise ValueError(
                f"top_k={top_k} must be between 1 and the number of experts ({len(kernel_sizes)})."
            )
        if dispatch == "fused" and expert_factory is not None:
            raise ValueError("dispatch='fused' works with the built-in WaveletExpert only.")
        factory = expert_factory or (lambda c, k: WaveletExpert(c, k, wavelet))
        self.kernel_sizes = list(kernel_sizes)
        self.top_k = top_k
        self.dispatch = dispatch
        self.balance_loss_weight = balance_loss_weight
        self.experts = nn.ModuleList(factory(channels, k) for k in self.kernel_sizes)
        self.router = nn.Linear(channels, len(self.kernel_sizes))
        # routing counters: plain tensors, not buffers, so DDP does not broadcast rank 0's
        self._counts: torch.Tensor | None = None  # rows: chosen, weight; last column: samples
        self._balance_losses: list[torch.Tensor] = []

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Router probabilities (B, E), top-k indices (B, k) and mixing weights (B, k)."""
        probs = self.router(x.mean(dim=(2, 3))).float().softmax(dim=-1)
        top_probs, indices = probs.topk(self.top_k, dim=-1)
        weights = top_probs.softmax(dim=-1) + 1e-8
        weights = weights / weights.sum(dim=-1, keepdim=True)
        return probs, indices, weights

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        probs, indices, weights = self.route(x)
        full = torch.zeros_like(probs).scatter(1, indices, weights)
        if not is_recomputing():  # a checkpoint's second pass has recorded all this already
            self._record(probs, indices, full)
            if self.balance_loss_weight > 0 and self.training and torch.is_grad_enabled():
                self._balance_losses.append(self._balance_term(probs, indices))
        if self.dispatch == "dense":
            return self._dense(x, full)
        if self.dispatch == "fused":
            experts = cast("list[WaveletExpert]", list(self.experts))  # the built-in ones
            return _weighted_sum(fused_experts(experts, x), full)
        return self._sparse(x, full)

    def _dense(self, x: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        return _weighted_sum(torch.stack([expert(x) for expert in self.experts], dim=1), full)

    def _sparse(self, x: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor | None = None
        idle = x.new_zeros(())
        for index, expert in enumerate(self.experts):
            samples = full[:, index].nonzero(as_tuple=True)[0]
            if samples.numel() == 0:
                # keep idle experts in the graph (zero gradient) so DDP needs no unused-param scan
                idle = idle + sum(p.sum() for p in expert.parameters() if p.requires_grad) * 0.0
                continue
            y = expert(x[samples]) * full[samples, index].to(x.dtype)[:, None, None, None]
            if out is None:
                out = x.new_zeros((x.shape[0], *y.shape[1:]), dtype=y.dtype)
            out = out.index_add(0, samples, y)
        assert out is not None  # every sample picks top_k >= 1 experts
        return out + idle.to(out.dtype)

    @torch.no_grad()
    def _record(self, probs: torch.Tensor, indices: torch.Tensor, full: torch.Tensor) -> None:
        chosen = torch.zeros_like(probs).scatter(1, indices, 1.0)
        samples = probs.new_full((2, 1), float(probs.shape[0]))
        counts = torch.cat([torch.stack([chosen.sum(0), full.sum(0)]), samples], dim=1)
        if self._counts is None or self._counts.device != counts.device:
            self._counts = torch.zeros_like(counts)
        self._counts += counts

    def _balance_term(self, probs: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
        """Switch-Transformer balance loss ``E * sum_e f_e * P_e`` (1 when perfectly balanced)."""
        chosen = F.one_hot(indices, self.num_experts).float().sum(1)
        fraction = chosen.mean(0) / self.top_k
        return self.num_experts * (fraction * probs.mean(0)).sum()

    def routing_stats(self, reset: bool = True) -> dict[str, float]:
        """Share of samples that chose each expert and its mean mixing weight since last reset."""
        empty = [[0.0] * (self.num_experts + 1)] * 2
        chosen, weight = self._counts.tolist() if self._counts is not None else empty
        samples = max(chosen[-1], 1.0)
        stats: dict[str, float] = {}
        for index, kernel in enumerate(self.kernel_sizes):
            stats[f"expert{index}_k{kernel}/chosen"] = chosen[index] / samples
            stats[f"expert{index}_k{kernel}/weight"] = weight[index] / samples
        if reset:
            self._counts = None
        return stats

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """Weighted balance loss accumulated since the last call, or None when disabled."""
        losses, self._balance_losses = self._balance_losses, []
        if not losses:
            return None
        return self.balance_loss_weight * torch.stack(losses).mean()


def _weighted_sum(outputs: torch.Tensor, full: torch.Tensor) -> torch.Tensor:
    """Mix expert outputs (B, E, C, H, W) with per-sample weights (B, E)."""
    return (outputs * full.to(outputs.dtype)[:, :, None, None, None]).sum(dim=1)


def fused_experts(experts: Sequence[WaveletExpert], x: torch.Tensor) -> torch.Tensor:
    """All experts on ``x`` at once -> (B, E, C, H, W), equal to stacking ``expert(x)``.

    Expert e's channels sit in block e of one wide tensor; depthwise kernels are zero-padded to
    the largest size (same output for a centred kernel), the 1x1 fusions become one grouped
    conv and the batch norms one call (their statistics are per channel, so nothing mixes).
    """
    batch, channels, height, width = x.shape
    count, quarter = len(experts), channels // 4
    weights = _PackedExperts(experts)
    previous: torch.Tensor | None = None
    outputs = []
    for part in x.chunk(4, dim=1):
        part = part[:, None]
        joined = part.expand(-1, count, -1, -1, -1) if previous is None else previous + part
        previous = weights.phi(joined.reshape(batch, count * quarter, height, width))
        previous = previous.view(batch, count, quarter, height, width)
        outputs.append(previous)
    fused = (torch.cat(outputs, dim=2) + x[:, None]).reshape(batch, count * channels, height, width)
    return weights.fuse(fused).view(batch, count, channels, height, width)


class _PackedExperts:
    """The experts' parameters concatenated along channels, for :func:`fused_experts`."""

    def __init__(self, experts: Sequence[WaveletExpert]) -> None:
        wtconvs = [cast(WTConv2d, e.phi[0]) for e in experts]
        self.size = max(e.kernel_size for e in experts)
        self.groups = len(experts)
        self.wtconv = wtconvs[0]
        self.base_weight = torch.cat([_pad_kernel(w.base_conv.weight, self.size) for w in wtconvs])
        self.base_bias = torch.cat([cast(torch.Tensor, w.base_conv.bias) for w in wtconvs])
        self.base_scale = torch.cat([w.base_scale.weight for w in wtconvs], dim=1)
        self.wave_weight = torch.cat(
            [_pad_kernel(w.wavelet_conv.weight, self.size) for w in wtconvs]
        )
        self.wave_scale = torch.cat([w.wavelet_scale.weight for w in wtconvs], dim=1)
        self.phi_norm = _PackedNorm([cast(nn.BatchNorm2d, e.phi[1]) for e in experts])
        self.fuse_weight = torch.cat([cast(nn.Conv2d, e.fuse[0]).weight for e in experts])
        self.fuse_bias = torch.cat([cast(torch.Tensor, e.fuse[0].bias) for e in experts])
        self.fuse_norm = _PackedNorm([cast(nn.BatchNorm2d, e.fuse[1]) for e in experts])

    def phi(self, x: torch.Tensor) -> torch.Tensor:
        """WTConv2d -> BN -> ReLU of every expert on its channel block."""
        height, width = x.shape[-2:]
        channels, pad = x.shape[1], self.size // 2
        bands = dwt2d(x, self.wtconv.dwt.bank)
        shape = bands.shape
        bands = F.conv2d(bands.flatten(1, 2), self.wave_weight, padding=pad, groups=4 * channels)
        bands = (bands * self.wave_scale).view(shape)
        detail = idwt2d(bands, self.wtconv.idwt.bank, (height, width))
        base = F.conv2d(x, self.base_weight, self.base_bias, padding=pad, groups=channels)
        out = base * self.base_scale + detail
        return F.relu(self.phi_norm(out))

    def fuse(self, x: torch.Tensor) -> torch.Tensor:
        """Per-expert 1x1 conv -> BN -> ReLU as one grouped conv."""
        return F.relu(
            self.fuse_norm(F.conv2d(x, self.fuse_weight, self.fuse_bias, groups=self.groups))
        )


class _PackedNorm:
    """Several BatchNorm2d applied as one, updating each module's running statistics."""

    def __init__(self, norms: Sequence[nn.BatchNorm2d]) -> None:
        self.norms = list(norms)
        first = self.norms[0]
        self.eps, self.momentum = first.eps, first.momentum
        if self.momentum is None:
            raise ValueError(
                "dispatch='fused' needs BatchNorm momentum (not a cumulative average)."
            )
        self.weight = torch.cat([n.weight for n in self.norms])
        self.bias = torch.cat([n.bias for n in self.norms])
        self.training = first.training

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            # modules with running statistics: running_mean/var are tensors
            mean = torch.cat([cast(torch.Tensor, n.running_mean) for n in self.norms])
            var = torch.cat([cast(torch.Tensor, n.running_var) for n in self.norms])
            return F.batch_norm(x, mean, var, self.weight, self.bias, False, 0.0, self.eps)
        self._update_running_stats(x)
        return F.batch_norm(x, None, None, self.weight, self.bias, True, 0.0, self.eps)

    @torch.no_grad()
    def _update_running_stats(self, x: torch.Tensor) -> None:
        var, mean = torch.var_mean(x.float(), dim=(0, 2, 3), unbiased=True)
        sizes = [n.num_features for n in self.norms]
        means = [cast(torch.Tensor, n.running_mean) for n in self.norms]
        variances = [cast(torch.Tensor, n.running_var) for n in self.norms]
        assert self.momentum is not None  # checked in __init__
        torch._foreach_lerp_(means, list(mean.split(sizes)), self.momentum)
        torch._foreach_lerp_(variances, list(var.split(sizes)), self.momentum)
        torch._foreach_add_([cast(torch.Tensor, n.num_batches_tracked) for n in self.norms], 1)


def _pad_kernel(weight: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (out, in, k, k) kernel to (out, in, size, size) around its centre."""
    pad = (size - weight.shape[-1]) // 2
    return F.pad(weight, (pad, pad, pad, pad)) if pad else weight
