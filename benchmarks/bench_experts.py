"""Forward+backward time of the wavelet expert mixture: dense vs sparse (vs fused) dispatch.

The mixture runs as inside the expert extractor: on the four scales (1/4 ... 1/32) of a square
input, at the paper's widths (C=64, 7 experts with k = 1..13, top-4), in training mode. Writes a
JSON with the per-mode times and ``dense / sparse`` and ``dense / fused`` time ratios (above 1:
the other mode is faster than the reference's dense dispatch).

    python benchmarks/bench_experts.py --device cuda --batch 6 --size 512
"""

from __future__ import annotations

import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path

import torch
from jsonargparse import ArgumentParser, Namespace

from weft_lightning.models.experts import ExpertMixture

KERNELS = (1, 3, 5, 7, 9, 11, 13)


def scale_inputs(batch: int, size: int, channels: int, device: torch.device) -> list[torch.Tensor]:
    """Random features at strides 4, 8, 16, 32 of a ``size`` x ``size`` image."""
    return [
        torch.randn(batch, channels, size // s, size // s, device=device, requires_grad=True)
        for s in (4, 8, 16, 32)
    ]


def step(mixture: ExpertMixture, inputs: list[torch.Tensor], dtype: torch.dtype | None) -> None:
    """One forward over the four scales and one backward of their sum."""
    device_type = inputs[0].device.type
    with torch.autocast(device_type, dtype=dtype or torch.float32, enabled=dtype is not None):
        loss = sum(mixture(x).float().mean() for x in inputs)
    loss.backward()


def time_mode(
    dispatch: str, args: Namespace, device: torch.device, dtype: torch.dtype | None
) -> dict[str, float]:
    torch.manual_seed(0)
    mixture = ExpertMixture(args.channels, KERNELS, args.top_k, dispatch).to(device).train()
    inputs = scale_inputs(args.batch, args.size, args.channels, device)
    for _ in range(args.warmup):
        step(mixture, inputs, dtype)
    _sync(device)
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        step(mixture, inputs, dtype)
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    result = {"median_ms": 1000 * times[len(times) // 2], "min_ms": 1000 * times[0]}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        step(mixture, inputs, dtype)
        result["peak_mem_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def parse_args(argv: Sequence[str] | None) -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=6, help="batch size (paper: 6 per GPU)")
    parser.add_argument("--size", type=int, default=512, help="input side in pixels")
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/experts.json"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if args.precision == "bf16" else None
    results = {mode: time_mode(mode, args, device, dtype) for mode in ("dense", "sparse", "fused")}
    report = {
        "benchmark": "expert mixture forward+backward, 4 scales of the input",
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor(),
        "torch": torch.__version__,
        "batch": args.batch,
        "size": args.size,
        "channels": args.channels,
        "kernel_sizes": list(KERNELS),
        "top_k": args.top_k,
        "precision": args.precision,
        "dense": results["dense"],
        "sparse": results["sparse"],
        "fused": results["fused"],
        "ratio_dense_over_sparse": results["dense"]["median_ms"] / results["sparse"]["median_ms"],
        "ratio_dense_over_fused": results["dense"]["median_ms"] / results["fused"]["median_ms"],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
