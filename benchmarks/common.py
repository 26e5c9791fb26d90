"""Shared pieces of the training-step and inference benchmarks.

Models are built from the repository's configs with the ``weft`` CLI (``build_cli``), so a
benchmark measures exactly the network a user trains. A *preset* names the model config, the
number of ViT blocks, the input side and the batch size; ``--config`` replaces its model config.

    python benchmarks/common.py readme   # gather benchmarks/results/*.md into README.md
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
BACKBONE = "--model.init_args.segmentor.init_args.backbone.init_args"
SEGMENTOR = "--model.init_args.segmentor.init_args"
VIT = f"{BACKBONE}.vit.init_args"


@dataclass(frozen=True)
class Preset:
    """One benchmark setting: model config, ViT depth (None: the config's), input and batch."""

    config: str
    depth: int | None
    size: int
    batch_cpu: int
    batch_gpu: int


PRESETS: dict[str, Preset] = {
    "tiny": Preset("configs/model/weft_t.yaml", 4, 64, 1, 2),
    "cpu-small": Preset("configs/model/weft_b.yaml", 4, 256, 2, 2),
    "paper": Preset("configs/model/weft_l_paper.yaml", None, 512, 2, 6),
}

# Backbone adaptation per method: WEFT is the model config itself; the others stack their
# baseline config from configs/ablation (same ViT, same head). ``full`` is full fine-tuning of
# the same WEFT model (the ViT unfrozen, layer-wise LR decay), the paper's comparison;
# ``full_vit`` fine-tunes the plain ViT without the WEFT branch.
METHOD_CONFIGS: dict[str, str | None] = {
    "weft": None,
    "full": "configs/ablation/weft_full.yaml",
    "full_vit": "configs/ablation/full_finetune.yaml",
    "frozen": "configs/ablation/frozen.yaml",
    "lora": "configs/ablation/peft_lora.yaml",
    "vpt": "configs/ablation/peft_vpt.yaml",
    "adaptformer": "configs/ablation/peft_adaptformer.yaml",
    "vit_adapter": "configs/ablation/peft_vit_adapter.yaml",
}


def model_args(
    config: str, method: str, depth: int | None, with_cp: bool | None
) -> tuple[list[str], list[str]]:
    """Config files and ``weft`` CLI overrides that build ``method`` on the model of ``config``."""
    if method not in METHOD_CONFIGS:
        raise SystemExit(f"Unknown --method {method!r}; choose from {', '.join(METHOD_CONFIGS)}.")
    configs = [resolve_config(config)]
    if METHOD_CONFIGS[method] is not None:
        configs.append(str(REPO / METHOD_CONFIGS[method]))
    overrides = []
    if depth is not None:
        overrides.append(f"{VIT}.model_kwargs={json.dumps({'depth': depth})}")
    if with_cp is not None:
        overrides.append(f"{SEGMENTOR}.checkpoint_backbone={str(with_cp).lower()}")
        overrides.append(f"{SEGMENTOR}.checkpoint_head={str(with_cp).lower()}")
    return configs, overrides


def resolve_config(config: str) -> str:
    """A model config path as given (from the working directory) or inside the repository."""
    for path in (Path(config), REPO / config):
        if path.is_file():
            return str(path.resolve())
    raise ValueError(f"Config file {config} does not exist; pass an existing --config FILE.")


def build_module(configs: Sequence[str], overrides: Sequence[str]) -> Any:
    """The WEFTModule that ``weft fit`` would train with these configs (nothing runs)."""
    from weft_lightning.api import build_model

    return build_model(configs, overrides)


def worker_env(mmap_threshold: int | None) -> dict[str, str]:
    """Environment of a measuring subprocess, optionally with glibc's mmap threshold fixed.

    glibc serves allocations below its (growing, up to 32 MiB) mmap threshold from the heap
    and keeps freed heap memory in the process, so peak RSS also counts memory freed long
    before the peak. With a small fixed ``MALLOC_MMAP_THRESHOLD_`` (such as 65536) every
    tensor-sized allocation is mapped separately and returned on free, so peak RSS measures the
    memory in use (the CPU counterpart of ``torch.cuda.max_memory_allocated``), at the price of
    page faults that slow the step: measure time and memory in separate runs.
    """
    env = dict(os.environ)
    if mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(mmap_threshold)
    return env


def rss_mib() -> float:
    """Resident memory of this process now (MiB)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mib() -> float:
    """Lifetime peak resident memory of this process (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def device_name(device: str) -> str:
    """A readable name of the device the benchmark ran on."""
    import torch

    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"{platform.processor() or platform.machine()} ({torch.get_num_threads()} threads)"


def environment(device: str) -> dict[str, Any]:
    """Versions and device for the JSON header."""
    import torch

    return {
        "device": device,
        "device_name": device_name(device),
        "torch": torch.__version__,
        "python": platform.python_version(),
    }


def median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub markdown table; floats get 3 significant digits."""

    def cell(value: Any) -> str:
        if isinstance(value, bool):
            return "yes" if value else "no"
        if isinstance(value, float):
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        if isinstance(value, int):
            return f"{value:,}"
        return "-" if value is None else str(value)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(out: Path, report: dict[str, Any], table: str) -> None:
    """Write ``out`` (JSON) and the markdown table beside it (same stem, ``.md``)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(table + "\n")
    print(table)


def write_readme(results: Path = RESULTS) -> Path:
    """Gather every table of ``results`` (``*.md`` beside a JSON) into ``README.md``."""
    parts = [
        "# Benchmark results",
        "",
        "Written by `make bench` (CPU) and `benchmarks/gpu_check.sh` (CUDA). Each section is the",
        "table of one JSON file in this folder; the JSON holds the settings and raw figures.",
        "Memory on CPU is the peak RSS minus the RSS right after imports; on GPU it is",
        "`torch.cuda.max_memory_allocated`; a title ending in `MALLOC_MMAP_THRESHOLD_=65536`",
        "means freed memory left the process, so the CPU peak counts memory in use only.",
        "Ratios are against `full`: full fine-tuning of the same WEFT model",
        "(`configs/ablation/weft_full.yaml`, the ViT unfrozen with layer-wise LR decay).",
        "The `cpu-small` preset cuts the ViT to 4 blocks, so the fixed cost of WEFT's expert",
        "branch weighs far more there than with the paper's 24 blocks: compare methods at",
        "`--preset paper` (ViT-L, 512x512) for figures that speak for the paper's setting.",
    ]
    for table in sorted(results.glob("*.md")):
        json_path = table.with_suffix(".json")
        if table.name == "README.md" or not json_path.is_file():
            continue
        command = json.loads(json_path.read_text()).get("command", "")
        parts += ["", f"## {json_path.name}", "", f"`{command}`", "", table.read_text().strip()]
    readme = results / "README.md"
    readme.write_text("\n".join(parts) + "\n")
    return readme


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] != ["readme"] or len(argv) > 2:
        print("usage: python benchmarks/common.py readme [RESULTS_DIR]", file=sys.stderr)
        return 2
    print(write_readme(Path(argv[1]) if len(argv) == 2 else RESULTS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
