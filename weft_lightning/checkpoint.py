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
import os
import pickle
import random
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO
from torch import nn

FORMAT_KEY = "weft_checkpoint"
RNG_KEY = "weft_rng_states"
CONFIG_KEY = "weft_config"
WORLD_SIZE_KEY = "weft_world_size"
FORMAT_VERSION = 1
CHUNK_BYTES = 1 << 26


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, unsafe, foreign, non-finite or of another
    model; the message names the file and what is wrong."""


class BackboneMismatchError(CheckpointError):
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
    """Refill the frozen weights of a trainable-only checkpoint from ``module`` after checking
    them; then check that every weight fits the model and is finite (full checkpoints too).

    Raises:
        BackboneMismatchError: the model's frozen backbone differs from the checkpoint's.
        CheckpointError: a weight of another shape, a missing or extra weight, a NaN.
    """
    record = checkpoint.get(FORMAT_KEY)
    state = checkpoint.setdefault("state_dict", {})
    if record is not None:
        _check_backbone(module, record, source)
        for name, param in frozen_parameters(module).items():
            state.setdefault(name, param.detach())
    check_fits(module, state, source)


def _check_backbone(module: nn.Module, record: dict[str, Any], source: str) -> None:
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


def _examples(names: list[str]) -> str:
    more = f" and {len(names) - 1} more" if len(names) > 1 else ""
    return f"{names[0]}{more}"


def check_fits(module: nn.Module, state: dict[str, Any], source: str = "") -> None:
    """Refuse weights that do not fit ``module`` (other widths, other parts) or that are not
    finite, in one message naming the first tensor (with both shapes) and the count."""
    name = f"Checkpoint {source}" if source else "The checkpoint"
    advice = "build the model with the config of the run that wrote it (stored in the checkpoint)"
    own = module.state_dict()
    shapes = [k for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if shapes:
        first = shapes[0]
        raise CheckpointError(
            f"{name} does not fit the model: {_examples(shapes)} has shape "
            f"{tuple(state[first].shape)} in the checkpoint but {tuple(own[first].shape)} in the "
            f"model; {advice}."
        )
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    if missing or extra:
        parts = [f"lacks {_examples(missing)}"] if missing else []
        parts += [f"holds {_examples(extra)}, which the model has not"] if extra else []
        raise CheckpointError(f"{name} is for another model: it {'; it '.join(parts)}; {advice}.")
    bad = [
        k
        for k, v in state.items()
        if torch.is_tensor(v) and v.is_floating_point() and not bool(torch.isfinite(v).all())
    ]
    if bad:
        raise CheckpointError(
            f"{name} holds NaN or infinite weights ({_examples(bad)}); it is refused. Use an "
            "earlier checkpoint of the run."
        )


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
    """Load a checkpoint file on the CPU weights-only (never running code from it, whatever
    ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD`` says); one :class:`CheckpointError` naming the file
    when it is missing, empty, cut short, not a torch file or unsafe."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Checkpoint {path} does not exist.")
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"Checkpoint {path} cannot be read: {problem}.")
    forced = os.environ.pop(_FORCE_UNSAFE, None)
    try:
        # memory-mapped: checking a file before Lightning loads it reads no tensor data
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"Checkpoint {path} holds Python objects whose loading would run code "
            f"({_unsafe_global(error)}); weft loads checkpoints weights-only and refused it. "
            "Load only files you trust."
        ) from None
    except Exception as error:
        raise CheckpointError(
            f"Checkpoint {path} cannot be read ({_first_line(error)}); the file may be "
            "truncated by an interrupted save: use an earlier checkpoint of the run."
        ) from None
    finally:
        if forced is not None:
            os.environ[_FORCE_UNSAFE] = forced


_FORCE_UNSAFE = "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"


def _unsafe_global(error: BaseException) -> str:
    """``it calls getattr``: the global that torch's weights-only unpickler refused."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", str(error))
    return f"it calls {found.group(1)}" if found else "objects outside tensors and containers"


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0].rstrip(".") if text else type(error).__name__


def lightning_checkpoint(path: str | Path) -> dict[str, Any]:
    """:func:`read_checkpoint`, also refusing a file that is not a Lightning training
    checkpoint (a plain state dict, another program's file)."""
    checkpoint = read_checkpoint(path)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        tensors = isinstance(checkpoint, dict) and all(
            torch.is_tensor(v) for v in checkpoint.values()
        )
        what = f"a plain state dict of {len(checkpoint)} tensors" if tensors else "no state_dict"
        raise CheckpointError(
            f"Checkpoint {path} is not a training checkpoint of weft fit (it holds {what}); "
            "give a .ckpt written by `weft fit`, or convert released weights with `weft convert`."
        )
    return checkpoint


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


def recorded_best(path: str | Path) -> Path | None:
    """The best checkpoint that a ModelCheckpoint recorded in checkpoint ``path`` (its
    ``best_model_path``), when that file still exists; None otherwise."""
    try:
        callbacks = read_checkpoint(path).get("callbacks", {})
    except ValueError:
        return None
    for key, state in callbacks.items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict):
            best = state.get("best_model_path")
            if best and Path(best).is_file():
                return Path(best)
    return None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoint files written whole or not at all: into a hidden ``.NAME.partial`` file
    beside the target, flushed to disk, then renamed over it (a rename within a folder is
    atomic). A kill during the write leaves the previous checkpoint intact, whatever the
    Lightning and fsspec versions do; remote URLs keep Lightning's own writer."""

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None
    ) -> None:
        if "://" in str(path):
            super().save_checkpoint(checkpoint, path, storage_options)
            return
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{target.name}.partial")
        try:
            with partial.open("wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(partial, target)
        finally:
            partial.unlink(missing_ok=True)
