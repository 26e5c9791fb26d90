"""``weft eval`` on real PNG folders against pysodmetrics, file problems, tables and curves."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from metric_reference import assert_close, noisy_prediction, reference_values
from PIL import Image

from weft_lightning.cli.evaluate import main
from weft_lightning.evaluation import format_table, to_latex
from weft_lightning.metrics import METRIC_KEYS


def _make_folders(shared: Path, root: Path, dataset: str, count: int, seed: int) -> dict:
    """Copy real masks, write noisy 8-bit prediction PNGs; return the expected arrays."""
    rng = np.random.default_rng(seed)
    gt_dir, pred_dir = root / dataset / "masks", root / "preds" / dataset
    gt_dir.mkdir(parents=True)
    pred_dir.mkdir(parents=True)
    pairs = {}
    for path in sorted((shared / "samples" / dataset / "masks").iterdir())[:count]:
        shutil.copy(path, gt_dir / path.name)
        gt = np.array(Image.open(path).convert("L"))
        pred = noisy_prediction(gt, rng)
        Image.fromarray(pred).save(pred_dir / f"{path.stem}.png")
        pairs[path.stem] = (pred, gt)
    return {"gt": gt_dir, "pred": pred_dir, "pairs": pairs}


@pytest.fixture
def folders(real_data: Path, tmp_path: Path) -> dict:
    return {
        "CAMO": _make_folders(real_data, tmp_path, "CAMO", 4, 0),
        "Kvasir-SEG": _make_folders(real_data, tmp_path, "Kvasir-SEG", 3, 1),  # JPEG masks
        "root": tmp_path,
    }


def test_folder_matches_pysodmetrics_and_writes_every_format(folders: dict, tmp_path: Path) -> None:
    camo = folders["CAMO"]
    out = tmp_path / "out"
    status = main(
        [
            "--pred-dir",
            str(camo["pred"]),
            "--gt-dir",
            str(camo["gt"]),
            "--method",
            "noisy",
            "--json",
            str(out / "r.json"),
            "--csv",
            str(out / "r.csv"),
            "--latex",
            str(out / "r.tex"),
            "--curves",
            str(out / "curves"),
        ]
    )
    assert status == 0
    got = json.loads((out / "r.json").read_text())["results"]["noisy"]["CAMO"]
    assert_close(got, reference_values(list(camo["pairs"].values())), 1e-9)
    csv_lines = (out / "r.csv").read_text().splitlines()
    assert csv_lines[0].split(",")[3:] == list(METRIC_KEYS) and csv_lines[1].startswith(
        "noisy,CAMO,4,"
    )
    assert r"\multicolumn{14}{c}{CAMO}" in (out / "r.tex").read_text()
    for name in ("CAMO_pr.png", "CAMO_fm.png"):
        with Image.open(out / "curves" / name) as image:
            assert image.size[0] > 200


def test_spec_of_methods_and_datasets(folders: dict, tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "datasets:\n  CAMO: CAMO/masks\n  Kvasir-SEG: {mask: Kvasir-SEG/masks}\n"
        "methods:\n  noisy: preds/{dataset}\n  partial:\n    CAMO: preds/CAMO\n"
        "  absent: nowhere/{dataset}\n"
    )
    out = tmp_path / "r.json"
    assert main(["--spec", str(spec), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    for dataset in ("CAMO", "Kvasir-SEG"):
        pairs = list(folders[dataset]["pairs"].values())
        assert_close(report["results"]["noisy"][dataset], reference_values(pairs), 1e-9)
    assert report["results"]["partial"]["CAMO"] == report["results"]["noisy"]["CAMO"]
    assert len(report["skipped"]) == 2 and "absent" in report["skipped"][0]


def test_unpaired_and_resized_files_are_listed(
    folders: dict, capsys: pytest.CaptureFixture
) -> None:
    camo = folders["CAMO"]
    stems = sorted(camo["pairs"])
    (camo["pred"] / f"{stems[0]}.png").unlink()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(camo["pred"] / "stray.png")
    small = camo["pairs"][stems[1]][0][::2, ::2]
    Image.fromarray(small).save(camo["pred"] / f"{stems[1]}.png")
    args = ["--pred-dir", str(camo["pred"]), "--gt-dir", str(camo["gt"])]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert f"1 mask(s) without a prediction: {stems[0]}" in err
    assert "1 prediction(s) without a mask: stray" in err
    assert f"resized to their mask's size: {stems[1]}" in err
    assert main([*args, "--strict"]) == 1


def test_unreadable_file_is_a_clear_error(folders: dict, capsys: pytest.CaptureFixture) -> None:
    camo = folders["CAMO"]
    broken = sorted(camo["pred"].iterdir())[0]
    broken.write_bytes(b"not a png")
    assert main(["--pred-dir", str(camo["pred"]), "--gt-dir", str(camo["gt"])]) == 1
    assert str(broken) in capsys.readouterr().err


def test_spec_errors_name_the_key(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text("datasets:\n  A: a\nmethods:\n  M:\n    B: b\n")
    assert main(["--spec", str(spec)]) == 1
    assert "methods.M names datasets ['B']" in capsys.readouterr().err


def test_sixteen_bit_and_rgb_predictions_read_as_8bit(folders: dict, tmp_path: Path) -> None:
    camo = folders["CAMO"]
    stems = sorted(camo["pairs"])
    pred16 = camo["pairs"][stems[0]][0].astype(np.uint16) * 257  # v/255 * 65535
    Image.fromarray(pred16).save(camo["pred"] / f"{stems[0]}.png")
    rgb = np.repeat(camo["pairs"][stems[1]][0][..., None], 3, axis=2)
    (camo["pred"] / f"{stems[1]}.png").unlink()
    Image.fromarray(rgb).save(camo["pred"] / f"{stems[1]}.png")
    out = tmp_path / "r.json"
    args = ["--pred-dir", str(camo["pred"]), "--gt-dir", str(camo["gt"]), "--method", "m"]
    assert main([*args, "--json", str(out)]) == 0
    got = json.loads(out.read_text())["results"]["m"]["CAMO"]
    assert_close(got, reference_values(list(camo["pairs"].values())), 1e-9)


def test_latex_marks_best_three_per_column() -> None:
    results = {
        m: {"D": {"sm": sm, "mae": mae}}
        for m, sm, mae in (("a", 0.9, 0.04), ("b", 0.8, 0.03), ("c", 0.7, 0.05), ("d", 0.6, 0.02))
    }
    rows = {line.split(" & ")[0]: line for line in to_latex(results, ["sm", "mae"]).splitlines()}
    assert r"\textbf{0.900}" in rows["a"] and r"\underline{0.800}" in rows["b"]
    assert r"\textit{0.700}" in rows["c"] and " 0.600 " in rows["d"]
    assert r"\textbf{0.020}" in rows["d"] and r"\underline{0.030}" in rows["b"]  # MAE: lower wins


def test_format_table_is_concise() -> None:
    table = format_table({"ECSSD": {"sm": 0.91234, "mae": 0.0345}, "DUTS": {"sm": 0.8}})
    lines = table.splitlines()
    assert len(lines) == 4 and "Sm" in lines[0] and "MAE" in lines[0]
    assert "0.9123" in lines[2] and lines[3].rstrip().endswith("- |")


def test_in_training_values_equal_values_from_saved_pngs(tmp_path: Path) -> None:
    """SODMetrics on float probabilities == weft eval on the PNGs the prediction writer saves."""
    import torch

    from weft_lightning.callbacks.prediction_writer import to_uint8
    from weft_lightning.metrics import SODMetrics

    gen = torch.Generator().manual_seed(0)
    (tmp_path / "p").mkdir()
    (tmp_path / "g").mkdir()
    probs, masks = [], []
    for i, (h, w) in enumerate(((37, 52), (64, 41), (50, 50))):
        prob = torch.rand(h, w, generator=gen) ** 2
        mask = (torch.rand(h, w, generator=gen) > 0.6).to(torch.uint8) * 255
        Image.fromarray(to_uint8(prob)).save(tmp_path / "p" / f"{i}.png")
        Image.fromarray(mask.numpy()).save(tmp_path / "g" / f"{i}.png")
        probs.append(prob)
        masks.append(mask)
    metric = SODMetrics()
    metric.update(probs, masks)
    out = tmp_path / "r.json"
    args = ["--pred-dir", str(tmp_path / "p"), "--gt-dir", str(tmp_path / "g"), "--method", "m"]
    assert main([*args, "--dataset", "d", "--json", str(out)]) == 0
    saved = json.loads(out.read_text())["results"]["m"]["d"]
    assert saved == {k: float(v) for k, v in metric.compute().items()}


def test_rgb_jpeg_predictions_are_scored_with_a_one_line_note(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    preds, gts = tmp_path / "preds", tmp_path / "ECSSD" / "masks"
    preds.mkdir()
    gts.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        gt = (rng.random((20, 24)) > 0.5).astype(np.uint8) * 255
        Image.fromarray(gt).save(gts / f"m{i}.png")
        Image.fromarray(np.stack([gt] * 3, axis=2)).save(preds / f"m{i}.jpg", quality=95)
    assert main(["--pred-dir", str(preds), "--gt-dir", str(gts)]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if "not all 8-bit grayscale PNGs" in line]
    assert len(notes) == 1 and "3 JPEG RGB" in notes[0]
    assert "ECSSD" in captured.out  # named by the dataset, not by its mask folder
