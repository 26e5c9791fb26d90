"""A short training run on real EORSSD pairs with the EORSSD config (reduced model)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import copy_pairs

from weft_lightning.cli import main

REPO = Path(__file__).parents[1]


@pytest.mark.slow
def test_eorssd_config_trains_on_real_pairs(real_data: Path, tmp_path: Path) -> None:
    root = tmp_path / "EORSSD"
    copy_pairs(real_data / "EORSSD" / "train", root / "train", 6)
    copy_pairs(real_data / "EORSSD" / "test", root / "test", 3)
    args = [
        "fit",
        "--config",
        str(REPO / "configs" / "orsi" / "eorssd.yaml"),
        "--model.init_args.segmentor",
        str(REPO / "configs" / "model" / "weft_t.yaml"),
        "--model.init_args.segmentor.init_args.backbone.init_args.vit.init_args.model_kwargs",
        "{depth: 4}",
        "--data.root",
        str(root),
        "--data.init_args.augmentation.crop_size",
        "64",
        "--model.init_args.protocol.test.size",
        "64",
        "--model.init_args.protocol.validation.size",
        "64",
        "--model.init_args.protocol.test.window",
        "64",
        "--model.init_args.protocol.validation.window",
        "64",
        "--model.init_args.protocol.test.stride",
        "48",
        "--model.init_args.protocol.validation.stride",
        "48",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.num_workers",
        "0",
        "--trainer.accelerator",
        "cpu",
        "--trainer.devices",
        "1",
        "--trainer.precision",
        "32-true",
        "--trainer.max_steps",
        "3",
        "--trainer.val_check_interval",
        "3",
        "--trainer.limit_val_batches",
        "2",
        "--trainer.default_root_dir",
        str(tmp_path / "run"),
    ]
    assert main(args) == 0
    assert list((tmp_path / "run").rglob("last.ckpt"))
