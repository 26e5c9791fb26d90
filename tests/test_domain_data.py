"""Domain datamodules: presets on the layouts datasets ship with, mask size policy, kornia GPU
augmentation, every domain config through `weft fit --fast_dev_run`, and a truncated image that
stops training with its name."""

from __future__ import annotations

import re
import shutil
import warnings
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from weft_lightning.cli import main as weft
from weft_lightning.constants import IGNORE_INDEX
from weft_lightning.data import Augmentation, DomainDataModule, SegmentationDataModule
from weft_lightning.data.catalog import DATASETS
from weft_lightning.data.dataset import DataFileError
from weft_lightning.data.gpu_augment import GPUAugmentation
from weft_lightning.data.synthetic import generate_sample

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"  # the committed real pairs
TRAIN_MASK_VALUES = {0.0, 1.0, float(IGNORE_INDEX)}  # background, foreground, padding


def _fill(images: Path, masks: Path, count: int, seed: int = 0, size: int = 64) -> None:
    """Write count synthetic image/mask pairs (JPEG images, PNG masks)."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = generate_sample(seed, "train", i)
        image = np.asarray(Image.fromarray(image).resize((size + 8 * (i % 2), size)))
        mask = np.asarray(Image.fromarray(mask).resize((size + 8 * (i % 2), size), 0))
        Image.fromarray(image).save(images / f"{seed}_{i:03d}.jpg")
        Image.fromarray(mask).save(masks / f"{seed}_{i:03d}.png")


def _copy_samples(source: Path, images: Path, masks: Path, count: int) -> None:
    """Copy the first count real sample pairs into a layout's folders."""
    images.mkdir(parents=True, exist_ok=True)
    masks.mkdir(parents=True, exist_ok=True)
    by_stem = {p.stem: p for p in (source / "masks").iterdir()}
    for image in sorted((source / "images").iterdir())[:count]:
        shutil.copy(image, images / image.name)
        shutil.copy(by_stem[image.stem], masks / by_stem[image.stem].name)


def _quiet(fn, *args, **kwargs):  # count warnings are expected in these tests
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kwargs)


# ------------------------------------------------------------------------- data layouts
def eorssd_tree(root: Path) -> Path:
    for split, n in (("train", 4), ("test", 2)):
        _copy_samples(TEST_DATA / "EORSSD" / split, root / "EORSSD" / split / "images",
                      root / "EORSSD" / split / "masks", n)  # fmt: skip
    return root / "EORSSD"


def orssd_tree(root: Path) -> Path:
    _fill(root / "ORSSD" / "train-images", root / "ORSSD" / "train-labels", 4)
    _fill(root / "ORSSD" / "test-images", root / "ORSSD" / "test-labels", 2, seed=1)
    return root / "ORSSD"


def orsi4199_tree(root: Path) -> Path:
    _fill(root / "ORSI-4199" / "train" / "images", root / "ORSI-4199" / "train" / "gt", 4)
    _fill(root / "ORSI-4199" / "test" / "images", root / "ORSI-4199" / "test" / "gt", 2, seed=1)
    return root / "ORSI-4199"


def orsi_domain_tree(root: Path) -> Path:
    eorssd_tree(root)
    orsi4199_tree(root)
    return root


def cod_tree(root: Path) -> Path:
    """COD10K-v3 (Train/Image + GT_Object), CAMO (Images/Train + GT/Train), flat test sets."""
    for split, n in (("Train", 4), ("Test", 2)):
        base = root / "COD10K-v3" / split
        _fill(base / "Image", base / "GT_Object", n, seed=2)
        _fill(base / "Image", base / "GT_Edge", n, seed=2)
    _copy_samples(TEST_DATA / "samples" / "CAMO", root / "CAMO" / "Images" / "Train",
                  root / "CAMO" / "GT" / "Train", 4)  # fmt: skip
    _fill(root / "CAMO" / "Images" / "Test", root / "CAMO" / "GT" / "Test", 2, seed=3)
    _fill(root / "CHAMELEON" / "Imgs", root / "CHAMELEON" / "GT", 2, seed=4)
    _fill(root / "NC4K" / "Imgs", root / "NC4K" / "GT", 2, seed=5)
    return root


def cod_domain_tree(root: Path) -> Path:
    """The SINet distribution: TrainDataset/{Imgs,GT} + TestDataset/<name>/{Imgs,GT}."""
    _fill(root / "TrainDataset" / "Imgs", root / "TrainDataset" / "GT", 4)
    _copy_samples(TEST_DATA / "samples" / "CAMO", root / "TestDataset" / "CAMO" / "Imgs",
                  root / "TestDataset" / "CAMO" / "GT", 2)  # fmt: skip
    _fill(root / "TestDataset" / "NC4K" / "Imgs", root / "TestDataset" / "NC4K" / "GT", 2, 1)
    return root


