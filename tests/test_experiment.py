"""``weft experiment``: specs checked before any run, the launchers, resumable local runs and
the report of mean ± std over seeds."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import REPO
from PIL import Image

from weft_lightning.callbacks.experiment_run import write_json
from weft_lightning.cli.main import main
from weft_lightning.experiments import (
    ExperimentSpec,
    SpecError,
    build_report,
    load_spec,
    plan_runs,
)
from weft_lightning.experiments.report import write_report
from weft_lightning.experiments.validate import resolve_configs

SPECS = sorted((REPO / "configs" / "experiments").glob("*.yaml"))
TINY = REPO / "configs" / "experiments" / "demo_tiny.yaml"


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_every_committed_spec_resolves(path: Path) -> None:
    spec = load_spec(path)
    runs = plan_runs(spec, seeds=spec.seeds[:1])
    configs = resolve_configs(spec, runs)
    assert len(configs) == len(spec.variants)
    for run in runs:
        config = yaml.safe_load(configs[run.name])
        assert config["seed_everything"] == spec.seeds[0]
        assert Path(config["trainer"]["default_root_dir"]) == run.folder


def _spec(tmp_path: Path, **data: object) -> Path:
    path = tmp_path / "spec.yaml"
    body = {"base": [str(REPO / "configs" / "demo.yaml")], "variants": {"a": {}}}
    body.update(data)
    body.setdefault("output", str(tmp_path / "out"))
    path.write_text(yaml.safe_dump(body))
    return path


@pytest.mark.parametrize(
    ("data", "named"),
    [
        ({"nmae": "x"}, "nmae"),
        ({"variants": {"a": {"configs": ["no_such.yaml"]}}}, "variants.a.configs[0]"),
        ({"variants": {"a": {"overrides": {"model.init_args.lrr": 1}}}}, "variants.a"),
        ({"variants": {"a": {"overrides": {"model.segmentor.backbone.topk": 1}}}}, "topk"),
        ({"baseline": "b"}, "baseline"),
        ({"report": {"metrics": ["sm", "bogus"]}}, "bogus"),
    ],
)
def test_a_bad_spec_fails_before_any_run_with_one_line(
    data: dict, named: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec(tmp_path, **data)
    assert main(["experiment", "run", str(spec), "--jobs", "2"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("weft experiment: error:") and str(spec) in err and named in err
    assert not (tmp_path / "out").exists()


def test_dry_run_prints_every_command(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert main(["experiment", "run", str(TINY), "--dry-run", "--output", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    fits = [line for line in out.splitlines() if line.startswith("weft fit")]
    tests = [line for line in out.splitlines() if line.startswith("weft test")]
    assert len(fits) == len(tests) == 4
    assert all("--ckpt_path=last" in line for line in fits)
    assert "--model.segmentor.backbone.top_k=1" in fits[2] and "--seed_everything=1" in fits[3]
    assert not any(tmp_path.iterdir())  # nothing written


def test_slurm_dry_run_writes_a_valid_array_script(tmp_path: Path) -> None:
    args = ["experiment", "run", str(TINY), "--launcher", "slurm", "--dry-run"]
    assert main([*args, "--output", str(tmp_path)]) == 0
    script = tmp_path / "slurm" / "demo_tiny.sbatch"
    assert subprocess.run(["bash", "-n", str(script)], check=False).returncode == 0
    text = script.read_text()
    assert "#SBATCH --array=0-3" in text and "#SBATCH --gres=gpu:4" in text
    spec = load_spec(TINY)
    spec.output = tmp_path
    runs = plan_runs(spec)
    lines = [line.strip() for line in text.splitlines()]
    for index, run in enumerate(runs):
        branch = lines[lines.index(f"{index})  # {run.name}") :][:5]
        fit, test = shlex.split(branch[3]), shlex.split(branch[4])
        assert fit == ["bash", "scripts/slurm/weft.sbatch", *run.args[1:]]
        assert test == ["srun", "--ntasks=1", "weft", *run.test_args, "--trainer.devices=1"]


def test_wandb_launcher_without_a_server_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert main(["experiment", "run", str(TINY), "--launcher", "wandb"]) == 1
    err = capsys.readouterr().err
    assert "needs a W&B server" in err and "--launcher local" in err
    assert main(["experiment", "run", str(TINY), "--launcher", "wandb", "--dry-run"]) == 0
    sweep = yaml.safe_load(capsys.readouterr().out)
    assert sweep["method"] == "grid"
    assert sweep["parameters"] == {
        "variant": {"values": ["weft", "top1_experts"]},
        "seed": {"values": [0, 1]},
    }


def test_a_grid_sweep_file_runs_as_a_spec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    monkeypatch.setenv("WEFT_DATA_ROOT", "/data/ORSI")
    spec = load_spec("configs/sweeps/top_k.yaml")
    assert list(spec.variants) == [f"top_k={k}" for k in range(1, 8)]
    assert spec.overrides == {"data.root": "/data/ORSI"}
    runs = plan_runs(spec, variants=["top_k=3"])
    config = yaml.safe_load(resolve_configs(spec, runs)["top_k=3/seed42"])
    backbone = config["model"]["init_args"]["segmentor"]["init_args"]["backbone"]
    assert backbone["init_args"]["top_k"] == 3 and config["data"]["init_args"]["root"]
    with pytest.raises(SpecError, match="W&B server"):
        load_spec("configs/sweeps/orsi_lr.yaml")  # Bayesian: sampled by the server


def _write_run(folder: Path, values: dict[str, float] | None, state: str = "done") -> None:
    folder.mkdir(parents=True)
    write_json(folder / "run.json", {"state": state})
    if values is not None:
        metrics = {f"test/EORSSD/{k}": v for k, v in values.items()}
        write_json(folder / "results.json", {"checkpoint": "last.ckpt", "metrics": metrics})


def test_report_means_deltas_best_marks_and_missing_runs(tmp_path: Path) -> None:
    spec = load_spec(_spec(tmp_path, variants={"a": {}, "b": {}, "c": {}}, seeds=[0, 1]))
    spec.report.metrics = ["sm", "mae"]
    spec.baseline = "a"
    values = {
        ("a", 0): (0.80, 0.10),
        ("a", 1): (0.82, 0.08),
        ("b", 0): (0.90, 0.12),
        ("b", 1): (0.86, 0.10),
        ("c", 0): (0.70, 0.05),
    }
    for (variant, seed), (sm, mae) in values.items():
        _write_run(spec.output / variant / f"seed{seed}", {"sm": sm, "mae": mae})
    _write_run(spec.output / "c" / "seed1", None, state="failed")

    report = build_report(spec)
    assert report.partial and report.missing == ["c/seed1: failed"]
    b = report.stat("b", "EORSSD", "sm")
    assert b is not None and b.n == 2 and b.mean == pytest.approx(0.88)
    assert b.std == pytest.approx(0.0282842712)
    assert report.delta("b", "EORSSD", "sm") == pytest.approx(0.07)
    markdown = report.markdown()
    assert "partial: 5 of 6 runs" in markdown and "- c/seed1: failed" in markdown
    assert "**0.8800 ± 0.0283** (+0.0700)" in markdown  # best Sm: b
    assert "**0.0500** (-0.0400)" in markdown  # best MAE (lower): c, one seed
    latex = report.latex()
    assert r"\textbf{0.880}$_{\pm 0.028}$" in latex and r"\underline{0.810}" in latex
    assert r"\textit{0.700}" in latex and r"\textbf{0.050}" in latex
    rows = [line.split(",") for line in report.csv().splitlines()[1:]]
    assert rows[2][:4] == ["b", "EORSSD", "sm", "2"] and rows[2][-1] == "0:0.9;1:0.86"

    written = write_report(report, tmp_path / "report")
    assert {p.suffix for p in written} == {".md", ".csv", ".tex", ".json", ".png"}
    with Image.open(tmp_path / "report" / "report.png") as chart:
        assert chart.size[0] > 200 and chart.size[1] > 200


def _experiment(output: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    command = [sys.executable, "-m", "weft_lightning.cli", "experiment", "run", str(TINY)]
    command += ["--launcher", "local", "--jobs", "2", "--output", str(output)]
    return subprocess.Popen(command, cwd=REPO, env=env, start_new_session=True)


def _finished(output: Path) -> bool:
    return any(
        json.loads(p.read_text()).get("state") == "done" for p in output.glob("*/seed*/run.json")
    )


def _stats(output: Path) -> dict:
    return json.loads((output / "report" / "report.json").read_text())["stats"]


@pytest.mark.slow
def test_local_experiment_resumes_after_a_kill_and_reports_each_runs_test(tmp_path: Path) -> None:
    env = dict(os.environ, WEFT_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    whole = tmp_path / "whole"
    assert _experiment(whole, env).wait() == 0

    killed = tmp_path / "killed"
    process = _experiment(killed, env)
    deadline = time.monotonic() + 300
    while not _finished(killed) and time.monotonic() < deadline:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGKILL)  # the launcher dies; its runs follow it
    process.wait()
    time.sleep(2)
    spec = ExperimentSpec.from_dict(json.loads((killed / "experiment.json").read_text()))
    report = build_report(spec)
    assert report.partial and 1 <= sum(map(len, report.results.values())) < 4

    done = subprocess.run(
        [sys.executable, "-m", "weft_lightning.cli", "experiment", "run", str(TINY),
         "--jobs", "2", "--output", str(killed)],
        cwd=REPO, env=env, capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "finished earlier; skipped" in done.stdout
    assert _stats(killed) == _stats(whole)

    for folder in sorted(killed.glob("*/seed*")):
        summaries = sorted(folder.rglob("summary_test.json"), key=lambda p: p.stat().st_mtime)
        own = json.loads(summaries[-1].read_text())["metrics"]
        assert json.loads((folder / "results.json").read_text())["metrics"] == own
        assert yaml.safe_load((folder / "config.yaml").read_text())["trainer"]["max_epochs"] == 1
        assert json.loads((folder / "progress.json").read_text())["stage"] == "fitted"


def test_a_run_without_a_launcher_record_counts_by_its_results(tmp_path: Path) -> None:
    """SLURM tasks write results.json (the ExperimentRun callback) but no run.json."""
    spec = load_spec(_spec(tmp_path, seeds=[0]))
    folder = spec.output / "a" / "seed0"
    folder.mkdir(parents=True)
    write_json(folder / "results.json", {"metrics": {"test/EORSSD/sm": 0.75}})
    report = build_report(spec)
    assert not report.partial and report.results == {"a": {0: {"EORSSD": {"sm": 0.75}}}}
