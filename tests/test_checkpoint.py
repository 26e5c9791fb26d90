"""Trainable-only checkpoints: contents, reload through the CLI, refusal of another backbone."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml
from helpers import tiny_demo_args
from torch import nn

from weft_lightning.callbacks import ModelCheckpoint
from weft_lightning.checkpoint import (
    CONFIG_KEY,
    FORMAT_KEY,
    AtomicCheckpointIO,
    backbone_identity,
    fingerprint,
    read_checkpoint,
    resume_checkpoint,
)
from weft_lightning.cli import main

REPO = Path(__file__).parents[1]
VIT = "--model.init_args.segmentor.init_args.backbone.init_args.vit.init_args"


def test_fingerprint_tracks_exact_values() -> None:
    a = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.ones(3)}
    same = {"b": torch.ones(3), "w": torch.arange(6.0).reshape(2, 3).clone()}
    assert fingerprint(a) == fingerprint(same)
    changed = {"w": a["w"].clone(), "b": a["b"]}
    changed["w"][1, 2] += 1e-6
    assert fingerprint(changed) != fingerprint(a)
    assert fingerprint({"w": a["w"].reshape(3, 2), "b": a["b"]}) != fingerprint(a)


def test_identity_follows_in_place_changes_of_frozen_weights() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    model[0].requires_grad_(False)
    first = backbone_identity(model)
    assert first["frozen_params"] == 20 and first["model_name"] is None
    assert backbone_identity(model) == first
    model[1].weight.data.add_(1.0)  # trainable weights do not change the identity
    assert backbone_identity(model) == first
    with torch.no_grad():
        model[0].weight.mul_(2.0)
    assert backbone_identity(model)["fingerprint"] != first["fingerprint"]


def test_resume_checkpoint_picks_newest_last_or_hpc(tmp_path: Path) -> None:
    assert resume_checkpoint(tmp_path / "missing") is None
    (tmp_path / "a" / "checkpoints").mkdir(parents=True)
    older = tmp_path / "a" / "checkpoints" / "last.ckpt"
    torch.save({"global_step": 1}, older)
    torch.save({"global_step": 3}, tmp_path / "a" / "checkpoints" / "best-epoch=03.ckpt")
    assert resume_checkpoint(tmp_path) == older
    newer = tmp_path / "hpc_ckpt_2.ckpt"
    torch.save({"global_step": 2}, newer)
    os.utime(older, (1, 1))
    assert resume_checkpoint(tmp_path) == newer


def test_resume_skips_a_newer_incomplete_checkpoint_in_one_line(tmp_path: Path) -> None:
    """A kill during a checkpoint write leaves a cut file: the intact older one is used."""
    whole = tmp_path / "v0" / "last.ckpt"
    whole.parent.mkdir()
    torch.save({"global_step": 4, "weights": torch.ones(1000)}, whole)
    os.utime(whole, (1, 1))
    cut = tmp_path / "v1" / "last.ckpt"
    cut.parent.mkdir()
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "last.ckpt").write_bytes(b"")
    with pytest.warns(UserWarning) as caught:
        assert resume_checkpoint(tmp_path) == whole
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert str(cut) in messages[0] and "incomplete" in messages[0]
    assert str(tmp_path / "v2" / "last.ckpt") in messages[1] and "empty" in messages[1]
    cut.unlink()
    (tmp_path / "v2" / "last.ckpt").unlink()
    whole.unlink()
    assert resume_checkpoint(tmp_path) is None


def test_last_checkpoint_follows_every_epoch_when_the_score_gets_worse(tmp_path: Path) -> None:
    """``last.ckpt`` is the latest state, not a copy of the best one (Lightning 2.6 writes it
    only with a new top-k checkpoint), so that ``--ckpt_path last`` resumes where a run stopped."""
    import lightning as L
    from lightning.pytorch.demos.boring_classes import BoringModel

    class Worsening(BoringModel):
        def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
            self.log("score", -float(self.current_epoch))  # best at epoch 0, worse after

    callback = ModelCheckpoint(monitor="score", mode="max", save_last=True)
    trainer = L.Trainer(
        default_root_dir=tmp_path,
        max_epochs=3,
        limit_train_batches=2,
        limit_val_batches=1,
        callbacks=[callback],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(Worsening())
    assert read_checkpoint(callback.best_model_path)["global_step"] == 2
    assert Path(callback.last_model_path).name == "last.ckpt"
    assert read_checkpoint(callback.last_model_path)["global_step"] == trainer.global_step == 6
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)  # every file atomic


def test_checkpoint_keeps_trainable_weights_and_reloads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = tiny_demo_args(tmp_path)
    assert main(["fit", *args]) == 0
    path = next((tmp_path / "run").rglob("last.ckpt"))
    checkpoint = read_checkpoint(path)
    state = checkpoint["state_dict"]
    assert not any(".vit." in key for key in state), "frozen ViT weights must not be saved"
    assert any(key.startswith("segmentor.head.") for key in state)
    identity = checkpoint[FORMAT_KEY]["backbone"]
    assert identity["model_name"] == "vit_tiny_patch16_224" and identity["frozen_params"] > 0
    assert checkpoint[FORMAT_KEY]["dropped_keys"] > 0
    assert checkpoint["optimizer_states"] and checkpoint["lr_schedulers"]
    config = yaml.safe_load(checkpoint[CONFIG_KEY])
    demo = yaml.safe_load((REPO / "configs" / "demo.yaml").read_text())
    assert config["model"]["init_args"]["lr"] == demo["model"]["init_args"]["lr"]
    saved = sum(t.numel() * t.element_size() for t in state.values())
    assert saved < identity["frozen_params"] * 4  # smaller than the frozen part it leaves out

    # a new process rebuilds the frozen ViT from the config (same seed) and loads strictly
    assert main(["test", *args, "--ckpt_path", str(path)]) == 0

    # another random backbone (other seed) or another model is refused with a clear message
    capsys.readouterr()
    assert main(["test", *args, "--seed_everything", "7", "--ckpt_path", str(path)]) == 1
    assert "seed_everything" in capsys.readouterr().err
    other = [f"{VIT}.model_name", "vit_small_patch16_224"]
    assert main(["validate", *args, *other, "--ckpt_path", str(path)]) == 1
    assert "vit_small_patch16_224" in capsys.readouterr().err


@pytest.mark.slow
def test_paper_preset_checkpoint_is_small(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """WEFT-L (ViT-L/16 + WEFT + Mask2Former, random init): one step, then the file sizes."""
    args = tiny_demo_args(tmp_path)
    args += ["--model.init_args.segmentor", str(REPO / "configs" / "model" / "weft_l_paper.yaml")]
    args += ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"]
    args += ["--data.init_args.num_train", "2", "--data.init_args.num_test", "2"]
    args += ["--data.init_args.batch_size", "2", "--data.init_args.eval_batch_size", "2"]
    assert main(["fit", *args]) == 0
    path = next((tmp_path / "run").rglob("last.ckpt"))
    checkpoint = read_checkpoint(path)
    trainable = sum(t.numel() * t.element_size() for t in checkpoint["state_dict"].values())
    frozen = checkpoint[FORMAT_KEY]["backbone"]["frozen_params"] * 4
    on_disk = path.stat().st_size
    with capsys.disabled():
        print(
            f"\nWEFT-L checkpoint on disk: {on_disk / 1e6:.1f} MB (trainable weights "
            f"{trainable / 1e6:.1f} MB + AdamW state); full state dict: "
            f"{(trainable + frozen) / 1e6:.1f} MB"
        )
    assert on_disk < 250e6
    assert trainable + frozen > 7 * on_disk


def test_a_resumed_run_keeps_the_best_checkpoint_of_the_whole_run(tmp_path: Path) -> None:
    """Resuming writes into a new version folder; a worse epoch after the resume must not
    become `best` (stock Lightning forgets the earlier folder's scores)."""
    import lightning as L

    best = tmp_path / "version_0" / "checkpoints" / "best-epoch=02.ckpt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"weights")
    before = ModelCheckpoint(dirpath=best.parent, monitor="val/sm", mode="max")
    before.best_k_models = {str(best): torch.tensor(0.4748)}
    before.best_model_path, before.best_model_score = str(best), torch.tensor(0.4748)
    before.kth_best_model_path, before.kth_value = str(best), torch.tensor(0.4748)

    resumed = ModelCheckpoint(
        dirpath=tmp_path / "version_1" / "checkpoints", monitor="val/sm", mode="max"
    )
    resumed.load_state_dict(before.state_dict())
    assert resumed.best_model_path == str(best)
    assert float(resumed.best_model_score) == pytest.approx(0.4748)
    trainer = L.Trainer(logger=False, enable_checkpointing=False, accelerator="cpu", devices=1)
    assert not resumed.check_monitor_top_k(trainer, torch.tensor(0.4702))  # worse: kept out
    assert resumed.check_monitor_top_k(trainer, torch.tensor(0.4800))  # better: replaces it


class _CutShort:
    """Pickling this object fails half-way through a checkpoint write (as a kill would)."""

    def __reduce__(self) -> tuple:
        raise KeyboardInterrupt


def test_a_checkpoint_write_cut_short_leaves_the_previous_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    writer = AtomicCheckpointIO()
    writer.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "global_step": 1}, path)
    big = {"state_dict": {"w": torch.zeros(1 << 20)}, "global_step": 2, "cut": _CutShort()}
    with pytest.raises(KeyboardInterrupt):
        writer.save_checkpoint(big, path)
    assert read_checkpoint(path)["global_step"] == 1
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]  # no partial file left
