"""The Python API: build a model from configs, load a trained run, predict like `weft predict`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import REPO, tiny_demo_args
from PIL import Image

from weft_lightning.api import build_model, load_model, predict
from weft_lightning.cli import main
from weft_lightning.module import WEFTModule

LOAD_AND_PREDICT = """
import json, sys
import numpy as np
from weft_lightning.api import load_model, predict
model = load_model(sys.argv[1])
prob = predict(model, sys.argv[2])
np.save(sys.argv[3], prob)
print(json.dumps({"checkpoint": str(model.checkpoint), "protocol": model.protocol.mode}))
"""


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    tmp = tmp_path_factory.mktemp("api")
    args = tiny_demo_args(tmp)
    assert main(["fit", *args, "--trainer.logger", "false"]) == 0
    return tmp / "run", args


def test_load_model_then_predict_equals_weft_predict(
    trained_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    """In a fresh process, load_model(run dir) + predict(image) gives the map that
    `weft predict` writes for that image, to 1/255, at the image's size."""
    run_dir, args = trained_run
    images = tmp_path / "scenes"
    images.mkdir()
    rng = np.random.default_rng(0)
    image = images / "scene.png"
    Image.fromarray(rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)).save(image)
    predict_args = ["predict", *args, "--ckpt_path", "best", "--data.init_args.predict_dir"]
    assert main([*predict_args, str(images), "--trainer.logger", "false"]) == 0
    written = np.asarray(Image.open(run_dir / "predictions" / "scenes" / "scene.png"), np.float64)

    out = tmp_path / "prob.npy"
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_PREDICT, str(run_dir), str(image), str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(report["checkpoint"]).suffix == ".ckpt"
    prob = np.load(out)
    assert prob.shape == (70, 90) and prob.dtype == np.float32
    assert np.abs(prob * 255 - written).max() <= 1.0


def test_predict_a_folder_gives_one_map_per_image(
    trained_run: tuple[Path, list[str]], tmp_path: Path
) -> None:
    run_dir, _ = trained_run
    model = load_model(run_dir)
    for name, size in (("a", (40, 50)), ("b", (64, 64))):
        Image.new("RGB", size[::-1], (90, 120, 60)).save(tmp_path / f"{name}.jpg")
    maps = predict(model, tmp_path)
    assert set(maps) == {"a", "b"}
    assert maps["a"].shape == (40, 50) and maps["b"].shape == (64, 64)
    assert all(m.min() >= 0 and m.max() <= 1 for m in maps.values())
    array = np.asarray(Image.open(tmp_path / "a.jpg"))
    assert np.array_equal(predict(model, array), maps["a"])  # an array gives the same map


def test_load_model_names_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nothing\.ckpt"):
        load_model(tmp_path / "nothing.ckpt")
    with pytest.raises(FileNotFoundError, match="No 'last' checkpoint"):
        load_model(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        predict(None, tmp_path / "missing.png")  # type: ignore[arg-type]


def test_build_model_from_a_segmentor_file_or_a_run_config() -> None:
    segmentor_file = REPO / "configs" / "model" / "weft_demo.yaml"
    from_file = build_model(segmentor_file)
    from_run = build_model([REPO / "configs" / "demo.yaml"])
    assert isinstance(from_file, WEFTModule) and isinstance(from_run, WEFTModule)
    assert type(from_file.segmentor.backbone) is type(from_run.segmentor.backbone)
