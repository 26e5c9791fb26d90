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
    """Command-line arguments with every ``--config FILE`` replaced by its stack of files."""
    args = list(argv)
    out: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        value: str | None = None
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
        if len(files) > 1:  # applied: the resolved config names no files relative to others
            out.append(f"--{EXTENDS_KEY}=null")
    return out


def _extends_of(path: Path) -> list[str]:
    """The ``extends`` list of a YAML config file (empty when it has none)."""
    try:
        content: Any = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise ConfigFileError(f"Cannot read config file {path}: {error}") from error
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
