"""Benchmark scripts run end to end at the tiniest size and write sane JSON and tables."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).parents[1]
BENCH = REPO / "benchmarks"
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def run_script(name: str, *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, str(BENCH / name), *args]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_train_step_benchmark_measures_each_method(tmp_path: Path) -> None:
    out = tmp_path / "train.json"
    run_script(
        "bench_train_step.py", "--preset", "tiny", "--method", "weft", "--method", "full",
        "--warmup", "1", "--steps", "1", "--rounds", "2", "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    assert report["settings"]["size"] == 64 and report["settings"]["with_cp"] is True
    assert report["settings"]["rounds"] == 2
    methods = report["methods"]
    assert list(methods) == ["weft", "full"]
    assert methods["weft"]["backbone"] == "WEFTBackbone"
    # full fine-tuning of the same model: WEFT's parameters plus the whole ViT train
    assert methods["full"]["backbone"] == "WEFTBackbone"
    assert methods["full"]["trainable_percent"] == 100.0
    assert methods["full"]["total_params"] == methods["weft"]["total_params"]
    assert 0 < methods["weft"]["trainable_params"] < methods["weft"]["total_params"]
    for result in methods.values():
        assert result["step_ms"] > 0 and result["images_per_s"] > 0
        assert 0 < result["peak_mem_mib"] < 4096
        assert math.isfinite(result["last_loss"])
    for result in methods.values():  # two rounds, each method in fresh processes each time
        assert len(result["round_step_ms"]) == 2 and result["step_ms"] in result["round_step_ms"]
        assert result["step_ms_min"] <= min(result["round_step_ms"])
    assert methods["full"]["round_time_vs_full"] == [1.0, 1.0]
    assert methods["full"]["time_vs_full"] == 1.0 and methods["full"]["memory_vs_full"] == 1.0
    ratio = methods["weft"]["step_ms"] / methods["full"]["step_ms"]
    assert methods["weft"]["time_vs_full"] == pytest.approx(ratio)
    table = out.with_suffix(".md").read_text()
    assert "| weft |" in table and "| full |" in table and "time / full" in table


def test_inference_benchmark_covers_modes_and_precisions(tmp_path: Path) -> None:
    out = tmp_path / "inference.json"
    run_script(
        "bench_inference.py", "--preset", "tiny", "--warmup", "1", "--repeats", "1",
        "--device", "cpu", "--out", str(out),
    )  # fmt: skip
    report = json.loads(out.read_text())
    settings = report["settings"]
    assert (settings["size"], settings["crop"]) == (96, 64)
    rows = report["results"]
    assert {(r["mode"], r["precision"]) for r in rows} == {
        (m, p) for m in ("whole", "slide") for p in ("fp32", "bf16")
    }
    for row in rows:
        assert row["latency_ms"] > 0 and row["compile"] is False
        assert row["images_per_s"] == pytest.approx(1000 / row["latency_ms"])
        assert 0 <= row["mean_prob"] <= 1
    whole = next(r for r in rows if r["mode"] == "whole" and r["precision"] == "fp32")
    slide = next(r for r in rows if r["mode"] == "slide" and r["precision"] == "fp32")
    assert (slide["crops_per_image"], whole["crops_per_image"]) == (4, 1)  # 2x2 64-px windows

    readme = run_script("common.py", "readme", str(tmp_path)).stdout.strip()
    text = Path(readme).read_text()
    assert "## inference.json" in text and "| slide | bf16 |" in text


def test_bad_arguments_give_one_clear_error(tmp_path: Path) -> None:
    command = [sys.executable, str(BENCH / "bench_train_step.py"), "--size", "100"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO)
    assert done.returncode == 2 and "--size 100: use a multiple of 32" in done.stderr
    command = [sys.executable, str(BENCH / "bench_train_step.py"), "--rounds", "0"]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO)
    assert done.returncode == 2 and "--rounds 0: use 1 or more" in done.stderr
    command = [sys.executable, str(BENCH / "bench_inference.py"), "--config", "nope.yaml"]
    command += ["--out", str(tmp_path / "x.json")]
    done = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO)
    assert done.returncode == 2 and "nope.yaml does not exist" in done.stderr
