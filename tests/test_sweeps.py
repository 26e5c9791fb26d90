"""W&B sweep configs: every generated `weft fit` command line parses and sets what it sweeps."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonargparse import ArgumentParser
from wandb.sdk.launch.sweeps.utils import create_sweep_command, create_sweep_command_args

from weft_lightning.config_files import expand_config_args
from weft_lightning.lightning_cli import WEFTLightningCLI, build_cli

REPO = Path(__file__).parents[1]
SWEEPS = sorted((REPO / "configs" / "sweeps").glob("*.yaml"))


@pytest.fixture(scope="module")
def fit_parser() -> ArgumentParser:
    """The `weft` parser (subcommands included), built without instantiating anything."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(WEFTLightningCLI, "instantiate_classes", lambda self: None)
        patch.setattr(WEFTLightningCLI, "_run_subcommand", lambda self, subcommand: None)
        cli = build_cli(["fit", "--config", str(REPO / "configs" / "demo.yaml")])
    return cli.parser


def sample_values(spec: dict[str, Any]) -> list[Any]:
    """Values a sweep parameter can take: its list, its single value, or its range ends."""
    if "values" in spec:
        return list(spec["values"])
    if "value" in spec:
        return [spec["value"]]
    return [spec["min"], spec["max"]]


def assignments(parameters: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Enough assignments that every value of every parameter appears at least once."""
    values = {name: sample_values(spec) for name, spec in parameters.items()}
    count = max(len(v) for v in values.values())
    cycles = {name: itertools.cycle(v) for name, v in values.items()}
    return [{name: next(cycle) for name, cycle in cycles.items()} for _ in range(count)]


def agent_command(sweep: dict[str, Any], assignment: dict[str, Any]) -> list[str]:
    """The command line a W&B agent runs for ``assignment``, built with wandb's own helpers."""
    args = create_sweep_command_args({"args": {k: {"value": v} for k, v in assignment.items()}})
    command: list[str] = []
    for part in create_sweep_command(list(sweep["command"])):
        if part == "${args}":
            command += args["args"]
        elif part != "${env}":
            command.append(str(part))
    return command


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_sweep_is_a_valid_wandb_sweep(path: Path) -> None:
    sweep = yaml.safe_load(path.read_text())
    assert sweep["method"] in ("grid", "random", "bayes")
    assert sweep["metric"] == {"name": "val/sm", "goal": "maximize"}
    assert sweep["command"][:3] == ["${env}", "weft", "fit"] and "${args}" in sweep["command"]
    assert sweep["parameters"]


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_every_sweep_command_parses(
    path: Path, fit_parser: ArgumentParser, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WEFT_DATA_ROOT", str(tmp_path))
    sweep = yaml.safe_load(path.read_text())
    for assignment in assignments(sweep["parameters"]):
        command = agent_command(sweep, assignment)
        assert command[0] == "weft"
        config = fit_parser.parse_args(expand_config_args(command[1:])).fit
        assert config["data.init_args.root"] == str(tmp_path)
        for key, value in assignment.items():
            if key == "config":  # a config file composed last: its values win
                expected = yaml.safe_load((REPO / value).read_text())
                backbone = expected["model"]["init_args"]["segmentor"]["init_args"]["backbone"]
                resolved = config["model.init_args.segmentor.init_args.backbone.init_args"]
                for arg, arg_value in backbone["init_args"].items():
                    assert resolved[arg] == arg_value, (path.name, value, arg)
            else:
                assert config[key] == value, (path.name, key)
