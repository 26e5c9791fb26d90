"""Config files that stack on others: the ``extends`` key.

A run config names the configs it builds on, relative to its own folder::

    # configs/orsi/orssd.yaml
    extends: [../paper.yaml]
    trainer:
      max_steps: 60000
    data: ../data/orssd.yaml

``weft`` reads ``--config configs/orsi/orssd.yaml`` as ``--config configs/paper.yaml --config
configs/orsi/orssd.yaml``: the bases first (each expanded the same way), then the file, so the
file's values win, exactly as when the files are stacked on the command line; the resolved
config (``--print_config``, the run's saved config) holds the values only. Inside a config,
a class-typed key may also be a path to a file of that class (``data: ../data/orssd.yaml``), as
jsonargparse allows.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["EXTENDS_KEY", "ConfigFileError", "config_bases", "expand_config_args"]

EXTENDS_KEY = "extends"
_CONFIG_FLAGS = ("--config", "-c")


class ConfigFileError(ValueError):
    """A config file that cannot be stacked (missing base, cycle, unreadable YAML)."""


def config_bases(path: Path, _chain: tuple[Path, ...] = ()) -> list[Path]:
    """The files a config stands for, bases first and ``path`` last (``extends`` expanded)."""
    path = Path(path)
    resolved = path.resolve()
    if resolved in _chain:
        cycle = " -> ".join(str(p) for p in (*_chain, resolved))
        raise ConfigFileError(f"Config files extend each other in a cycle: {cycle}.")
    bases = _extends_of(path)
    files: list[Path] = []
    for base in bases:
        target = (path.parent / base) if not Path(base).is_absolute() else Path(base)
        if not target.is_file():
            raise ConfigFileError(
                f"{path}: {EXTENDS_KEY} names {base!r}, but {target} does not exist (paths are "
                "relative to the file that names them)."
            )
        files += config_bases(target, (*_chain, resolved))
    return [*files, path]


def expand_config_args(argv: Sequence[str]) -> list[str]:
    """Command-line arguments with every ``--config FILE`` replaced by its stack of files, and
    every ``--model FILE``/``--data FILE`` made the whole section (``--data=null`` first, so
    that nothing of the configs before it is merged in: a trained run's model evaluated on
    another domain's data takes the data from that file alone)."""
    args = list(argv)
    out: list[str] = []
    stacked: list[list[Path]] = []  # the files of each --config, bases first
    index = 0
    while index < len(args):
        arg = args[index]
        value: str | None = None
        if arg in _SECTION_FLAGS and index + 1 < len(args) and _is_yaml(args[index + 1]):
            out += [f"{arg}=null", arg, args[index + 1]]
            index += 2
            continue
        if arg in _CONFIG_FLAGS and index + 1 < len(args):
            value, index = args[index + 1], index + 2
        elif arg.startswith("--config="):
            value, index = arg.split("=", 1)[1], index + 1
        else:
            out.append(arg)
            index += 1
            continue
        path = Path(value)
        files = config_bases(path) if path.is_file() else [value]
        for file in files:
            out += ["--config", str(file)]
        if path.is_file():
            stacked.append([Path(f) for f in files])
        if len(files) > 1:  # applied: the resolved config names no files relative to others
            out.append(f"--{EXTENDS_KEY}=null")
    _warn_model_merge(stacked)
    return out


_SECTION_FLAGS = ("--model", "--data")


def _is_yaml(value: str) -> bool:
    return value.endswith((".yaml", ".yml")) and Path(value).is_file()


def _defines_model(config: Any) -> bool:
    """A config that builds a whole model (its class, or a whole segmentor), not one that
    changes a few of its keys (as the ablation configs do)."""
    model = config.get("model") if isinstance(config, dict) else None
    if isinstance(model, str):
        return True
    if not isinstance(model, dict):
        return False
    segmentor = (model.get("init_args") or {}).get("segmentor")
    return (
        "class_path" in model
        or isinstance(segmentor, str)
        or (isinstance(segmentor, dict) and "class_path" in segmentor)
    )


def _flat(value: Any, prefix: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, item in value.items():
        out.update(_flat(item, f"{prefix}.{key}"))
    return out


def _warn_model_merge(stacked: list[list[Path]]) -> None:
    """One line when two configs given with ``--config`` each define a whole model (in the
    file or a base it extends): the run's model is then a key-by-key merge of both, which is
    rarely what was meant. A config overriding the model of its own base is not warned."""
    defining = []
    for group, files in enumerate(stacked):
        for path in files:
            try:
                content = yaml.safe_load(path.read_text())
            except (OSError, yaml.YAMLError):
                continue
            if _defines_model(content):
                given = files[-1]  # the file of this --config; the others are its bases
                name = str(given) if path == given else f"{given} (through {path.resolve()})"
                defining.append((group, name, _flat(content["model"], "model")))
    pairs = itertools.pairwise(defining)
    for (group, first, earlier), (later_group, later, keys) in pairs:
        if group == later_group:
            continue
        changed = sorted(k for k in keys if k in earlier and earlier[k] != keys[k])
        more = f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        warnings.warn(
            f"{later} and {first} both define a model; the run merges them key by key"
            + (f" (the later one overrides {', '.join(changed[:4])}{more})" if changed else "")
            + ". To test a trained model on other data, keep its config and give the data "
            "alone: --data configs/data/<domain>.yaml.",
            stacklevel=2,
        )


def _extends_of(path: Path) -> list[str]:
    """The ``extends`` list of a YAML config file (empty when it has none)."""
    try:
        content: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigFileError(f"Cannot read config file {path}: {error}") from error
    if isinstance(content, dict) and "class_path" in content:
        raise ConfigFileError(_component_hint(path, str(content["class_path"])))
    if not isinstance(content, dict) or content.get(EXTENDS_KEY) is None:
        return []
    bases = content[EXTENDS_KEY]
    if isinstance(bases, str):
        bases = [bases]
    if not isinstance(bases, list) or not all(isinstance(b, str) for b in bases):
        raise ConfigFileError(
            f"{path}: {EXTENDS_KEY} must be a list of config file paths, got {bases!r}."
        )
    return bases


def _component_hint(path: Path, class_path: str) -> str:
    """Where a file of one component (``class_path`` at its top) goes instead of --config."""
    name = class_path.rsplit(".", 1)[-1]
    if name.endswith("DataModule"):
        where = f"--data {path}"
    elif name.endswith("Module"):
        where = f"--model {path}"
    elif name in ("Segmentor", "Mask2FormerSegmentor") or "models" in class_path:
        where = f"--model.init_args.segmentor {path}"
    else:
        where = f"the key it configures (e.g. --trainer.callbacks+={path})"
    return (
        f"{path} configures one {name} (class_path: {class_path}), not a whole run; give it "
        f"as {where}."
    )
