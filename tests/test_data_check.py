"""`weft data check`: real EORSSD is clean with its known oddities; a bad tree names each file."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weft_lightning.cli.data import main
from weft_lightning.data.check import check_dataset


def _pair(folder: Path, stem: str, size: tuple[int, int] = (40, 32), fg: bool = True) -> None:
    """Write images/<stem>.jpg and masks/<stem>.png of size (W, H)."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(stem))
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(image).save(folder / "images" / f"{stem}.jpg")
    mask = np.zeros((size[1], size[0]), np.uint8)
    if fg:
        mask[4:12, 5:20] = 255
    Image.fromarray(mask).save(folder / "masks" / f"{stem}.png")


@pytest.fixture()
def bad_tree(tmp_path: Path) -> tuple[Path, list[str]]:
    root = tmp_path / "bad"
    train, test = root / "train", root / "test"
    for i in range(4):
        _pair(train, f"ok{i}")
    _pair(test, "fine")
    bad = []
    # truncated JPEG image
    _pair(train, "cut")
    data = (train / "images" / "cut.jpg").read_bytes()
    (train / "images" / "cut.jpg").write_bytes(data[: len(data) // 2])
    bad.append("train/images/cut.jpg")
    # zero-byte PNG mask
    _pair(train, "zero")
    (train / "masks" / "zero.png").write_bytes(b"")
    bad.append("train/masks/zero.png")
    # text file named .png
    _pair(train, "text")
    (train / "masks" / "text.png").write_text("this is not a mask\n")
    bad.append("train/masks/text.png")
    # image without mask, mask without image
    _pair(train, "lonely")
    (train / "masks" / "lonely.png").unlink()
    bad.append("train/images/lonely.jpg")
    _pair(test, "orphan")
    (test / "images" / "orphan.jpg").unlink()
    bad.append("test/masks/orphan.png")
    # size mismatch
    _pair(test, "shifted")
    Image.new("L", (20, 20)).save(test / "masks" / "shifted.png")
    bad.append("test/masks/shifted.png")
    # two images with the same stem
    _pair(test, "twin")
    Image.new("RGB", (40, 32)).save(test / "images" / "twin.png")
    bad.append("test/images/twin.png")
    # non-image file
    (test / "images" / "notes.txt").write_text("labelled by hand\n")
    bad.append("test/images/notes.txt")
    # empty folder (validation split without images)
    (root / "val" / "images").mkdir(parents=True)
    (root / "val" / "masks").mkdir(parents=True)
    bad.append("val/images")
    return root, bad


def test_bad_tree_exits_1_and_names_every_bad_file(
    bad_tree: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, bad = bad_tree
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    problems = out.split("Problems (")[1].split("Warnings")[0]
    for rel in bad:
        assert str(root / rel) in problems, rel
    for good in ("ok0.jpg", "ok3.png", "fine.jpg"):
        assert good not in problems
    for kind in (
        "unreadable file",
        "image without mask",
        "mask without image",
        "size mismatch",
        "duplicate stem",
        "non-image file",
        "empty folder",
    ):
        assert kind in problems, kind
    assert "truncated" in problems and "empty (0 bytes)" in problems
    assert "PROBLEMS FOUND" in out and "exit status 1" in out


def test_clean_tree_exits_0_with_statistics_and_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(3):
        _pair(tmp_path / "ds" / "train", f"a{i}", size=(40 + 8 * i, 32))
    _pair(tmp_path / "ds" / "test", "b0", fg=False)
    report_file = tmp_path / "report.json"
    assert main(["check", str(tmp_path / "ds"), "--json", str(report_file)]) == 0
    out = capsys.readouterr().out
    assert "split train: 3 images, 3 masks, 3 usable pairs" in out
    assert "40x32 .. 56x32 (3 distinct)" in out
    assert "Problems: none" in out and "empty mask (1)" in out
    report = json.loads(report_file.read_text())
    train = next(s for s in report["splits"] if s["split"] == "train")
    fraction = 8 * 15 / (32 * 40)
    assert train["foreground"]["max"] == pytest.approx(fraction)
    assert len(train["mean"]) == 3 and 0.3 < train["mean"][0] < 0.7


def test_explicit_folders_and_usage_errors(
    bad_tree: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    root, _ = bad_tree
    test = root / "test"
    report = check_dataset(images=test / "images", masks=test / "masks", workers=2)
    assert not report.ok and [s.split for s in report.splits] == ["custom"]
    assert main(["check", "--images", str(root / "train" / "images")]) == 1  # images only
    assert "cut.jpg" in capsys.readouterr().out
    assert main(["check"]) == 2
    assert main(["check", str(root / "missing")]) == 1
    assert "does not exist" in capsys.readouterr().out


def test_real_eorssd_is_clean_with_its_known_oddities(
    full_eorssd: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    start = time.perf_counter()
    assert main(["check", str(full_eorssd), "--max-list", "0"]) == 0
    elapsed = time.perf_counter() - start
    out = capsys.readouterr().out
    assert "known dataset EORSSD" in out
    assert "split train: 1400 images, 1400 masks, 1400 usable pairs" in out
    assert "split test: 600 images, 600 masks, 600 usable pairs" in out
    assert re.search(r"empty masks: 18, non-binary masks: 5, mask modes: L 595, RGB 4, RGBA 1", out)
    assert re.search(r"empty masks: 52, non-binary masks: 0, mask modes: L 1400", out)
    assert "empty mask (70)" in out and "RGB mask (4)" in out and "RGBA mask (1)" in out
    assert "Problems: none" in out and "exit status 0" in out
    assert "180x144 .. 2146x1241" in out
    assert elapsed < 60


def test_weft_cli_dispatches_data_check(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from weft_lightning.cli import main as weft

    _pair(tmp_path / "train", "x")
    assert weft(["data", "check", str(tmp_path)]) == 0
    assert "split train: 1 images" in capsys.readouterr().out


def test_folder_of_datasets_checks_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _pair(tmp_path / "EORSSD" / "train", "a")
    _pair(tmp_path / "EORSSD" / "test", "b")
    _pair(tmp_path / "ECSSD", "c")
    (tmp_path / "notes").mkdir()
    assert main(["check", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "split ECSSD/test: 1 images" in out and "split EORSSD/train: 1 images" in out
    assert "Dataset EORSSD: train split has 1 images" in out
    assert "Dataset ECSSD: test split has 1 images" in out


def test_images_without_masks_exit_1_naming_the_folders(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "ds" / "images"
    images.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / f"a{i}.jpg")
    assert main(["check", str(tmp_path / "ds")]) == 1
    out = capsys.readouterr().out
    assert "no usable pairs" in out and str(images) in out and "no mask folder" in out


def test_os_litter_is_ignored_with_a_count(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for i in range(2):
        _pair(tmp_path / "ds" / "train", f"a{i}")
    _pair(tmp_path / "ds" / "test", "b0")
    for folder in ("train/images", "train/masks"):
        (tmp_path / "ds" / folder / ".DS_Store").write_bytes(b"\x00\x01")
    (tmp_path / "ds" / "train" / "images" / "Thumbs.db").write_bytes(b"\x00")
    assert main(["check", str(tmp_path / "ds")]) == 0
    out = capsys.readouterr().out
    assert "Problems: none" in out and "2 OS/hidden files (.DS_Store, Thumbs.db)" in out
