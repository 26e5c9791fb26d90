"""The `weft` command end to end: help, config round trip, fit -> test -> predict on the CPU."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from weft_lightning.cli import main

REPO = Path(__file__).parents[1]
TOP_LEVEL_CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml"))


def tiny_demo_args(tmp_path: Path) -> list[str]:
    """The demo config shrunk to a few 64 px images and one small step budget."""
    return [
        "--config",
        str(REPO / "configs" / "demo.yaml"),
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
        "--trainer.max_epochs",
        "1",
        "--trainer.limit_train_batches",
        "2",
        "--data.init_args.num_train",
        "8",
        "--data.init_args.num_test",
        "4",
        "--data.init_args.image_size",
        "64",
        "--data.init_args.augmentation.crop_size",
        "64",
        "--model.init_args.protocol.test.size",
        "64",
        "--model.init_args.protocol.validation.size",
        "64",
        "--data.init_args.batch_size",
        "4",
        "--data.init_args.num_workers",
        "0",
        "--data.init_args.cache_dir",
        str(tmp_path / "cache"),
    ]


@pytest.mark.parametrize("argv", [["--help"], ["fit", "--help"], ["synth", "--help"]])
def test_help(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 0
    assert "usage" in capsys.readouterr().out.lower()


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
