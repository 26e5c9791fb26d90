"""Activation memory per training image, measured by a forward/backward pass.

Activation memory is what autograd keeps between the forward and the backward pass. It is
measured exactly by summing the distinct storages that autograd saves for backward during a
training-mode forward (parameters excluded), then checked by running the backward pass. On the
``meta`` device nothing is allocated, so even a ViT-L at 1024 px is measured in seconds; models
with data-dependent steps fall back to the CPU. Gradient checkpointing
(``set_grad_checkpointing``) is seen as
what it is: the recomputed blocks save nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

MIB = 1 << 20


def _storage_key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


@contextmanager
def saved_tensor_bytes(exclude: set[int]) -> Iterator[dict[int, int]]:
    """Record ``{storage: bytes}`` of every tensor saved for backward inside the block."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.layout == torch.strided:
            key = _storage_key(tensor)
            if key not in exclude:
                storages[key] = tensor.untyped_storage().nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        yield storages


def _floating_leaves(outputs: Any) -> Iterator[torch.Tensor]:
    if isinstance(outputs, torch.Tensor):
        if outputs.is_floating_point() and outputs.requires_grad:
            yield outputs
    elif isinstance(outputs, dict):
        for value in outputs.values():
            yield from _floating_leaves(value)
    elif isinstance(outputs, list | tuple):
        for value in outputs:
            yield from _floating_leaves(value)


def measure_activations(
    model: nn.Module, input_size: tuple[int, int], batch_size: int, device: torch.device
) -> int:
    """Bytes autograd saves for one training forward of ``model`` on a random batch."""
    exclude = {_storage_key(t) for t in [*model.parameters(), *model.buffers()]}
    images = torch.randn(batch_size, 3, *input_size, device=device)
    was_training = model.training
    model.train()
    try:
        with torch.enable_grad(), saved_tensor_bytes(exclude) as storages:
            outputs = model(images)
        leaves = list(_floating_leaves(outputs))
        if leaves:
            torch.stack([leaf.float().sum() for leaf in leaves]).sum().backward()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return sum(storages.values())


def parameter_memory(model: nn.Module) -> dict[str, int]:
    """Bytes of all parameters, of the trainable ones' gradients and of AdamW's two moments."""
    params = {id(p): p for p in model.parameters()}.values()
    trainable = [p for p in params if p.requires_grad]
    weights = sum(p.numel() * p.element_size() for p in params)
    grads = sum(p.numel() * p.element_size() for p in trainable)
    adamw = sum(2 * p.numel() * 4 for p in trainable)
    return {"parameters": weights, "gradients": grads, "adamw_state": adamw}


def _on_device(model: nn.Module) -> torch.device:
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def activation_memory(
    model: nn.Module, input_size: tuple[int, int] = (512, 512), batch_size: int = 2
) -> dict[str, Any]:
    """Estimated training memory of ``model`` (a Segmentor or backbone) for one image.

    Runs on the model's device; a model on ``meta`` whose forward needs real values is
    re-materialised on the CPU (values uninitialised, which does not change any size).
    Returns float32 figures in MiB; bf16 autocast roughly halves the activations.
    """
    device = _on_device(model)
    fallback: str | None
    try:
        total = measure_activations(model, input_size, batch_size, device)
    except (NotImplementedError, RuntimeError) as error:
        if device.type != "meta":
            raise
        model = model.to_empty(device="cpu")
        device, fallback = torch.device("cpu"), str(error).splitlines()[0][:200]
        total = measure_activations(model, input_size, batch_size, device)
    else:
        fallback = None
    fixed = parameter_memory(model)
    report: dict[str, Any] = {
        "device": device.type,
        "method": "bytes saved for backward in a float32 training forward, then backward",
        "input_size": list(input_size),
        "batch_size": batch_size,
        "activations_mib_per_image": round(total / batch_size / MIB, 2),
        "parameters_mib": round(fixed["parameters"] / MIB, 2),
        "gradients_mib": round(fixed["gradients"] / MIB, 2),
        "adamw_state_mib": round(fixed["adamw_state"] / MIB, 2),
    }
    if fallback:
        report["meta_fallback_reason"] = fallback
    return report
