"""Every run's config checked and resolved before any run starts."""

from __future__ import annotations

from collections.abc import Sequence

from jsonargparse import ArgumentError

from weft_lightning.config_files import ConfigFileError
from weft_lightning.experiments.errors import SpecError
from weft_lightning.experiments.plan import Run, override_args
from weft_lightning.experiments.spec import ExperimentSpec
from weft_lightning.lightning_cli import argument_problem, resolved_config

__all__ = ["resolve_configs"]


def _shared_args(spec: ExperimentSpec, extra_args: Sequence[str]) -> list[str]:
    args = [a for path in spec.base for a in ("--config", str(path))]
    return [*args, *override_args(spec.overrides), *extra_args]


def resolve_configs(
    spec: ExperimentSpec, runs: Sequence[Run], extra_args: Sequence[str] = ()
) -> dict[str, str]:
    """The resolved config (YAML) of every run by run name; the first key or value that a run
    cannot use raises :class:`SpecError` naming the spec file and the variant (or the base)."""
    configs: dict[str, str] = {}
    for run in runs:
        try:
            configs[run.name] = resolved_config(run.args)
        except (ArgumentError, ConfigFileError) as error:
            raise SpecError(
                f"{spec.source}: {_culprit(spec, run, extra_args)}: {argument_problem(error)}"
            ) from None
    return configs


def _culprit(spec: ExperimentSpec, run: Run, extra_args: Sequence[str]) -> str:
    """``variants.NAME`` when the shared part parses alone, else the shared part."""
    try:
        resolved_config(_shared_args(spec, extra_args))
    except (ArgumentError, ConfigFileError):
        return "base, overrides or the extra arguments"
    return f"variants.{run.variant}"
