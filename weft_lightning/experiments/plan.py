"""The runs of an experiment: one (variant, seed) each, with its folder and its commands."""

from __future__ import annotations

import json
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from weft_lightning.experiments.errors import SpecError
from weft_lightning.experiments.spec import ExperimentSpec

__all__ = ["Run", "override_args", "plan_runs", "run_folder"]


@dataclass(frozen=True)
class Run:
    """One (variant, seed) of an experiment: ``weft fit`` then ``weft test`` in ``folder``."""

    experiment: str
    variant: str
    seed: int
    folder: Path
    args: tuple[str, ...]  # configs, overrides, seed and root shared by fit and test
    test_checkpoint: str = "last"

    @property
    def name(self) -> str:
        """``variant/seed<k>``."""
        return f"{self.variant}/seed{self.seed}"

    @property
    def fit_args(self) -> list[str]:
        """Arguments of ``weft``: fit, resuming from the run's newest valid checkpoint."""
        return ["fit", *self.args, "--ckpt_path=last"]

    @property
    def test_args(self) -> list[str]:
        """Arguments of ``weft``: test of the run's last (or best) checkpoint."""
        return ["test", *self.args, f"--ckpt_path={self.test_checkpoint}"]

    def command_lines(self) -> list[str]:
        """The two shell commands of the run, as a user would type them."""
        return [shlex.join(["weft", *args]) for args in (self.fit_args, self.test_args)]


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def override_args(overrides: dict[str, Any]) -> list[str]:
    """``--key=value`` arguments (lists, dicts, numbers and booleans as JSON)."""
    return [f"--{key}={_value(value)}" for key, value in overrides.items()]


def run_folder(spec: ExperimentSpec, variant: str, seed: int) -> Path:
    """``<output>/<variant>/seed<k>``."""
    return spec.output / variant / f"seed{seed}"


def plan_runs(
    spec: ExperimentSpec,
    extra_args: Sequence[str] = (),
    variants: Sequence[str] | None = None,
    seeds: Sequence[int] | None = None,
) -> list[Run]:
    """Every (variant, seed) run of ``spec``, variants in spec order; ``variants``/``seeds``
    select a part (unknown names are an error); ``extra_args`` go to every command."""
    for name in variants or ():
        if name not in spec.variants:
            raise SpecError(
                f"{spec.source}: no variant {name!r} (variants: {', '.join(spec.variants)})."
            )
    for seed in seeds or ():
        if seed not in spec.seeds:
            raise SpecError(f"{spec.source}: seed {seed} is not in seeds {spec.seeds}.")
    runs = []
    for variant in spec.variants:
        if variants and variant not in variants:
            continue
        for seed in spec.seeds:
            if seeds and seed not in seeds:
                continue
            folder = run_folder(spec, variant, seed)
            args = [a for path in spec.variant_configs(variant) for a in ("--config", str(path))]
            args += override_args(spec.overrides)
            args += override_args(spec.variants[variant].overrides)
            args += list(extra_args)
            args += [f"--seed_everything={seed}", f"--trainer.default_root_dir={folder}"]
            runs.append(Run(spec.name, variant, seed, folder, tuple(args), spec.test_checkpoint))
    return runs
