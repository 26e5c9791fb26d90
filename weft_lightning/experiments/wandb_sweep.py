"""The W&B launcher: the experiment's grid registered as a W&B sweep whose agents each run
one (variant, seed) with the local launcher, grouped in W&B by experiment and variant."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from weft_lightning.experiments.errors import SpecError
from weft_lightning.experiments.spec import ExperimentSpec

__all__ = ["register_sweep", "sweep_config"]


def sweep_config(spec: ExperimentSpec, spec_path: Path, extra_args: list[str]) -> dict[str, Any]:
    """A grid sweep over ``variant`` x ``seed``; each agent call runs
    ``weft experiment run SPEC --launcher local --variant V --seed S``."""
    command = ["${env}", "weft", "experiment", "run", str(spec_path), "--launcher", "local"]
    command += ["${args}"]
    if extra_args:
        command += ["--", *extra_args]
    return {
        "name": spec.name,
        "method": "grid",
        "command": command,
        "parameters": {
            "variant": {"values": list(spec.variants)},
            "seed": {"values": list(spec.seeds)},
        },
    }


def register_sweep(config: dict[str, Any], project: str, entity: str | None) -> str:
    """Create the sweep on the W&B server; returns the agent command. Without a server
    (offline or disabled mode) this is refused with the way to run the grid instead."""
    mode = os.environ.get("WANDB_MODE", "").lower()
    if mode in ("offline", "disabled", "dryrun"):
        raise SpecError(
            f"A W&B sweep needs a W&B server, and WANDB_MODE={mode} here; run the same grid "
            "without one: weft experiment run SPEC --launcher local --jobs N."
        )
    import wandb

    try:
        sweep_id = wandb.sweep(config, project=project, entity=entity)
    except Exception as error:  # no login, no network: wandb raises many kinds
        raise SpecError(
            f"Could not register the sweep on the W&B server ({error}); log in with "
            "`wandb login`, or run the grid with --launcher local."
        ) from None
    owner = f"{entity}/" if entity else ""
    return f"wandb agent {owner}{project}/{sweep_id}"
