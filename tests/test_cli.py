"""The `weft` command end to end: help, config round trip, fit -> test -> predict on the CPU."""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import tiny_demo_args
from PIL import Image

import weft_lightning
from weft_lightning.cli import main

REPO = Path(__file__).parents[1]
TOP_LEVEL_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml"))


COMMANDS = [[], ["fit"], ["test"], ["synth"], ["eval"], ["data"], ["data", "check"], ["info"]]
COMMANDS += [["convert"], ["convert", "uniperceiver"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(["weft", *c]))
def test_every_command_answers_help_and_version(
    command: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*command, "--help"]) == 0
    assert "usage" in capsys.readouterr().out.lower()
    assert main([*command, "--version"]) == 0
    assert capsys.readouterr().out.strip() == f"weft-lightning {weft_lightning.__version__}"


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("--model.init_args.protocol.test.mode", "'whole', 'slide'"),
        ("--model.init_args.protocol.validation.resize", "'short_side', 'fixed'"),
        ("--model.init_args.segmentor.init_args.backbone.init_args.dispatch", "'dense', 'sparse'"),
        ("--data.init_args.augmentation.rescale", "'keep_ratio', 'short_side'"),
        ("--nan_guard.action", "'stop', 'skip'"),
    ],
)
def test_a_bad_mode_fails_at_parse_time_naming_the_choices(
    key: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(REPO / "configs" / "demo.yaml")
    assert main(["fit", "--config", config, key, "bogus", "--print_config"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("weft: error:") and allowed in err and "bogus" in err


@pytest.mark.parametrize(
    ("key", "allowed"),
    [
        ("--data.init_args.domain", "'orsi', 'cod', 'sod', 'polyp'"),
        ("--data.init_args.recipe", "'paper', 'project'"),
    ],
)
def test_a_bad_domain_or_recipe_fails_at_parse_time(
    key: str, allowed: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(REPO / "configs" / "orsi" / "eorssd.yaml")
    assert main(["fit", "--config", config, key, "bogus", "--print_config"]) == 2
    assert allowed in capsys.readouterr().err


def readme_commands() -> list[list[str]]:
    """The `weft fit|test|predict ...` lines of the README, with its shell variables filled."""
    text = (REPO / "README.md").read_text()
    variables = dict(re.findall(r"^\s*([A-Z]+)=(\S+)$", text, flags=re.MULTILINE))
    commands = []
    for line in re.findall(r"^\s*weft ((?:fit|test|validate|predict) .*)$", text, re.MULTILINE):
        line = line.split("#")[0].split(">")[0]
        for name, value in variables.items():
            line = line.replace(f"${name}", value)
        if "my_run.yaml" not in line and "lightning_logs" not in line:  # files runs write
            commands.append(line.split())
    return commands


def test_two_configs_that_each_define_a_model_warn_which_keys_the_later_overrode(
    capsys: pytest.CaptureFixture[str],
) -> None:
    demo, cod = REPO / "configs" / "demo.yaml", REPO / "configs" / "cod" / "cod.yaml"
    pattern = (
        r"cod/cod\.yaml \(through .*/configs/paper\.yaml\) and .*/configs/demo\.yaml both define "
        r"a model; .* \(the later one overrides model\.init_args\.protocol, .*--data configs"
    )
    with pytest.warns(UserWarning, match=pattern):
        assert main(["fit", "--config", str(demo), "--config", str(cod), "--print_config"]) == 0


@pytest.mark.parametrize(
    ("component", "flag"),
    [("model/weft_t.yaml", "--model.init_args.segmentor"), ("data/folder.yaml", "--data")],
)
def test_a_component_config_given_as_a_run_config_is_one_line_naming_its_flag(
    component: str, flag: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = REPO / "configs" / component
    assert main(["fit", "--config", str(path), "--print_config"]) == 1
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("weft: error: ") and f"give it as {flag} {path}." in line


@pytest.mark.parametrize("command", readme_commands(), ids=" ".join)
def test_every_readme_command_parses(
    command: list[str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)
    assert main([*command, "--print_config"]) == 0, capsys.readouterr().err


@pytest.mark.parametrize("config", TOP_LEVEL_CONFIGS, ids=lambda p: p.name)
def test_print_config_round_trip(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["fit", "--config", str(config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(printed)
    assert main(["fit", "--config", str(resolved), "--print_config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load(printed)


def test_fit_test_predict_writes_original_size_maps(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_demo_args(tmp_path)
    assert main(["fit", *args]) == 0
    checkpoints = list((tmp_path / "run").rglob("*.ckpt"))
    assert any(p.name == "last.ckpt" for p in checkpoints)

    assert main(["test", *args, "--ckpt_path", "best"]) == 0
    out = capsys.readouterr().out
    assert "synthetic" in out and "sm" in out.lower()
    maps = sorted((tmp_path / "run" / "predictions" / "synthetic").glob("*.png"))
    assert len(maps) == 4

    predict_dir = tmp_path / "photos"
    predict_dir.mkdir()
    for i, (w, h) in enumerate([(70, 50), (33, 97)]):
        Image.fromarray(np.random.default_rng(i).integers(0, 255, (h, w, 3), np.uint8)).save(
            predict_dir / f"img{i}.jpg"
        )
    assert (
        main(
            [
                "predict",
                *args,
                "--ckpt_path",
                "last",
                "--data.init_args.predict_dir",
                str(predict_dir),
            ]
        )
        == 0
    )
    written = tmp_path / "run" / "predictions" / "photos"
    sizes = {p.stem: Image.open(p).size for p in written.glob("*.png")}
    assert sizes == {"img0": (70, 50), "img1": (33, 97)}
    assert Image.open(written / "img0.png").mode == "L"


def test_info_reports_parts(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--config", str(REPO / "configs" / "demo.yaml")]) == 0
    report = json.loads(capsys.readouterr().out)
    parts = report["parts"]
    assert parts["backbone"]["trainable"] == 0 and parts["backbone"]["params"] > 0
    assert report["trainable_params"] == sum(p["trainable"] for p in parts.values())
    assert 0 < report["trainable_percent"] < 100


def test_missing_checkpoint_is_one_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_demo_args(tmp_path)
    assert main(["test", *args, "--ckpt_path", "best"]) == 1
    err = capsys.readouterr().err
    assert "No 'best' checkpoint found" in err and "Traceback" not in err


def test_checkpoints_load_weights_only_unless_told_otherwise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """torch's own default is False before 2.6; `weft` passes weights_only=True explicitly."""
    import lightning as L

    seen: list[dict] = []
    original = L.Trainer.test

    @functools.wraps(original)  # keeps the signature LightningCLI builds the parser from
    def record(self: L.Trainer, **kwargs: object) -> list:
        seen.append(kwargs)
        return []

    monkeypatch.setattr(L.Trainer, "test", record)
    args = tiny_demo_args(tmp_path)
    assert main(["test", *args]) == 0
    assert main(["test", *args, "--weights_only=false"]) == 0
    assert [kwargs["weights_only"] for kwargs in seen] == [True, False]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ["--model.init_args.lrr", "1"],
            "model: Option 'lrr' is not accepted (did you mean 'lr'?)",
        ),
        (["--trainer.max_stepz", "1"], "(did you mean 'max_steps'?)"),
        (
            ["--model.init_args.segmentor.init_args.backbone.init_args.topk", "1"],
            "model.segmentor.backbone: Option 'topk' is not accepted (did you mean 'top_k'?)",
        ),
    ],
)
def test_a_misspelled_key_gets_one_line_with_the_closest_key(
    args: list[str], expected: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(REPO / "configs" / "demo.yaml")
    assert main(["fit", "--config", config, *args, "--print_config"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("weft: error:") and expected in err[0], err


def test_a_demo_model_is_tested_on_a_cod_folder_with_the_readme_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`weft test --config RUN_CONFIG --ckpt_path best --data configs/data/cod_present.yaml`:
    the model from the trained run, the data from the data config alone."""

    assert main(["fit", *tiny_demo_args(tmp_path)]) == 0
    run_config = next((tmp_path / "run").rglob("config.yaml"))
    camo = tmp_path / "COD" / "TestDataset" / "CAMO"
    for sub, target in (("images", "Imgs"), ("masks", "GT")):
        shutil.copytree(REPO / "tests" / "data" / "samples" / "CAMO" / sub, camo / target)
    data = str(REPO / "configs" / "data" / "cod_present.yaml")
    command = ["test", "--config", str(run_config), "--ckpt_path", "best", "--data", data]
    command += ["--data.init_args.root", str(tmp_path / "COD"), "--data.init_args.num_workers", "0"]
    assert main(command) == 0
    summaries = sorted(
        (tmp_path / "run").rglob("summary_test.json"), key=lambda p: p.stat().st_mtime
    )
    tested = json.loads(summaries[-1].read_text())["metrics"]
    assert set(k.split("/")[1] for k in tested) == {"CAMO"}

    scores = tmp_path / "eval.json"
    maps = tmp_path / "run" / "predictions" / "CAMO"
    assert (
        main(["eval", "--pred-dir", str(maps), "--gt-dir", str(camo / "GT"), "--json", str(scores)])
        == 0
    )
    capsys.readouterr()
    evaluated = json.loads(scores.read_text())["results"]["CAMO"]["CAMO"]  # method, dataset
    for key, value in tested.items():
        assert evaluated[key.split("/")[2]] == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("root", [None, "missing"])
def test_a_missing_data_root_is_one_line_naming_it(
    root: str | None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(REPO / "configs" / "data" / "cod_present.yaml")
    args = ["test", "--config", str(REPO / "configs" / "demo.yaml"), "--data", data]
    args += ["--trainer.default_root_dir", str(tmp_path / "run")]
    if root is not None:
        args += ["--data.root", str(tmp_path / root)]
    assert main(args) == 1
    err = [line for line in capsys.readouterr().err.splitlines() if "error:" in line]
    assert len(err) == 1 and "No test sets under data.root=" in err[0], err
    assert (str(tmp_path / root) + " (does not exist)" if root else "null (not set)") in err[0]