def sod_tree(root: Path) -> Path:
    duts = root / "DUTS"
    _fill(duts / "DUTS-TR" / "DUTS-TR-Image", duts / "DUTS-TR" / "DUTS-TR-Mask", 4)
    _fill(duts / "DUTS-TE" / "DUTS-TE-Image", duts / "DUTS-TE" / "DUTS-TE-Mask", 2, seed=1)
    _copy_samples(TEST_DATA / "samples" / "ECSSD", root / "ECSSD" / "images",
                  root / "ECSSD" / "ground_truth_mask", 2)  # fmt: skip
    _fill(root / "HKU-IS" / "imgs", root / "HKU-IS" / "gt", 2, seed=2)
    _fill(root / "PASCAL-S" / "Imgs", root / "PASCAL-S" / "GT", 2, seed=3)
    _fill(root / "DUT-OMRON" / "DUT-OMRON-image", root / "DUT-OMRON" / "pixelwiseGT-new-PNG", 2)
    return root


def sod_domain_tree(root: Path) -> Path:
    duts = root / "DUTS"
    _fill(duts / "DUTS-TR" / "DUTS-TR-Image", duts / "DUTS-TR" / "DUTS-TR-Mask", 4)
    _copy_samples(TEST_DATA / "samples" / "ECSSD", root / "ECSSD" / "images",
                  root / "ECSSD" / "ground_truth_mask", 2)  # fmt: skip
    return root


