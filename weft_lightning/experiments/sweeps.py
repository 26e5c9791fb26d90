"""The project's W&B sweep files as experiment specs: a grid runs without a W&B server.

A sweep's ``command`` is ``weft fit --config A --config B --key=value ... ${args}``, run from
the repository root: its ``--config`` files become the spec's base (relative to the working
directory), its fixed ``--key=value`` arguments the shared overrides (``${envvar:NAME}`` is
read from the environment), and each combination of the ``values`` of ``parameters`` one
variant, named ``key=value`` by the last part of each key.
"""

from __future__ import annotations

import itertools
import os
import re
from pathlib import Path
from typing import Any

from weft_lightning.experiments.errors import SpecError

__all__ = ["is_sweep", "spec_data_from_sweep"]

_ENVVAR = re.compile(r"\$\{envvar:([A-Za-z_][A-Za-z0-9_]*)\}")


def is_sweep(data: dict[str, Any]) -> bool:
    """A W&B sweep file has ``parameters`` and a ``method``."""
    return "parameters" in data and "method" in data


def _env(source: Path, text: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SpecError(f"{source}: the command reads ${{envvar:{name}}}; set {name}.")
        return os.environ[name]

    return _ENVVAR.sub(value, text)


def _command_parts(source: Path, command: list[str]) -> tuple[list[str], dict[str, str]]:
    """The ``--config`` files and the fixed ``--key=value`` arguments of a sweep command."""
    configs: list[str] = []
    overrides: dict[str, str] = {}
    words = [w for w in command if w not in ("${env}", "${args}", "${interpreter}", "${program}")]
    index = 0
    while index < len(words):
        word = words[index]
        if word in ("--config", "-c") and index + 1 < len(words):
            configs.append(_env(source, words[index + 1]))
            index += 2
            continue
        if word.startswith("--") and "=" in word:
            key, value = word[2:].split("=", 1)
            overrides[key] = _env(source, value)
        index += 1
    return configs, overrides


def _grid(source: Path, parameters: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Fixed parameters and the combinations of the listed values."""
    fixed: dict[str, Any] = {}
    axes: dict[str, list[Any]] = {}
    for key, options in parameters.items():
        if isinstance(options, dict) and "values" in options:
            axes[key] = list(options["values"])
        elif isinstance(options, dict) and "value" in options:
            fixed[key] = options["value"]
        else:
            raise SpecError(
                f"{source}: parameters.{key}: a grid lists `values` (or one `value`); "
                "distributions need a W&B server (`weft experiment run --launcher wandb`)."
            )
    combos = [dict(zip(axes, values, strict=True)) for values in itertools.product(*axes.values())]
    return fixed, combos


def spec_data_from_sweep(source: Path, sweep: dict[str, Any]) -> dict[str, Any]:
    """Spec data (as :func:`weft_lightning.experiments.spec.spec_from_data` reads it) of a grid
    sweep; a random or Bayesian sweep is refused with the way to run it."""
    method = sweep.get("method")
    if method != "grid":
        raise SpecError(
            f"{source}: method: {method} samples its runs on a W&B server; run it with "
            f"`wandb sweep {source}` (a grid sweep also runs with --launcher local)."
        )
    configs, overrides = _command_parts(source, list(sweep.get("command") or []))
    fixed, combos = _grid(source, dict(sweep["parameters"]))
    variants = {}
    for combo in combos:
        name = ",".join(f"{key.rsplit('.', 1)[-1]}={value}" for key, value in combo.items())
        variants[name] = {"overrides": combo}
    return {
        "name": source.stem,
        "base": configs,
        "overrides": {**overrides, **fixed},
        "variants": variants,
    }
