"""W&B logging offline: the run directory holds the resolved config, metrics, panels and tables."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import wandb
import yaml
from helpers import tiny_data_args
from wandb.proto import wandb_internal_pb2

from weft_lightning.cli import main

REPO = Path(__file__).parents[1]
TINY_WEFT = """
model:
  init_args:
    segmentor:
      init_args:
        backbone:
          class_path: weft_lightning.models.weft.WEFTBackbone
          init_args:
            vit:
              class_path: weft_lightning.models.backbone.FrozenViT
              init_args: {model_name: vit_tiny_patch16_224, model_kwargs: {depth: 4}}
            conv_channels: 16
            kernel_sizes: [1, 3, 5]
            top_k: 2
            deform_heads: 4
            deform_points: 2
            extra_extractors: 0
"""
BLOCK = 32768


def wandb_records(path: Path) -> Iterator[wandb_internal_pb2.Record]:
    """Records of a ``run-*.wandb`` file (W&B's LevelDB-style log of protobuf records)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = BLOCK - position % BLOCK
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (length == 0 and kind == 0):
            position += left
            continue
        chunk = data[position + 7 : position + 7 + length]
        position += 7 + length
        pending = chunk if kind in (1, 2) else pending + chunk
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            yield record


def run_contents(run_dir: Path) -> tuple[dict[str, object], set[str]]:
    """Config (key -> value) and the names of all logged history values of an offline run."""
    config: dict[str, object] = {}
    logged: set[str] = set()
    for record in wandb_records(next(run_dir.glob("run-*.wandb"))):
        kind = record.WhichOneof("record_type")
        if kind == "config":
            config.update({i.key: json.loads(i.value_json) for i in record.config.update})
        elif kind == "history":
            logged |= {i.key or "/".join(i.nested_key) for i in record.history.item}
    return config, logged


@pytest.mark.slow
def test_offline_wandb_run_has_config_metrics_and_media(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    tiny = tmp_path / "tiny_weft.yaml"
    tiny.write_text(TINY_WEFT)
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(tiny),
        "--config", str(REPO / "configs" / "logger" / "wandb.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.logger.init_args.offline", "true",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "2",
        *tiny_data_args(tmp_path, 8, 4),
    ]  # fmt: skip
    assert main(["fit", *args]) == 0  # the logger config brings the panel and routing callbacks
    assert main(["test", *args, "--ckpt_path", "last"]) == 0
    wandb.teardown()  # what the end of a `weft` process does: finish runs, flush their files
    # in one process the test stage logs into the same (still open) W&B run
    (run_dir,) = (tmp_path / "runs" / "wandb").glob("offline-run-*")
    config, logged = run_contents(run_dir)
    resolved = config["config"]["model"]["init_args"]["segmentor"]["init_args"]
    assert resolved["backbone"]["init_args"]["top_k"] == 2  # the full resolved config
    assert config["parameters"]["trainable_params"] > 0
    assert 0 < config["parameters"]["trainable_percent"] < 100
    assert {"val/sm", "val/mae", "val/wfm"} <= logged
    assert any(k.startswith("routing/train/expert0_k1/") for k in logged)
    assert {"test/synthetic/sm", "test/synthetic/wfm", "test/synthetic/em_max"} <= logged
    media = run_dir / "files" / "media"
    assert len(list((media / "images" / "val").glob("samples_*.png"))) == 4
    tables = {p.parent.name + "/" + p.name.split("_")[0] for p in media.rglob("*.table.json")}
    assert {"routing/train", "routing/val"} <= tables
    table = json.loads(next((media / "table" / "routing").glob("val_*.table.json")).read_text())
    assert table["columns"] == ["phase", "scale", "expert", "kernel", "chosen", "weight"]
    assert len(table["data"]) == 3


@pytest.mark.slow
def test_runs_sharing_a_wandb_folder_keep_their_own_records(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three runs with one save folder leave three resolved configs and three summaries."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = [
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(REPO / "configs" / "logger" / "wandb.yaml"),
        "--trainer.logger.init_args.save_dir", str(tmp_path / "runs"),
        "--trainer.logger.init_args.offline", "true",
        "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.max_epochs", "1",
        "--trainer.limit_train_batches", "1",
        "--trainer.limit_val_batches", "1",
        *tiny_data_args(tmp_path, 4, 2),
    ]  # fmt: skip
    weft = str(Path(sys.executable).parent / "weft")
    for seed in (1, 2, 3):  # three processes, as three jobs of a user would be
        command = [weft, "fit", *args, "--seed_everything", str(seed)]
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
    configs = sorted((tmp_path / "runs").rglob("config.yaml"))
    summaries = sorted((tmp_path / "runs").rglob("summary_fit.json"))
    assert len(configs) == 3 and len(summaries) == 3
    assert len({p.parent for p in configs}) == 3  # one folder per run
    seeds = {yaml.safe_load(p.read_text())["seed_everything"] for p in configs}
    assert seeds == {1, 2, 3}
