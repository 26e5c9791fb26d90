"""Inference speed: ``whole`` vs ``slide`` inference, fp32 vs bf16, with and without compile.

The model is the preset's WEFT config built with the ``weft`` CLI, in eval mode, called as
``WEFTModule.predict_maps`` with a fixed-size test protocol (what ``weft test`` and ``weft
predict`` run, one view per image). ``slide`` covers the input with overlapping ``--crop``
windows at ``--stride`` (``--window-batch`` of them per forward pass); by default the input is
1.5x the training side, so ``slide`` runs 2x2 windows of the training size. Compiled settings
run last (``torch.compile`` of backbone and head), after every eager one.

    python benchmarks/bench_inference.py --preset cpu-small
    python benchmarks/bench_inference.py --preset paper --device cuda --compile both
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence
from itertools import product
from pathlib import Path
from typing import Any

import common
from jsonargparse import ArgumentParser, Namespace


def parse_args(argv: Sequence[str] | None) -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="cpu-small")
    parser.add_argument("--config", help="model config replacing the preset's")
    parser.add_argument("--depth", type=int, help="ViT blocks (default: the preset's)")
    parser.add_argument("--size", type=int, help="square input side (default: 1.5x the crop)")
    parser.add_argument("--crop", type=int, help="slide window (default: the preset's side)")
    parser.add_argument("--stride", type=int, help="slide step (default: 2/3 of the crop)")
    parser.add_argument("--batch", type=int, default=1, help="images per call")
    parser.add_argument(
        "--window-batch", type=int, default=4, help="windows per forward pass (slide)"
    )
    parser.add_argument("--mode", nargs="+", choices=["whole", "slide"], default=["whole", "slide"])
    parser.add_argument(
        "--precision", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"]
    )
    parser.add_argument(
        "--compile",
        choices=["off", "on", "both"],
        default="off",
        help="torch.compile settings to measure (default off; compiling is slow on CPU)",
    )
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", type=Path, default=common.RESULTS / "inference.json")
    args = parser.parse_args(argv)
    preset = common.PRESETS[args.preset]
    args.config = args.config or preset.config
    try:
        common.resolve_config(args.config)
    except ValueError as error:
        parser.error(str(error))
    args.depth = args.depth if args.depth is not None else preset.depth
    args.crop = args.crop or preset.size
    args.size = args.size or round(1.5 * args.crop / 32) * 32
    args.stride = args.stride or round(2 * args.crop / 3)
    for name in ("size", "crop"):
        if getattr(args, name) % 32:
            parser.error(f"--{name} {getattr(args, name)}: use a multiple of 32.")
    if not 0 < args.stride <= args.crop:
        parser.error(f"--stride {args.stride}: must be in (0, crop={args.crop}].")
    return args


def time_setting(
    module: Any, images: Any, mode: str, precision: str, args: Namespace
) -> dict[str, float]:
    """Median latency per call and images per second of one (mode, precision) setting."""
    import torch

    from weft_lightning.inference import InferenceProtocol

    protocol = InferenceProtocol(
        resize="fixed",
        size=args.size,
        mode=mode,
        window=args.crop,
        stride=args.stride,
        batch=args.window_batch,
    )
    device = images.device
    use_bf16 = precision == "bf16"
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16):
        for _ in range(args.warmup):
            probs = module.predict_maps(list(images), protocol)
        _sync(device)
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            probs = module.predict_maps(list(images), protocol)
            _sync(device)
            times.append(time.perf_counter() - start)
    latency = common.median(times)
    return {
        "latency_ms": 1000 * latency,
        "latency_ms_min": 1000 * min(times),
        "images_per_s": images.shape[0] / latency,
        "mean_prob": float(torch.stack(probs).float().mean()),
        "crops_per_image": len(protocol.windows(protocol.view_size(args.size, args.size, 1.0))),
    }


def _sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: Namespace) -> list[dict[str, Any]]:
    """Every requested (compile, mode, precision) setting on one model; eager ones first."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs, overrides = common.model_args(args.config, "weft", args.depth, None)
    module = common.build_module(configs, overrides).to(device).eval()
    segmentor = module.segmentor
    images = torch.randn(
        args.batch, 3, args.size, args.size, generator=torch.Generator().manual_seed(0)
    )
    images = images.to(device)
    compiled = {"off": [False], "on": [True], "both": [False, True]}[args.compile]
    rows = []
    for compile_ in compiled:
        if compile_:
            segmentor.backbone.compile()
            segmentor.head.compile()
        for mode, precision in product(args.mode, args.precision):
            result = time_setting(module, images, mode, precision, args)
            rows.append({"mode": mode, "precision": precision, "compile": compile_, **result})
    return rows


def table(report: dict[str, Any]) -> str:
    s = report["settings"]
    header = ["mode", "precision", "compile", "latency ms (median)", "images/s"]
    rows = [
        [r["mode"], r["precision"], r["compile"], r["latency_ms"], r["images_per_s"]]
        for r in report["results"]
    ]
    title = (
        f"Inference, {s['config']} (depth {s['depth'] or 'as configured'}), "
        f"{s['size']}x{s['size']} input, batch {s['batch']}, slide windows {s['crop']} "
        f"stride {s['stride']}, {report['env']['device_name']}"
    )
    return f"{title}\n\n{common.markdown_table(header, rows)}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    settings = {
        k: getattr(args, k)
        for k in ("preset", "config", "depth", "size", "crop", "stride", "batch", "threads")
    }
    report = {
        "benchmark": "inference (Segmentor.predict_proba, eval mode)",
        "command": "python benchmarks/bench_inference.py " + " ".join(argv),
        "env": common.environment(args.device),
        "settings": settings | {"warmup": args.warmup, "repeats": args.repeats},
        "results": measure(args),
    }
    common.write_report(args.out, report, table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
