"""Exact resume, as a kill-and-resume campaign: a run killed with SIGKILL mid-epoch, during a
checkpoint write or after its last validation, with 0 or 2 loader workers, and resumed with
`--ckpt_path last`, ends with the same trainable weights, optimiser state, logged metrics and
best checkpoint as the uninterrupted run with the same seed."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import tiny_data_args

from weft_lightning.checkpoint import read_checkpoint
from weft_lightning.lightning_cli import find_checkpoint

REPO = Path(__file__).parents[1]
EPOCHS = 4
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
              init_args:
                model_name: vit_tiny_patch16_224
                model_kwargs: {depth: 4}
                drop_path_rate: 0.1
            conv_channels: 16
            kernel_sizes: [1, 3, 5]
            top_k: 2
            deform_heads: 4
            deform_points: 2
            extra_extractors: 0
"""


def fit_command(tmp_path: Path, root: Path, workers: int = 0) -> list[str]:
    """`weft fit` of a tiny WEFT for EPOCHS short epochs, deterministic, with augmentation."""
    tiny = tmp_path / "tiny_weft.yaml"
    tiny.write_text(TINY_WEFT)
    return [
        sys.executable, "-m", "weft_lightning.cli", "fit",
        "--config", str(REPO / "configs" / "demo.yaml"),
        "--config", str(tiny),
        "--trainer.default_root_dir", str(root),
        "--trainer.deterministic", "true",
        "--trainer.max_epochs", str(EPOCHS),
        "--trainer.limit_train_batches", "3",
        "--trainer.limit_val_batches", "1",
        *tiny_data_args(tmp_path, 12, 2),
        "--data.init_args.num_workers", str(workers),
    ]  # fmt: skip


def best_of(checkpoint: dict) -> tuple[str, float]:
    """The file name and score of the best checkpoint recorded in a checkpoint."""
    state = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("ModelCheckpoint"))
    return Path(state["best_model_path"]).name, float(state["best_model_score"])


