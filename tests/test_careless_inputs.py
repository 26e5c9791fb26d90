"""A corpus of the inputs users really give (generated here): bit depths and band counts,
layouts that do not pair, OS litter, missing roots and masks, corrupt files, misspelled keys,
colliding folder names. Every case either works, with its one-line note, or fails with one
line naming the file or key; none prints a traceback, none changes a value silently."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pytest
import tifffile
from PIL import Image

from weft_lightning.data.synthetic import generate_dataset

pytestmark = pytest.mark.slow  # each case is a `weft` process (about 8 s)

REPO = Path(__file__).resolve().parents[1]
WEFT = str(Path(sys.executable).parent / "weft")
SMALL = [
    "--config", str(REPO / "configs" / "demo.yaml"),
    "--data", str(REPO / "configs" / "data" / "folder.yaml"),
    "--model.init_args.protocol.test.size", "64",
    "--model.init_args.protocol.validation.size", "64",
    "--data.init_args.num_workers", "0",
    "--data.init_args.augmentation.crop_size", "64",
    "--trainer.max_epochs", "1",
    "--trainer.limit_train_batches", "1",
]  # fmt: skip


def _copy(source: Path, target: Path, image=None, mask=None) -> Path:
    """``source``'s splits rewritten: ``image(array, path_without_suffix)`` for each image
    (8-bit RGB array), ``mask(array, path_without_suffix)`` for each mask (8-bit 0/255)."""

    def png(array: np.ndarray, stem: Path) -> None:
        Image.fromarray(array).save(stem.with_suffix(".png"))

    for split in ("train", "test"):
        for sub, write, mode in (("images", image or png, "RGB"), ("masks", mask or png, "L")):
            (target / split / sub).mkdir(parents=True)
            for path in sorted((source / split / sub).iterdir()):
                write(np.asarray(Image.open(path).convert(mode)), target / split / sub / path.stem)
    return target


def _uint16_four_bands(array: np.ndarray, stem: Path) -> None:
    """A 4-band uint16 GeoTIFF-like raster: the 8-bit RGB on the full 16-bit range, then NIR."""
    wide = array.astype(np.uint16) * 257
    nir = (255 - array[..., :1]).astype(np.uint16) * 257
    tifffile.imwrite(stem.with_suffix(".tif"), np.concatenate([wide, nir], axis=2))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    generated = root / "generated"
    generate_dataset(generated, num_train=4, num_test=3, size=64, seed=5)
    rgb8 = _copy(generated, root / "rgb8")
    _copy(rgb8, root / "tiff16", image=_uint16_four_bands)
    _copy(rgb8, root / "mask16", mask=lambda a, s: cv2.imwrite(f"{s}.png", a.astype(np.uint16)))
    _copy(rgb8, root / "gray", image=lambda a, s: Image.fromarray(a).convert("L").save(f"{s}.png"))
    _copy(
        rgb8, root / "rgba", image=lambda a, s: Image.fromarray(a).convert("RGBA").save(f"{s}.png")
    )
    # images and no masks, as a bare folder and as a training split
    shutil.copytree(rgb8 / "test" / "images", root / "bare" / "images")
    shutil.copytree(rgb8 / "train" / "images", root / "no_train_masks" / "train" / "images")
    shutil.copytree(rgb8 / "test", root / "no_train_masks" / "test")
    # CAMO as its release ships it: Images/Train, Images/Test and one flat GT/ folder
    camo = root / "CAMO"
    shutil.copytree(rgb8 / "train" / "images", camo / "Images" / "Train")
    shutil.copytree(rgb8 / "test" / "images", camo / "Images" / "Test")
    shutil.copytree(rgb8 / "test" / "masks", camo / "GT")
    shutil.copytree(rgb8 / "train" / "masks", camo / "GT", dirs_exist_ok=True)
    # OS litter beside real pairs
    shutil.copytree(rgb8, root / "litter")
    for name in ("test/images/.DS_Store", "test/images/._0.png", "test/masks/Thumbs.db"):
        (root / "litter" / name).write_bytes(b"\0\1litter")
    # a mask that is not an image
    shutil.copytree(rgb8, root / "bad_mask")
    next((root / "bad_mask" / "test" / "masks").iterdir()).write_text("not a png\n")
    # one dataset twice under a root
    for copy in ("CVC-ClinicDB", "TestDataset/CVC-ClinicDB"):
        shutil.copytree(rgb8 / "test", root / "polyp" / copy)
    # two image folders both called images, of one dataset name
    for place in ("a", "b"):
        shutil.copytree(rgb8 / "test" / "images", root / place / "ECSSD" / "images")
    # maps saved as RGB JPEG against a mask folder named like CAMO's
    (root / "eval" / "CAMO" / "GT_Object").mkdir(parents=True)
    (root / "eval" / "maps").mkdir()
    for mask in sorted((rgb8 / "test" / "masks").iterdir()):
        shutil.copy(mask, root / "eval" / "CAMO" / "GT_Object" / mask.name)
        Image.open(mask).convert("RGB").save(root / "eval" / "maps" / f"{mask.stem}.jpg")
    # checkpoints that are not checkpoints
    (root / "random.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    (root / "text.ckpt").write_text("model weights go here\n")
    return root


@dataclass
class Result:
    code: int
    out: str
    err: str

    def error_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if ": error: " in line]


def weft(*args: str | Path) -> Result:
    env = {k: v for k, v in os.environ.items() if k != "WEFT_DEBUG"}
    done = subprocess.run(
        [WEFT, *map(str, args)], capture_output=True, text=True, env=env, timeout=600
    )
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    return Result(done.returncode, done.stdout, done.stderr)


def failed_in_one_line(result: Result, *fragments: str) -> None:
    """Exit status 1 or 2 and exactly one error line, holding every fragment."""
    assert result.code in (1, 2), (result.code, result.err[-2000:])
    (line,) = result.error_lines()
    for fragment in fragments:
        assert fragment in line, (fragment, line)


def metrics_of(run: Path) -> dict[str, float]:
    (summary,) = run.rglob("summary_test.json")
    return json.loads(summary.read_text())["metrics"]


def scored(
    corpus: Path, tmp_path: Path, folder: str, *extra: str, run_name: str = ""
) -> tuple[Result, dict]:
    """`weft test` of the untrained demo model (seeded, so the same in every run) on a folder
    of the corpus, in the run folder `run_name` (default: the folder's name); the test set is
    named `set` whatever the folder."""
    run = tmp_path / (run_name or folder)
    result = weft("test", *SMALL, "--data.root", corpus / folder, "--data.init_args.name", "set",
                  "--trainer.default_root_dir", run, *extra)  # fmt: skip
    assert result.code == 0, result.err[-3000:]
    return result, metrics_of(run)


# ------------------------------------------------------------------ images as the field has them
def test_a_four_band_uint16_tiff_scores_like_its_8bit_copy(corpus: Path, tmp_path: Path) -> None:
    _, reference = scored(corpus, tmp_path, "rgb8")
    bands = "--data.init_args.image_reading.bands=[0, 1, 2]"
    result, metrics = scored(corpus, tmp_path, "tiff16", bands)
    assert metrics == reference
    assert (
        result.err.count("bands [0, 1, 2] of 4 as RGB; uint16 values") == 1
    )  # once, not per image
    unset, _ = scored(corpus, tmp_path, "tiff16", run_name="tiff16-bands-unset")
    assert unset.err.count("the first 3 of 4 bands as RGB (set data.image_reading.bands)") == 1


def test_a_16bit_mask_holding_0_and_255_scores_like_its_8bit_copy(
    corpus: Path, tmp_path: Path
) -> None:
    assert scored(corpus, tmp_path, "mask16")[1] == scored(corpus, tmp_path, "rgb8")[1]


@pytest.mark.parametrize(
    ("folder", "note"), [("gray", "1 band repeated as RGB"), ("rgba", "alpha ignored")]
)
def test_grey_and_rgba_images_are_noted_once(
    corpus: Path, tmp_path: Path, folder: str, note: str
) -> None:
    result, _ = scored(corpus, tmp_path, folder)
    (line,) = [line for line in result.err.splitlines() if note in line]  # once, not per image
    assert line.startswith("weft: warning: Dataset set (")  # one line, no source location
    assert weft("data", "check", corpus / folder).out.count(f"reading: {note}") == 2  # per split


def test_a_band_the_images_lack_is_one_line_before_the_model_is_built(
    corpus: Path, tmp_path: Path
) -> None:
    result = weft("test", *SMALL, "--data.root", corpus / "tiff16",
                  "--data.init_args.image_reading.bands=[0, 1, 5]",
                  "--trainer.default_root_dir", tmp_path / "run")  # fmt: skip
    failed_in_one_line(result, "data.image_reading.bands=[0, 1, 5] names band 5", "has 4 band(s)")
    assert "Trainer(" not in result.err and not (tmp_path / "run").exists()


# ------------------------------------------------------------------------- data check
@pytest.mark.parametrize(
    ("folder", "fragment"),
    [
        ("bare", "bare/images (no mask folder)"),
        ("no_train_masks", "no_train_masks/train/images (no mask folder)"),
    ],
)
def test_data_check_fails_where_nothing_pairs(corpus: Path, folder: str, fragment: str) -> None:
    result = weft("data", "check", corpus / folder)
    assert result.code == 1
    assert "no usable pairs" in result.out and fragment in result.out
    assert "exit status 1" in result.out


def test_camo_as_released_pairs_each_split_with_its_masks_in_the_one_gt_folder(
    corpus: Path, tmp_path: Path
) -> None:
    check = weft("data", "check", corpus / "CAMO")
    assert check.code == 0, check.out
    assert "Problems: none" in check.out and "mask without image" not in check.out
    assert scored(corpus, tmp_path, "CAMO")[1] == scored(corpus, tmp_path, "rgb8")[1]


def test_data_check_counts_os_litter_and_passes(corpus: Path) -> None:
    result = weft("data", "check", corpus / "litter")
    assert result.code == 0, result.out
    assert "2 OS/hidden files (.DS_Store, ._0.png)" in result.out
    assert "1 OS/hidden files (Thumbs.db)" in result.out


def test_data_check_names_the_copy_of_a_duplicated_dataset_that_is_used(corpus: Path) -> None:
    result = weft("data", "check", corpus / "polyp")
    assert result.code == 0, result.out
    used, other = (
        corpus / "polyp" / "CVC-ClinicDB",
        corpus / "polyp" / "TestDataset" / "CVC-ClinicDB",
    )
    assert f"{used}: CVC-ClinicDB also at {other}; fit and test use this one" in result.out


# ------------------------------------------------------------------------- one line each
def test_fit_without_training_masks_is_one_line_and_leaves_no_run_folder(
    corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = weft("fit", *SMALL, "--data.root", corpus / "no_train_masks",
                  "--trainer.default_root_dir", run)  # fmt: skip
    failed_in_one_line(result, "no_train_masks/train/images", "has no mask folder")
    assert not run.exists()


@pytest.mark.parametrize("root", ["missing", None])
def test_a_domain_config_without_its_data_is_one_line_naming_the_root(
    corpus: Path, tmp_path: Path, root: str | None
) -> None:
    given = ["--data.root", str(corpus / root)] if root else []
    result = weft("test", "--config", REPO / "configs" / "cod" / "cod.yaml", *given,
                  "--trainer.default_root_dir", tmp_path / "run")  # fmt: skip
    failed_in_one_line(result, str(corpus / root) if root else "data.root=null (not set)")
    assert "Trainer(" not in result.err  # before the model and trainer are built


def test_a_corrupt_mask_is_one_line_naming_it_and_leaves_no_empty_run(
    corpus: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    result = weft("test", *SMALL, "--data.root", corpus / "bad_mask",
                  "--trainer.default_root_dir", run)  # fmt: skip
    bad = next((corpus / "bad_mask" / "test" / "masks").iterdir())
    failed_in_one_line(result, str(bad))
    assert "weft_lightning." not in result.error_lines()[0]  # no module path in the message
    assert not run.exists()


@pytest.mark.parametrize("name", ["random.ckpt", "text.ckpt"])
def test_a_file_that_is_no_checkpoint_is_one_line(corpus: Path, tmp_path: Path, name: str) -> None:
    result = weft("test", *SMALL, "--data.root", corpus / "rgb8", "--ckpt_path", corpus / name,
                  "--trainer.default_root_dir", tmp_path / "run")  # fmt: skip
    failed_in_one_line(result, str(corpus / name))
    assert "weights_only" not in result.err


def test_a_misspelled_key_suggests_the_right_one_without_the_usage(corpus: Path) -> None:
    result = weft("fit", *SMALL, "--data.root", corpus / "rgb8", "--model.init_args.lrr", "1")
    failed_in_one_line(result, "Option 'lrr' is not accepted (did you mean 'lr'?)")
    assert result.code == 2 and "usage:" not in result.err


def test_a_component_file_given_as_a_run_config_says_where_it_goes() -> None:
    model = REPO / "configs" / "model" / "weft_t.yaml"
    result = weft("test", "--config", REPO / "configs" / "orsi" / "eorssd.yaml", "--config", model)
    failed_in_one_line(result, f"give it as --model.init_args.segmentor {model}")


# ------------------------------------------------------------------------- outputs
def test_predicting_two_folders_of_one_name_writes_two_folders(
    corpus: Path, tmp_path: Path
) -> None:
    run, written = tmp_path / "run", []
    for place in ("a", "b", "a"):  # the same folder again replaces its own maps
        images = corpus / place / "ECSSD" / "images"
        result = weft("predict", *SMALL, "--trainer.default_root_dir", run,
                      "--data.init_args.predict_dir", images)  # fmt: skip
        assert result.code == 0, result.err[-3000:]
        written += [
            line.split(" to ")[-1]
            for line in (result.out + result.err).splitlines()
            if "Wrote" in line
        ]
    predictions = (run / "predictions").resolve()
    assert written == [
        str(predictions / "ECSSD"),
        str(predictions / "ECSSD-2"),
        str(predictions / "ECSSD"),
    ]
    assert sorted(p.name for p in predictions.iterdir()) == ["ECSSD", "ECSSD-2"]
    assert all(len(list(p.glob("*.png"))) == 3 for p in predictions.iterdir())


def test_eval_names_the_dataset_and_notes_jpeg_maps(corpus: Path) -> None:
    result = weft("eval", "--pred-dir", corpus / "eval" / "maps",
                  "--gt-dir", corpus / "eval" / "CAMO" / "GT_Object")  # fmt: skip
    assert result.code == 0, result.err
    assert "(3 JPEG RGB): read by their luminance" in result.err
    (row,) = [line for line in result.out.splitlines() if line.startswith("| maps")]
    assert row.split("|")[2].strip() == "CAMO"
