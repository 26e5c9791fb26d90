"""The package's shape: no import circles, layers that import only downwards, public exports,
one CLI on jsonargparse, and the private Lightning steps the platform relies on."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "weft_lightning"

#: Lowest first; a module may import from its own layer and the layers below (README tree).
LAYERS = (
    ("constants",),
    ("metrics", "models", "data"),
    ("evaluation", "inference", "checkpoint"),
    ("module", "callbacks"),
    ("config_files", "lightning_cli"),
    ("api", "experiments"),
    ("cli",),
)


def _module_names() -> dict[str, Path]:
    names = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (top-level and local imports alike)."""
    modules = _module_names()

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets: set[str | None] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets |= {resolve(f"{node.module}.{alias.name}") for alias in node.names}
            elif isinstance(node, ast.Import):
                targets |= {resolve(alias.name) for alias in node.names}
        graph[name] = {t for t in targets if t and t != name and t.startswith("weft_lightning")}
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return [*stack[stack.index(target) :], target]
            if target not in state and (found := visit(target)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _layer(module: str) -> int:
    name = module.removeprefix("weft_lightning.")
    best, depth = None, -1
    for index, members in enumerate(LAYERS):
        for member in members:
            if (name == member or name.startswith(member + ".")) and len(member) > depth:
                best, depth = index, len(member)
    assert best is not None, f"{module} belongs to no layer of LAYERS; add it"
    return best


def test_no_import_circle() -> None:
    assert _cycle(import_graph()) is None, " -> ".join(_cycle(import_graph()) or [])


def test_layers_import_only_downwards() -> None:
    upward = [
        f"{source} (layer {_layer(source)}) imports {target} (layer {_layer(target)})"
        for source, targets in import_graph().items()
        if source != "weft_lightning"
        for target in targets
        if target != "weft_lightning" and _layer(target) > _layer(source)
    ]
    assert not upward, "\n".join(upward)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_main_classes_are_exported() -> None:
    import weft_lightning.data as data
    import weft_lightning.metrics as metrics
    import weft_lightning.models as models

    for package, names in (
        (models, ("WEFTBackbone", "FrozenViT", "Segmentor", "Mask2FormerHead", "FPNHead")),
        (data, ("DomainDataModule", "SegmentationDataModule", "SyntheticDataModule")),
        (metrics, ("SODMetrics", "SMeasure", "EMeasure", "FMeasure", "MeanAbsoluteError")),
    ):
        for name in names:
            assert name in package.__all__ and inspect.isclass(getattr(package, name)), name


def test_no_argparse_anywhere() -> None:
    roots = [PACKAGE, PACKAGE.parent / "benchmarks"]
    users = [
        str(path)
        for root in roots
        for path in root.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if (isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names))
        or (isinstance(node, ast.ImportFrom) and node.module == "argparse")
    ]
    assert not users, users


@pytest.mark.parametrize(
    ("owner", "name", "parameters"),
    [
        ("lightning.pytorch.cli:LightningCLI", "_parse_ckpt_path", ["self"]),
        (
            "lightning.pytorch.callbacks:ModelCheckpoint",
            "_save_topk_checkpoint",
            ["self", "trainer", "monitor_candidates"],
        ),
    ],
)
def test_private_lightning_steps_we_override_still_exist(
    owner: str, name: str, parameters: list[str]
) -> None:
    """The platform overrides these private Lightning methods (see lightning_cli.py and
    callbacks/model_checkpoint.py); a Lightning release that renames them fails here."""
    import importlib

    module, cls = owner.split(":")
    method = getattr(getattr(importlib.import_module(module), cls), name)
    assert list(inspect.signature(method).parameters) == parameters


def test_model_checkpoint_keeps_the_step_marker_it_sets() -> None:
    from lightning.pytorch.callbacks import ModelCheckpoint

    assert hasattr(ModelCheckpoint(), "_last_global_step_saved")


def test_the_uniperceiver_vit_is_defined_once() -> None:
    """Its options live in configs/model/vit/uniperceiver_l16.yaml alone; the preset and the
    weight config point at that file instead of repeating it."""
    import yaml

    configs = PACKAGE.parent / "configs"
    home = configs / "model" / "vit" / "uniperceiver_l16.yaml"
    options = yaml.safe_load(home.read_text())["init_args"]["model_kwargs"]
    repeated = [
        f"{path.relative_to(configs)}: {key}"
        for path in configs.rglob("*.yaml")
        if path != home
        for key in options
        if f"{key}:" in path.read_text()
    ]
    assert not repeated, repeated
    assert "vit/uniperceiver_l16.yaml" in (configs / "model" / "weft_l_paper.yaml").read_text()