def newest_last(root: Path) -> Path | None:
    found = sorted(root.rglob("last.ckpt"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def run(command: list[str]) -> subprocess.CompletedProcess[str]:
    """Run a command to its successful end; its output is returned."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def _readable_last(root: Path) -> dict | None:
    path = newest_last(root)
    if path is None:
        return None
    try:
        return read_checkpoint(path)
    except (ValueError, RuntimeError, EOFError):
        return None  # still being written


def _writing(root: Path) -> bool:
    folder = root / "lightning_logs" / "version_0" / "checkpoints"
    try:
        return any(entry.name.endswith(".partial") for entry in os.scandir(folder))
    except FileNotFoundError:
        return False


KILL_POINTS = {
    # the first epoch's checkpoint exists and the second epoch is running
    "mid_epoch": lambda root: (c := _readable_last(root)) is not None and c["epoch"] == 0,
    # a later checkpoint is half written (the atomic writer's hidden partial file exists)
    "checkpoint_write": lambda root: _readable_last_fast(root) and _writing(root),
    # the last epoch's validation and checkpoint are done, the process has not ended yet
    "after_last_validation": lambda root: (
        (c := _readable_last(root)) is not None and c["epoch"] == EPOCHS - 1
    ),
}


def _readable_last_fast(root: Path) -> bool:
    return (root / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def kill_at(command: list[str], root: Path, point: str) -> None:
    """Start the run and SIGKILL it at ``point`` (see KILL_POINTS)."""
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    reached = KILL_POINTS[point]
    deadline = time.monotonic() + 900
    while not reached(root) and time.monotonic() < deadline:
        assert process.poll() is None, f"the run ended before {point}"
        time.sleep(0.0002 if point == "checkpoint_write" else 0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL


def logged_metrics(root: Path) -> dict[tuple[str, int], str]:
    """Every logged (metric, step) -> value over the run's CSV logs, later versions last."""
    values: dict[tuple[str, int], str] = {}
    for path in sorted(root.rglob("metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1])):
        with path.open() as file:
            for row in csv.DictReader(file):
                for key, value in row.items():
                    if key not in ("step", "epoch") and value not in ("", None):
                        values[key, int(row["step"])] = value
    return values


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    """One uninterrupted run per worker count, shared by the kill points."""
    roots = {}
    for workers in (0, 2):
        folder = tmp_path_factory.mktemp(f"whole{workers}")
        run(fit_command(folder, folder / "run", workers))
        roots[workers] = folder / "run"
    return roots


CASES = [(workers, point) for workers in (0, 2) for point in KILL_POINTS]


@pytest.mark.slow
@pytest.mark.parametrize(("workers", "point"), CASES)
def test_a_killed_and_resumed_run_equals_the_uninterrupted_one(
    workers: int, point: str, uninterrupted: dict[int, Path], tmp_path: Path
) -> None:
    whole, broken = uninterrupted[workers], tmp_path / "broken"
    kill_at(fit_command(tmp_path, broken, workers), broken, point)
    kept = newest_last(broken)
    assert kept is not None and read_checkpoint(kept)  # a valid checkpoint survived the kill
    resumed_run = run([*fit_command(tmp_path, broken, workers), "--ckpt_path", "last"])
    assert "starting from scratch" not in resumed_run.stderr

    expected = read_checkpoint(newest_last(whole))
    resumed = read_checkpoint(newest_last(broken))
    assert resumed["global_step"] == expected["global_step"] == EPOCHS * 3
    assert resumed["epoch"] == expected["epoch"]
    assert resumed["state_dict"].keys() == expected["state_dict"].keys()
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    moments = zip(
        resumed["optimizer_states"][0]["state"].values(),
        expected["optimizer_states"][0]["state"].values(),
        strict=True,
    )
    for mine, theirs in moments:
        assert torch.equal(mine["exp_avg"], theirs["exp_avg"])
    assert logged_metrics(broken) == logged_metrics(whole)
    # `best` is the best of the whole run, whichever side of the kill it was on
    assert best_of(resumed) == best_of(expected)
    assert find_checkpoint(broken, "best").name == best_of(expected)[0]


def _inside_an_epoch(tmp_path: Path, root: Path, processes: int) -> list[str]:
    """Two epochs of 4 one-image batches, validated (and checkpointed) every 2 batches, so a
    checkpoint falls inside an epoch; on 1 or 2 CPU processes; the LR schedule spans 8 steps
    whatever ``--trainer.max_steps`` says."""
    ddp = ["--trainer.strategy", "ddp", "--trainer.devices", "2", "--trainer.accelerator", "cpu"]
    return [
        *fit_command(tmp_path, root, 0),
        "--trainer.max_epochs", "2",
        "--trainer.limit_train_batches", "4",
        "--trainer.val_check_interval", "2",
        "--data.init_args.batch_size", "1",
        "--model.init_args.max_steps", "8",
        *(ddp if processes > 1 else []),
    ]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize("processes", [1, 2])
def test_a_run_resumed_inside_an_epoch_equals_the_uninterrupted_one(
    processes: int, tmp_path: Path
) -> None:
    """A checkpoint in the middle of an epoch (the paper's schedule validates every 8k
    iterations) resumes at the next batch, on one process and under DDP."""
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    run(_inside_an_epoch(tmp_path, whole, processes))
    run([*_inside_an_epoch(tmp_path, broken, processes), "--trainer.max_steps", "2"])
    stopped = read_checkpoint(newest_last(broken))
    assert stopped["global_step"] == 2 and stopped["epoch"] == 0  # inside the first epoch
    (position,) = [v["training_position"] for k, v in stopped.items() if k.endswith("DataModule")]
    assert position == {"epoch": 0, "batches": 2, "finished": 0}
    resumed_run = run([*_inside_an_epoch(tmp_path, broken, processes), "--ckpt_path", "last"])
    assert "not exactly" not in resumed_run.stderr

    expected, resumed = read_checkpoint(newest_last(whole)), read_checkpoint(newest_last(broken))
    assert resumed["global_step"] == expected["global_step"] == 8
    for key, value in expected["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], value), key
    assert logged_metrics(broken) == logged_metrics(whole)
    assert best_of(resumed) == best_of(expected)
