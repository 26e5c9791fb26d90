"""The synthetic aerial-scene generator: layout, determinism, binary masks, variety, CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from weft_lightning.cli.synth import main
from weft_lightning.data.synthetic import generate_dataset, generate_sample


def _read(folder: Path, pattern: str) -> dict[str, np.ndarray]:
    return {p.name: np.asarray(Image.open(p)) for p in sorted(folder.glob(pattern))}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    return generate_dataset(out, num_train=40, num_test=10, size=64, seed=3)


def test_layout_matches_real_benchmarks(dataset: Path) -> None:
    for split, count in (("train", 40), ("test", 10)):
        images = sorted(p.stem for p in (dataset / split / "images").iterdir())
        masks = sorted(p.stem for p in (dataset / split / "masks").iterdir())
        assert len(images) == count
        assert images == masks
        assert all(p.suffix == ".jpg" for p in (dataset / split / "images").iterdir())
        assert all(p.suffix == ".png" for p in (dataset / split / "masks").iterdir())
    image = Image.open(next((dataset / "train" / "images").iterdir()))
    assert image.mode == "RGB" and image.size == (64, 64)


def test_masks_are_8bit_binary_with_some_empty(dataset: Path) -> None:
    masks = _read(dataset / "train" / "masks", "*.png")
    for name, mask in masks.items():
        assert mask.dtype == np.uint8 and mask.shape == (64, 64), name
        assert set(np.unique(mask)) <= {0, 255}, name
    fractions = np.array([(m > 128).mean() for m in masks.values()])
    assert (fractions == 0).sum() >= 1
    assert (fractions > 0).sum() >= 30


def test_objects_vary_in_count_and_size(dataset: Path) -> None:
    masks = _read(dataset / "train" / "masks", "*.png").values()
    counts = [ndimage.label(m > 128)[1] for m in masks]
    areas = [a for m in masks for a in np.bincount(ndimage.label(m > 128)[0].ravel())[1:]]
    assert len(set(counts)) >= 3
    assert max(areas) > 5 * min(areas)


def test_objects_are_visible_in_the_image(dataset: Path) -> None:
    """On average the object pixels differ clearly from their surroundings."""
    contrasts = []
    for name, mask in _read(dataset / "train" / "masks", "*.png").items():
        fg = mask > 128
        if not fg.any():
            continue
        image = np.asarray(Image.open(dataset / "train" / "images" / name.replace(".png", ".jpg")))
        ring = ndimage.binary_dilation(fg, iterations=3) & ~fg
        grey = image.astype(float).mean(-1)
        contrasts.append(abs(grey[fg].mean() - grey[ring].mean()))
    assert np.median(contrasts) > 40


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    a = generate_dataset(tmp_path / "a", 4, 2, size=48, seed=7)
    b = generate_dataset(tmp_path / "b", 4, 2, size=48, seed=7)
    c = generate_dataset(tmp_path / "c", 4, 2, size=48, seed=8)
    for split, pattern in (("train/images", "*.jpg"), ("test/masks", "*.png")):
        files = sorted((a / split).glob(pattern))
        assert all(f.read_bytes() == (b / split / f.name).read_bytes() for f in files)
    img_a, _ = generate_sample(7, "train", 0)
    img_c, _ = generate_sample(8, "train", 0)
    assert not np.array_equal(img_a, img_c)
    assert (c / "train" / "images" / "train_00000.jpg").read_bytes() != (
        a / "train" / "images" / "train_00000.jpg"
    ).read_bytes()


def test_train_and_test_splits_differ() -> None:
    train, _ = generate_sample(0, "train", 0)
    test, _ = generate_sample(0, "test", 0)
    assert not np.array_equal(train, test)


def test_regeneration_reuses_or_replaces(tmp_path: Path) -> None:
    out = generate_dataset(tmp_path, 3, 1, size=32, seed=0)
    first = (out / "train" / "images" / "train_00000.jpg").stat().st_mtime_ns
    generate_dataset(tmp_path, 3, 1, size=32, seed=0)
    assert (out / "train" / "images" / "train_00000.jpg").stat().st_mtime_ns == first
    generate_dataset(tmp_path, 2, 1, size=32, seed=1)
    assert len(list((out / "train" / "images").iterdir())) == 2


def test_bad_arguments_raise_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size"):
        generate_dataset(tmp_path, 1, 1, size=8)
    with pytest.raises(ValueError, match="num_train"):
        generate_dataset(tmp_path, -1, 1)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--out", str(tmp_path), "--num-train", "2", "--num-test", "1", "--size", "32"]
    assert main([*args, "--seed", "5"]) == 0
    assert len(list((tmp_path / "test" / "masks").glob("*.png"))) == 1
    assert "2 train, 1 test" in capsys.readouterr().out
    assert main(["--help"]) == 0
    assert "--num-train" in capsys.readouterr().out