def polyp_tree(root: Path) -> Path:
    """The PraNet distribution: TrainDataset/{image,mask} + TestDataset/<name>/{images,masks}."""
    _fill(root / "TrainDataset" / "image", root / "TrainDataset" / "mask", 4)
    tests = root / "TestDataset"
    _copy_samples(TEST_DATA / "samples" / "Kvasir-SEG", tests / "Kvasir" / "images",
                  tests / "Kvasir" / "masks", 2)  # fmt: skip
    for i, name in enumerate(("CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "CVC-300")):
        _fill(tests / name / "images", tests / name / "masks", 2, seed=i + 1)
    return root


def polyp_domain_tree(root: Path) -> Path:
    for name in ("Kvasir-SEG", "CVC-ClinicDB"):
        _fill(root / name / "train" / "images", root / name / "train" / "masks", 2)
    _copy_samples(TEST_DATA / "samples" / "Kvasir-SEG", root / "Kvasir-SEG" / "test" / "images",
                  root / "Kvasir-SEG" / "test" / "masks", 2)  # fmt: skip
    return root


# config, layout builder, expected test-set names
CONFIGS = {
    "orsi/eorssd.yaml": (eorssd_tree, ["EORSSD"]),
    "orsi/orssd.yaml": (orssd_tree, ["ORSSD"]),
    "orsi/orsi4199.yaml": (orsi4199_tree, ["ORSI-4199"]),
    "orsi/all.yaml": (orsi_domain_tree, ["EORSSD", "ORSI-4199"]),
    "cod/cod.yaml": (cod_tree, ["COD10K", "CAMO", "CHAMELEON", "NC4K"]),
    "cod/present.yaml": (cod_domain_tree, ["CAMO", "NC4K"]),
    "sod/duts.yaml": (sod_tree, ["DUTS", "ECSSD", "HKU-IS", "PASCAL-S", "DUT-OMRON"]),
    "sod/present.yaml": (sod_domain_tree, ["ECSSD"]),
    "polyp/pranet_split.yaml": (
        polyp_tree,
        ["Kvasir-SEG", "CVC-ClinicDB", "CVC-ColonDB", "ETIS-LaribPolypDB", "CVC-300"],
    ),
    "polyp/present.yaml": (polyp_domain_tree, ["Kvasir-SEG"]),
}

TINY_MODEL = """
model:
  init_args:
    warmup_steps: 1
    segmentor:
      init_args:
        checkpoint_backbone: false
        backbone:
          init_args:
            conv_channels: 16
            kernel_sizes: [1, 3]
            top_k: 1
            deform_heads: 4
            vit:
              init_args:
                model_name: vit_tiny_patch16_224
                drop_path_rate: 0.1
                model_kwargs: {depth: 4, class_token: false, global_pool: "", pre_norm: true,
                               final_norm: false, init_values: 0.1, dynamic_img_size: true}
        head:
          init_args: {hidden_dim: 32, num_queries: 4, enc_layers: 1, enc_ffn: 64, dec_layers: 1,
                      dec_ffn: 64, nheads: 2, num_points: 256}
    protocol:
      test: {resize: fixed, size: 64, mode: whole}
      validation: {resize: fixed, size: 64, mode: whole}
"""


def _small_run_args(tmp_path: Path, root: Path) -> list[str]:
    """Keep a config's data and training logic, shrink the network and the inputs for a CPU."""
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_MODEL)
    return [
        "--config", str(tiny),
        "--data.root", str(root),
        "--data.crop_size", "64",
        "--data.batch_size", "2", "--data.eval_batch_size", "2", "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1",
        "--trainer.precision", "32-true", "--trainer.fast_dev_run", "true",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip


def _config_params() -> list:
    """Each run takes 20-40 s on two cores, so they all run with ``slow`` (CI runs them)."""
    return [pytest.param(name, marks=pytest.mark.slow, id=name) for name in CONFIGS]


# ----------------------------------------------------------------------------- configs
def _parse_params() -> list:
    """Top-level configs are also round-tripped by the CLI tests, so they run with ``slow``."""
    return [
        pytest.param(name, marks=pytest.mark.slow if "/" not in name else (), id=name)
        for name in CONFIGS
    ]


@pytest.mark.parametrize("config", _parse_params())
def test_domain_config_parses(config: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert weft(["fit", "--config", str(REPO / "configs" / config), "--print_config"]) == 0
    printed = capsys.readouterr().out
    assert "WEFTBackbone" in printed and "Mask2FormerHead" in printed
    assert "lr: 5.0e-05" in printed and "warmup_steps: 1500" in printed


@pytest.mark.parametrize("config", _config_params())
def test_domain_config_fast_dev_run(config: str, tmp_path: Path) -> None:
    build, test_names = CONFIGS[config]
    root = build(tmp_path / "data")
    args = _small_run_args(tmp_path, root)
    with pytest.warns(UserWarning, match="the published"):
        code = weft(["fit", "--config", str(REPO / "configs" / config), *args])
    assert code == 0
    # the same config finds the domain's test sets, each under its own name
    init = _resolved_data(config)
    dm = _quiet(
        DomainDataModule,
        domain=init["domain"],
        root=str(root),
        train_datasets=init.get("train_datasets"),
        test_datasets=init.get("test_datasets"),
        num_workers=0,
    )
    assert _quiet(lambda: dm.test_names) == test_names


def _resolved_data(config: str) -> dict:
    """The data init args a run config resolves to (its ``extends`` stack applied)."""
    from weft_lightning.config_files import config_bases

    init: dict = {}
    for path in config_bases(REPO / "configs" / config):
        data = yaml.safe_load(path.read_text()).get("data")
        if isinstance(data, str):
            data = yaml.safe_load((path.parent / data).read_text())
        init.update((data or {}).get("init_args", {}))
    return init


# ------------------------------------------------------------------------------ presets
def test_orsi_paper_recipe_normalises_each_split_with_its_own_statistics(tmp_path: Path) -> None:
    root = eorssd_tree(tmp_path)
    dm = _quiet(DomainDataModule, domain="orsi", root=str(root), train_datasets=["EORSSD"],
                num_workers=0, crop_size=64, batch_size=2)  # fmt: skip
    stats = DATASETS["EORSSD"].stats
    assert dm.recipe.normalization == "per_split" and dm.augmentation.photometric
    assert (dm.mean, dm.std) == (stats["train"].mean, stats["train"].std)
    assert dm.eval_stats("EORSSD") == stats["test"] != stats["train"]
    assert dm.eval_stats(None) == stats["test"]  # predicted images: as the model is tested
    _quiet(dm.setup, "fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["image"].shape == (2, 3, 64, 64) and batch["mask"].shape == (2, 1, 64, 64)
    assert set(torch.unique(batch["mask"]).tolist()) <= TRAIN_MASK_VALUES
    assert dm.test_names == ["EORSSD"]
    item = dm.val_set[0]  # evaluation images: original size, the test set's statistics
    original = np.asarray(Image.open(item["path"]).convert("RGB"), np.float32) / 255
    expected = (original - np.array(stats["test"].mean)) / np.array(stats["test"].std)
    np.testing.assert_allclose(item["image"].permute(1, 2, 0).numpy(), expected, atol=1e-5)
    assert item["gt"].shape == tuple(item["size"]) == original.shape[:2]


def test_orsi_project_recipe_rotates_and_uses_the_training_statistics(tmp_path: Path) -> None:
    dm = _quiet(DomainDataModule, domain="orsi", recipe="project",
                root=str(eorssd_tree(tmp_path)), num_workers=0)  # fmt: skip
    assert dm.augmentation.rotate90 and dm.augmentation.vertical_flip
    assert dm.eval_stats("EORSSD") == DATASETS["EORSSD"].stats["train"]


def test_cod_and_sod_presets_flip_horizontally_only(tmp_path: Path) -> None:
    cod = _quiet(DomainDataModule, domain="cod", root=str(cod_domain_tree(tmp_path / "cod")),
                 num_workers=0)  # fmt: skip
    sod = DomainDataModule(domain="sod")
    for dm in (cod, sod):
        assert dm.augmentation.horizontal_flip and dm.augmentation.crop_size == 384
        assert not dm.augmentation.rotate90 and not dm.augmentation.vertical_flip
    assert _quiet(lambda: list(cod.train_splits())) == ["COD-train"]
    assert _quiet(lambda: cod.test_names) == ["CAMO", "NC4K"]


def test_polyp_preset_reads_kvasir_jpeg_masks_as_clean_binary(tmp_path: Path) -> None:
    root = polyp_tree(tmp_path)
    dm = _quiet(DomainDataModule, domain="polyp", root=str(root), test_datasets=["Kvasir-SEG"],
                num_workers=0, eval_batch_size=2)  # fmt: skip
    _quiet(dm.setup, "test")
    (loader,) = dm.test_dataloader()
    batch = next(iter(loader))
    for gt, path in zip(batch["gt"], batch["path"], strict=True):
        assert set(np.unique(gt)) <= {0, 255}, path
        assert Path(path).parent.parent.name == "Kvasir"
        assert (gt > 0).mean() > 0.01


def test_unknown_names_and_missing_datasets_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'EORSD'"):
        DomainDataModule(domain="orsi", train_datasets=["EORSD"])
    dm = DomainDataModule(domain="orsi", root=str(tmp_path), train_datasets=["ORSSD"],
                          num_workers=0)  # fmt: skip
    with pytest.raises(ValueError, match="ORSSD not found under"):
        dm.setup("fit")


# ------------------------------------------------------------------------ mask size policy
def test_size_mismatch_is_an_error_unless_resizing_is_asked(tmp_path: Path) -> None:
    _fill(tmp_path / "train" / "images", tmp_path / "train" / "masks", 2)
    Image.new("L", (20, 10), 255).save(tmp_path / "train" / "masks" / "0_001.png")
    dm = SegmentationDataModule(
        root=str(tmp_path), augmentation=Augmentation(crop_size=32), num_workers=0, batch_size=2
    )
    dm.setup("fit")
    with pytest.raises(DataFileError, match=r"0_001\.png is 20x10 but its image is 72x64"):
        dm.train_set[1]
    dm = SegmentationDataModule(
        root=str(tmp_path),
        augmentation=Augmentation(crop_size=32),
        num_workers=0,
        resize_mismatched_masks=True,
    )
    dm.setup("fit")
    dm.train_set.transform = None  # look at the decoded pair itself
    with pytest.warns(UserWarning, match=r"0_001\.png is 20x10 .* resized"):
        item = dm.train_set[1]
    assert item["mask"].shape == (1, 64, 72) and item["mask"].min() == 1


# ------------------------------------------------------------------------ GPU augmentation
def test_gpu_augmentation_moves_image_and_mask_together() -> None:
    torch.manual_seed(0)
    masks = (torch.rand(8, 1, 32, 32) > 0.7).float()
    mean, std = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)
    images = (masks.repeat(1, 3, 1, 1) - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    augment = GPUAugmentation(Augmentation(rotate90=True, vertical_flip=True), mean, std)
    out_images, out_masks = augment(images, masks)
    assert not torch.equal(out_masks, masks)  # something moved
    back = out_images * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert torch.allclose(back[:, :1], out_masks, atol=1e-4)
    jitter = GPUAugmentation(Augmentation(color_jitter=0.3, rotation_degrees=30), mean, std)
    img2, mask2 = jitter(images, masks)
    # pixels a rotation brings in from outside the crop are ignored, like padding
    assert set(torch.unique(mask2).tolist()) <= TRAIN_MASK_VALUES and img2.shape == images.shape
    with pytest.raises(ValueError, match="photometric"):
        GPUAugmentation(Augmentation(photometric=True), mean, std)


def test_gpu_augmentation_runs_in_on_after_batch_transfer(synthetic_root: Path) -> None:
    dm = SegmentationDataModule(
        root=str(synthetic_root), augmentation=Augmentation(crop_size=64, rotation_degrees=20),
        batch_size=4, num_workers=0, gpu_augmentation=True,
    )  # fmt: skip
    dm.setup("fit")
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    dm.trainer = trainer
    batch = next(iter(dm.train_dataloader()))
    original = {k: v.clone() for k, v in batch.items() if torch.is_tensor(v)}
    trainer.training = True
    torch.manual_seed(1)
    out = dm.on_after_batch_transfer(dict(batch, **original), 0)
    assert not torch.equal(out["image"], original["image"])
    assert set(torch.unique(out["mask"]).tolist()) <= TRAIN_MASK_VALUES
    trainer.validating = True
    same = dm.on_after_batch_transfer(dict(batch, **original), 0)
    assert torch.equal(same["image"], original["image"])
    with pytest.raises(ValueError, match="gpu_augmentation"):
        SegmentationDataModule(augmentation=Augmentation(rotation_degrees=10))


# --------------------------------------------------------------------- broken file in fit
def test_truncated_image_stops_fit_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "data"
    _fill(root / "train" / "images", root / "train" / "masks", 4)
    _fill(root / "test" / "images", root / "test" / "masks", 2, seed=1)
    bad = root / "train" / "images" / "0_002.jpg"
    data = bad.read_bytes()
    bad.write_bytes(data[: int(len(data) * 0.6)])
    args = [
        "fit", "--config", str(REPO / "configs" / "demo.yaml"),
        "--data", "weft_lightning.data.datamodule.SegmentationDataModule",
        "--data.root", str(root), "--data.augmentation.crop_size", "64",
        "--data.batch_size", "4", "--data.num_workers", "1",
        "--trainer.max_steps", "2", "--trainer.num_sanity_val_steps", "0",
        "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    assert weft(args) == 1
    err = capsys.readouterr().err
    assert re.search(r"weft: error: .*0_002\.jpg.*truncated", err)


TINY_SEGMENTOR = """
model:
  init_args:
    segmentor:
      init_args:
        checkpoint_backbone: false
        checkpoint_head: false
        backbone:
          init_args:
            conv_channels: 16
            kernel_sizes: [1, 3]
            top_k: 1
            deform_heads: 4
            vit:
              init_args:
                model_name: vit_tiny_patch16_224
                model_kwargs: {depth: 4}
        head:
          init_args: {hidden_dim: 32, num_queries: 4, enc_layers: 1, enc_ffn: 64, dec_layers: 1,
                      dec_ffn: 64, nheads: 2, num_points: 256}
"""


def test_eorssd_config_tests_non_square_images_in_several_windows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`weft test --config configs/orsi/eorssd.yaml` keeps the paper's protocol: a non-square
    test image becomes six views, each run in 512 windows, and its map has the image's size."""
    from weft_lightning.models.segmentor import Segmentor

    source = TEST_DATA / "EORSSD" / "test"
    image = next(p for p in sorted((source / "images").iterdir()) if _non_square(p))
    split = tmp_path / "data" / "EORSSD" / "test"
    for sub, path in (("images", image), ("masks", source / "masks" / f"{image.stem}.png")):
        (split / sub).mkdir(parents=True)
        shutil.copy(path, split / sub / path.name)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY_SEGMENTOR)
    crops: list[tuple[int, ...]] = []
    scores = Segmentor.scores
    monkeypatch.setattr(
        Segmentor, "scores", lambda self, x: crops.append(x.shape) or scores(self, x)
    )
    args = [
        "test", "--config", str(REPO / "configs" / "orsi" / "eorssd.yaml"), "--config", str(tiny),
        "--data.root", str(tmp_path / "data"), "--data.num_workers", "0",
        "--trainer.accelerator", "cpu", "--trainer.devices", "1", "--trainer.precision", "32-true",
        "--trainer.logger", "false", "--trainer.default_root_dir", str(tmp_path / "run"),
    ]  # fmt: skip
    assert _quiet(weft, args) == 0
    windows = sum(shape[0] for shape in crops)
    assert windows > 6 and all(shape[-2:] == (512, 512) for shape in crops)
    written = Image.open(tmp_path / "run" / "predictions" / "EORSSD" / f"{image.stem}.png")
    assert written.size == Image.open(image).size


def _non_square(path: Path) -> bool:
    with Image.open(path) as image:
        return image.width != image.height
