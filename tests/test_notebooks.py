"""The example notebooks run top to bottom in a fresh kernel and show what they promise."""

from __future__ import annotations

from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = Path(__file__).parents[1] / "notebooks"
TEST_DATA = Path(__file__).parent / "data"  # the committed real pairs


def execute(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """Run a notebook (files under tmp_path) and return the outputs of all its code cells."""
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    assert all(not c.get("outputs") for c in notebook.cells if c.cell_type == "code"), (
        f"{name} is committed with outputs; clear them"
    )
    # the kernel inherits this environment
    monkeypatch.setenv("WEFT_NOTEBOOK_DIR", str(tmp_path / "out"))
    monkeypatch.setenv("WEFT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("WEFT_SHARED_DATA", str(TEST_DATA))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    client = nbclient.NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    client.execute()
    return [o for c in notebook.cells if c.cell_type == "code" for o in c.outputs]


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def figures(outputs: list[dict]) -> int:
    return sum("image/png" in o.get("data", {}) for o in outputs)


@pytest.mark.slow
def test_quickstart_trains_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = execute("01_quickstart.ipynb", tmp_path, monkeypatch)
    printed = text(outputs)
    assert "Validation S-measure after 8 epochs" in printed
    assert "trainable" in printed
    assert figures(outputs) == 2  # predictions, routing
    assert list((tmp_path / "out").rglob("*.ckpt")), "no checkpoint under WEFT_NOTEBOOK_DIR"


def test_evaluate_prints_tables_and_curves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    outputs = execute("02_evaluate.ipynb", tmp_path, monkeypatch)
    printed = text(outputs)
    for method in ("Blurred GT", "Noisy GT"):
        assert f"| {method}" in printed and f"\n{method} & " in printed
    assert "EORSSD: 6 pairs" in printed
    assert "\\begin{tabular}" in printed and "exit status 0" in printed
    assert figures(outputs) == 2  # maps, curves
    assert (tmp_path / "out" / "results.csv").is_file()


def test_efficiency_plots_every_result(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    results = NOTEBOOKS.parent / "benchmarks" / "results"
    train = sorted(results.glob("train_step_*.json"))
    inference = sorted(results.glob("inference_*.json"))
    outputs = execute("03_efficiency.ipynb", tmp_path, monkeypatch)
    printed = text(outputs)
    assert figures(outputs) == len(train) + len(inference)
    for path in train:
        assert path.name in printed
    rows = [line.split() for line in printed.split("benchmark\n", 1)[1].splitlines() if line]
    assert [row[0] for row in rows] == ["weft", "full", "full_vit", "frozen"]
    assert all(row[4] in (row[2], "-") for row in rows), rows  # live count = benchmark's
