"""Small checkpoints tied to their frozen backbone, with the RNG states needed for exact resume.

A training checkpoint keeps what training changes: trainable parameters, every buffer (batch-norm
statistics), optimiser and scheduler state, loop progress, RNG states and the resolved config.
The frozen backbone weights are left out; instead the checkpoint records the backbone's identity
(timm model name and a SHA-256 fingerprint of the frozen weights). Loading rebuilds the frozen
weights from their source (the config: hub/local weights, or the seed of a random init), checks
the fingerprint and refuses a checkpoint that was written for a different backbone.
"""

from __future__ import annotations

import hashlib
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from torch import nn

FORMAT_KEY = "weft_checkpoint"
RNG_KEY = "weft_rng_states"
CONFIG_KEY = "weft_config"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 26


class BackboneMismatchError(ValueError):
    """A trainable-only checkpoint met a model with another frozen backbone than its own."""


def frozen_parameters(module: nn.Module) -> dict[str, nn.Parameter]:
    """Parameters that training never changes (``requires_grad=False``), by state-dict name."""
    return {name: p for name, p in module.named_parameters() if not p.requires_grad}


def fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and exact bytes of ``tensors`` (device independent)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        flat = tensor.reshape(-1)
        step = max(CHUNK_BYTES // max(flat.element_size(), 1), 1)
        for start in range(0, flat.numel(), step):
            chunk = flat[start : start + step].cpu().contiguous()
            digest.update(chunk.view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def backbone_name(module: nn.Module) -> str | None:
    """The timm model name of the (first) FrozenViT inside ``module``, if any."""
    for sub in module.modules():
        name = getattr(sub, "model_name", None)
        if isinstance(name, str) and isinstance(getattr(sub, "vit", None), nn.Module):
            return name
    return None


def backbone_identity(module: nn.Module) -> dict[str, Any]:
    """Name, frozen parameter count and fingerprint of the frozen weights (cached per module).

    The cache key holds each frozen tensor's storage address and version counter, so in-place
    changes (such as loading other weights) recompute the fingerprint.
    """
    frozen = frozen_parameters(module)
    key = tuple((n, p.data_ptr(), p._version, str(p.device), p.dtype) for n, p in frozen.items())
    cached = getattr(module, "_weft_identity_cache", None)
    if cached is not None and cached[0] == key:
        return dict(cached[1])
    identity = {
        "model_name": backbone_name(module),
        "frozen_params": sum(p.numel() for p in frozen.values()),
        "fingerprint": fingerprint(dict(frozen)),
    }
    object.__setattr__(module, "_weft_identity_cache", (key, identity))
    return dict(identity)


def describe(identity: dict[str, Any]) -> str:
    """One-line description of a backbone identity for messages."""
    return (
        f"{identity.get('model_name')!r} ({identity.get('frozen_params', 0):,} frozen parameters, "
        f"fingerprint {str(identity.get('fingerprint'))[:12]})"
    )


def slim_checkpoint(module: nn.Module, checkpoint: dict[str, Any]) -> None:
    """Drop frozen weights from ``checkpoint['state_dict']``; record the backbone identity."""
    state = checkpoint.get("state_dict", {})
    frozen = frozen_parameters(module)
    dropped = [name for name in frozen if name in state]
    for name in dropped:
        del state[name]
    checkpoint[FORMAT_KEY] = {
        "version": FORMAT_VERSION,
        "backbone": backbone_identity(module),
        "dropped_keys": len(dropped),
    }


def restore_checkpoint(module: nn.Module, checkpoint: dict[str, Any], source: str = "") -> None:
    """Refill the frozen weights of a trainable-only checkpoint from ``module`` after checking them.

    Full checkpoints (without the identity record) pass through unchanged.

    Raises:
        BackboneMismatchError: the model's frozen backbone differs from the checkpoint's.
    """
    record = checkpoint.get(FORMAT_KEY)
    if record is None:
        return
    saved = record.get("backbone", {})
    current = backbone_identity(module)
    if saved.get("fingerprint") != current["fingerprint"]:
        where = f" {source}" if source else ""
        raise BackboneMismatchError(
            f"Checkpoint{where} holds only trainable weights made for the frozen backbone "
            f"{describe(saved)}, but the model built from the config has {describe(current)}. "
            "Build the same backbone as the run that wrote it: same model_name and model_kwargs, "
            "same pretrained/checkpoint_path weights, and for a randomly initialised backbone "
            "the same seed_everything (the run's config is stored in the checkpoint, see "
            "weft_lightning.checkpoint.stored_config)."
        )
    state = checkpoint.setdefault("state_dict", {})
    for name, param in frozen_parameters(module).items():
        state.setdefault(name, param.detach())


def collect_rng_states() -> dict[str, Any]:
    """RNG states of torch (CPU and CUDA), numpy and Python's ``random``."""
    # legacy=True (the default) returns the tuple; numpy's stubs pick the dict overload
    legacy = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    kind, keys, position, has_gauss, gauss = legacy
    states: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        # plain types and tensors only, so that weights-only loading accepts the checkpoint
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss],
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict[str, Any]) -> None:
    """Set the RNG states saved by :func:`collect_rng_states` (CUDA only where it is in use)."""
    torch.set_rng_state(states["torch"])
    kind, keys, position, has_gauss, gauss = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), position, has_gauss, gauss))
    random.setstate(states["python"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a Lightning checkpoint file on the CPU, with one clear error when it cannot be read."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise ValueError(
            f"Could not read checkpoint {path} ({error}); the file may be truncated by an "
            "interrupted save. Use an earlier checkpoint of the run."
        ) from error


def stored_config(path: str | Path) -> str:
    """The resolved YAML config stored in a checkpoint written by ``weft fit``."""
    config = read_checkpoint(path).get(CONFIG_KEY)
    if not config:
        raise ValueError(
            f"Checkpoint {path} holds no stored config (it was not written by `weft fit`); "
            "build the model from its config file instead."
        )
    return str(config)


def checkpoint_problem(path: str | Path) -> str | None:
    """Why ``path`` cannot be resumed from, in a few words; None when it is a whole file.

    A torch checkpoint is a zip archive whose directory is written last, so a file cut short by
    a kill during its write has none; this is checked without reading the tensors.
    """
    path = Path(path)
    if path.stat().st_size == 0:
        return "the file is empty"
    if not zipfile.is_zipfile(path):
        return "the file is incomplete (an interrupted write?) or not a torch checkpoint"
    try:
        with zipfile.ZipFile(path) as archive:
            archive.namelist()
    except (zipfile.BadZipFile, OSError) as error:
        return f"the archive is damaged ({error})"
    return None


def resume_checkpoint(root: str | Path) -> Path | None:
    """The newest whole ``last*.ckpt`` or SLURM ``hpc_ckpt_*.ckpt`` under ``root`` (None if
    none); a newer file that is incomplete or damaged is skipped with a one-line warning.

    A resumed run logs into a new version folder, so ``--ckpt_path last`` must look at all the
    runs under the trainer's ``default_root_dir``, and a SLURM requeue checkpoint (written when
    the time limit neared) may be newer than any ``last.ckpt``.
    """
    root = Path(root)
    if not root.is_dir():
        return None
    candidates = [
        p for p in root.rglob("*.ckpt") if p.name.startswith(("last", "hpc_ckpt_")) and p.is_file()
    ]
    for path in sorted(candidates, key=lambda p: p.stat().st_mtime, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        warnings.warn(f"--ckpt_path last: skipping {path}: {problem}.", stacklevel=2)
    return None
