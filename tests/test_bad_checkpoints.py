"""Every kind of bad checkpoint ends `weft test` with exit status 1 and one line naming the
file and what is wrong: never a traceback, never code run from the file."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch
from helpers import tiny_demo_args

from weft_lightning.checkpoint import read_checkpoint
from weft_lightning.cli import main

MARKER = "code_ran"


class _Payload:
    """Unpickling this object would create a marker file (what a malicious file would do)."""

    def __init__(self, target: Path) -> None:
        self.target = target

    def __reduce__(self) -> tuple:
        return (pathlib.Path.touch, (self.target,))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good last.ckpt of the tiny demo, and one of a model with a narrower head."""
    out = {}
    for name, extra in (
        ("good", []),
        ("narrow", ["--model.init_args.segmentor.init_args.head.init_args.channels", "32"]),
    ):
        folder = tmp_path_factory.mktemp(name)
        assert main(["fit", *tiny_demo_args(folder), *extra]) == 0
        out[name] = next((folder / "run").rglob("last.ckpt"))
    return out


def _bad_file(kind: str, trained: dict[str, Path], folder: Path) -> tuple[Path, str]:
    """Write a checkpoint of ``kind``; return it and the words the error must contain."""
    good = trained["good"]
    path = folder / f"{kind}.ckpt"
    data = good.read_bytes()
    if kind == "empty":
        path.write_bytes(b"")
        return path, "empty"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 2])
        return path, "incomplete"
    if kind == "random":
        path.write_bytes(torch.randint(0, 256, (4096,), dtype=torch.uint8).numpy().tobytes())
        return path, "not a torch checkpoint"
    if kind == "text":
        path.write_text("model:\n  lr: 0.001\n")
        return path, "not a torch checkpoint"
    checkpoint = read_checkpoint(good)
    if kind == "state_dict":
        torch.save(checkpoint["state_dict"], path)
        return path, "plain state dict"
    if kind == "nan":
        name = next(k for k, v in checkpoint["state_dict"].items() if "head" in k and v.ndim > 1)
        checkpoint["state_dict"][name] = torch.full_like(checkpoint["state_dict"][name], torch.nan)
        torch.save(checkpoint, path)
        return path, "NaN or infinite weights"
    if kind == "other_width":
        return trained["narrow"], "has shape"
    assert kind == "malicious"
    checkpoint["payload"] = _Payload(folder / MARKER)
    torch.save(checkpoint, path)
    return path, "would run code"


KINDS = ["empty", "truncated", "random", "text", "state_dict", "nan", "other_width", "malicious"]


@pytest.mark.parametrize("force_unsafe", [False, True], ids=["default", "force_no_weights_only"])
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_checkpoint_gets_one_line(
    kind: str,
    force_unsafe: bool,
    trained: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if force_unsafe:
        monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    path, words = _bad_file(kind, trained, tmp_path)
    capsys.readouterr()
    assert main(["test", *tiny_demo_args(tmp_path), "--ckpt_path", str(path)]) == 1
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("weft: error:")]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert str(path) in errors[0] and words in errors[0], errors[0]
    if kind == "other_width":
        assert "(32," in errors[0] and "(64," in errors[0]  # both shapes
    assert not (tmp_path / MARKER).exists()


def test_resuming_from_a_truncated_checkpoint_file_fails_in_one_line(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, _ = _bad_file("truncated", trained, tmp_path)
    assert main(["fit", *tiny_demo_args(tmp_path), "--ckpt_path", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"weft: error: Checkpoint {path}" in err
