"""Dataset catalog: layout detection for every shipped convention, counts, domain protocols."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from weft_lightning.data.catalog import (
    DATASETS,
    DOMAINS,
    LayoutError,
    count_files,
    dataset_name,
    detect_layout,
    domain_sets,
    find_dataset,
    locate,
)


def _tree(root: Path, folders: dict[str, int], image_ext: str = ".jpg") -> Path:
    """Create folders with n placeholder files each (masks .png, images image_ext)."""
    for rel, n in folders.items():
        folder = root / rel
        folder.mkdir(parents=True, exist_ok=True)
        is_image = "mask" not in rel.lower() and "gt" not in rel.lower() and "label" not in rel
        ext = image_ext if is_image and "Truth" not in rel else ".png"
        for i in range(n):
            (folder / f"{i:04d}{ext}").touch()
    return root


def _flat(layout: dict) -> dict[str, tuple[str, str | None]]:
    return {
        split: (dirs.images.name, dirs.masks.name if dirs.masks else None)
        for split, dirs in layout.items()
    }


LAYOUTS = {
    "images/masks splits": (
        {"train/images": 2, "train/masks": 2, "test/images": 1, "test/masks": 1},
        {"train": ("images", "masks"), "test": ("images", "masks")},
    ),
    "Imgs/GT flat": ({"Imgs": 2, "GT": 2}, {"test": ("Imgs", "GT")}),
    "COD10K Image/GT_Object": (
        {
            "Train/Image": 2,
            "Train/GT_Object": 2,
            "Train/GT_Edge": 2,
            "Train/GT_Instance": 2,
            "Test/Image": 1,
            "Test/GT_Object": 1,
        },
        {"train": ("Image", "GT_Object"), "test": ("Image", "GT_Object")},
    ),
    "test-images/test-labels": (
        {"train-images": 2, "train-labels": 2, "test-images": 1, "test-labels": 1},
        {"train": ("train-images", "train-labels"), "test": ("test-images", "test-labels")},
    ),
    "image/mask": ({"image": 3, "mask": 3}, {"test": ("image", "mask")}),
    "DUTS": (
        {
            "DUTS-TR/DUTS-TR-Image": 2,
            "DUTS-TR/DUTS-TR-Mask": 2,
            "DUTS-TE/DUTS-TE-Image": 1,
            "DUTS-TE/DUTS-TE-Mask": 1,
        },
        {"train": ("DUTS-TR-Image", "DUTS-TR-Mask"), "test": ("DUTS-TE-Image", "DUTS-TE-Mask")},
    ),
    "ECSSD images/ground_truth_mask": (
        {"images": 2, "ground_truth_mask": 2},
        {"test": ("images", "ground_truth_mask")},
    ),
    "DUT-OMRON": (
        {"DUT-OMRON-image": 2, "pixelwiseGT-new-PNG": 2},
        {"test": ("DUT-OMRON-image", "pixelwiseGT-new-PNG")},
    ),
    "CVC-ClinicDB Original/Ground Truth": (
        {"Original": 2, "Ground Truth": 2},
        {"test": ("Original", "Ground Truth")},
    ),
    "ORSI-4199 images/gt": (
        {"train/images": 2, "train/gt": 2, "test/images": 2, "test/gt": 2},
        {"train": ("images", "gt"), "test": ("images", "gt")},
    ),
    "TrainDataset Imgs/GT": (
        {"TrainDataset/Imgs": 2, "TrainDataset/GT": 2},
        {"train": ("Imgs", "GT")},
    ),
    "CAMO Images/Train + GT/Train": (
        {"Images/Train": 2, "Images/Test": 1, "GT/Train": 2, "GT/Test": 1},
        {"train": ("Train", "Train"), "test": ("Test", "Test")},
    ),
    "CAMO as released: Images/Train + Images/Test + flat GT": (
        {"Images/Train": 2, "Images/Test": 1, "GT": 3},
        {"train": ("Train", "GT"), "test": ("Test", "GT")},
    ),
    "images only (prediction)": ({"images": 2}, {"test": ("images", None)}),
}


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_detects_every_listed_layout(tmp_path: Path, name: str) -> None:
    folders, expected = LAYOUTS[name]
    layout = detect_layout(_tree(tmp_path / "ds", folders))
    assert _flat(layout) == expected
    for dirs in layout.values():
        assert dirs.images.is_dir()


def test_ambiguous_and_empty_layouts_raise(tmp_path: Path) -> None:
    _tree(tmp_path / "two", {"images": 1, "imgs": 1, "masks": 1})
    with pytest.raises(LayoutError, match="images, imgs"):
        detect_layout(tmp_path / "two")
    _tree(tmp_path / "none", {"photos": 1, "stuff": 1})
    with pytest.raises(LayoutError, match="photos, stuff"):
        detect_layout(tmp_path / "none")
    with pytest.raises(LayoutError, match="does not exist"):
        detect_layout(tmp_path / "missing")


def test_find_dataset_by_alias_any_case_and_depth(tmp_path: Path) -> None:
    _tree(tmp_path, {"TestDataset/CVC-300/images": 1, "TestDataset/CVC-300/masks": 1})
    _tree(tmp_path, {"data/kvasir/images": 1, "data/kvasir/masks": 1})
    assert find_dataset(tmp_path, "CVC-300") == tmp_path / "TestDataset" / "CVC-300"
    assert find_dataset(tmp_path, "Kvasir-SEG") == tmp_path / "data" / "kvasir"
    assert find_dataset(tmp_path, "NC4K") is None
    assert find_dataset(tmp_path / "TestDataset" / "CVC-300", "CVC-300") == (
        tmp_path / "TestDataset" / "CVC-300"
    )
    with pytest.raises(KeyError, match="known datasets"):
        find_dataset(tmp_path, "NoSuchSet")


def test_count_mismatch_warns_naming_the_dataset(tmp_path: Path) -> None:
    _tree(tmp_path / "EORSSD", {"train/images": 3, "train/masks": 3})
    with pytest.warns(UserWarning, match=r"Dataset EORSSD: train split has 3 images.*1400"):
        layout = locate(tmp_path, "EORSSD")
    assert count_files(layout["train"].masks) == 3
    with pytest.raises(LayoutError, match="ORSSD not found"):
        locate(tmp_path, "ORSSD")


def test_real_eorssd_matches_published_counts(full_eorssd: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        layout = locate(full_eorssd.parent, "EORSSD")
    assert _flat(layout) == {"test": ("images", "masks"), "train": ("images", "masks")}
    assert count_files(layout["test"].images) == 600


def test_cod_domain_prefers_combined_training_folder(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "TrainDataset/Imgs": 4,
            "TrainDataset/GT": 4,
            "TestDataset/CAMO/Imgs": 2,
            "TestDataset/CAMO/GT": 2,
            "TestDataset/NC4K/Imgs": 2,
            "TestDataset/NC4K/GT": 2,
        },
    )
    with pytest.warns(UserWarning) as record:
        train, tests = domain_sets(tmp_path, "cod")
    assert sorted(str(w.message).split(":")[0] for w in record) == [
        "Dataset CAMO",
        "Dataset COD-train",
        "Dataset NC4K",
    ]
    assert list(train) == ["COD-train"]
    assert list(tests) == ["CAMO", "NC4K"]
    assert tests["NC4K"].masks == tmp_path / "TestDataset" / "NC4K" / "GT"


def test_domain_falls_back_to_each_training_split(tmp_path: Path) -> None:
    for name in ("Kvasir-SEG", "CVC-ClinicDB"):
        _tree(tmp_path / name, {"train/images": 2, "train/masks": 2})
        _tree(tmp_path / name, {"test/images": 1, "test/masks": 1})
    _tree(tmp_path / "ETIS-LaribPolypDB", {"images": 1, "masks": 1})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, tests = domain_sets(tmp_path, "polyp")
    assert list(train) == ["Kvasir-SEG", "CVC-ClinicDB"]
    assert list(tests) == ["Kvasir-SEG", "CVC-ClinicDB", "ETIS-LaribPolypDB"]
    with pytest.raises(KeyError, match="known domains"):
        domain_sets(tmp_path, "medical")


def test_catalog_is_consistent() -> None:
    for domain in DOMAINS.values():
        for name, split in (*domain.train, *domain.tests):
            assert split in DATASETS[name].counts, (name, split)
            assert DATASETS[name].domain == domain.name
    assert DATASETS["DUTS"].counts == {"train": 10553, "test": 5019}
    assert sum(DATASETS[n].counts["train"] for n in ("Kvasir-SEG", "CVC-ClinicDB")) == 1450


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("ECSSD/images", "ECSSD"),
        ("TestDataset/CVC-ClinicDB/images", "CVC-ClinicDB"),
        ("COD10K/Test/GT_Object", "COD10K"),
        ("CVC-ClinicDB/Ground Truth", "CVC-ClinicDB"),
        ("CAMO/Images/Test", "CAMO"),
        ("EORSSD/test/masks", "EORSSD"),
        ("photos", "photos"),
    ],
)
def test_outputs_are_named_by_dataset_not_by_split_folder(
    folder: str, name: str, tmp_path: Path
) -> None:
    assert dataset_name(tmp_path / folder) == name


def test_predicting_two_folders_named_images_keeps_them_apart(tmp_path: Path) -> None:
    from weft_lightning.data import SegmentationDataModule

    names = []
    for dataset in ("ECSSD", "TestDataset/CVC-ClinicDB"):
        images = tmp_path / dataset / "images"
        images.mkdir(parents=True)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "a.png")
        module = SegmentationDataModule(predict_dir=str(images), num_workers=0)
        module.setup("predict")
        names.append(module.predict_set.name)
    assert names == ["ECSSD", "CVC-ClinicDB"]


def test_two_copies_of_a_dataset_warn_which_one_is_used(tmp_path: Path) -> None:
    for folder in ("CVC-ClinicDB", "TestDataset/CVC-ClinicDB"):
        (tmp_path / folder / "images").mkdir(parents=True)
    with pytest.warns(UserWarning, match=r"CVC-ClinicDB is under .* 2 times; using .*CVC-ClinicDB"):
        found = find_dataset(tmp_path, "CVC-ClinicDB")
    assert found == tmp_path / "CVC-ClinicDB"
