"""Training-step time and peak memory of WEFT vs full fine-tuning vs a frozen backbone.

Each method is built from the repository's configs (the preset's model config, with the
baseline's ``configs/ablation/peft_*.yaml`` stacked on it: same ViT, same head) and trained
with the module's own optimiser (AdamW over ``WEFTModule.parameter_groups``, so full
fine-tuning gets its layer-wise LR decay). Every method runs in its own subprocess so that
memory figures do not mix: ``torch.cuda.max_memory_allocated`` on GPU, and on CPU the peak RSS
minus the RSS right after imports (measured after building the model once on the
``meta`` device, so that every module the build imports is counted in the baseline; the figure
covers weights, gradients, optimiser state and activations). ``--malloc-mmap-threshold 65536``
makes freed tensors leave the process, so that peak RSS follows the memory in use, like
``max_memory_allocated`` on GPU (see ``common.worker_env``); it slows the step, so take times
from a run without it. ``--rounds N`` repeats the methods in turn (fresh processes each time)
and reports per-method medians and per-round ratios, for machines whose speed drifts.
Writes a JSON and a markdown table with time and memory ratios to full fine-tuning.

    python benchmarks/bench_train_step.py --preset cpu-small
    python benchmarks/bench_train_step.py --preset paper --device cuda --precision bf16 --with-cp
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import common
from jsonargparse import SUPPRESS, ActionYesNo, ArgumentParser, Namespace

DEFAULT_METHODS = ("weft", "full", "frozen")


def parse_args(argv: Sequence[str] | None) -> Namespace:
    parser = ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(common.PRESETS), default="cpu-small")
    parser.add_argument("--config", help="model config replacing the preset's (a WEFT model)")
    parser.add_argument("--depth", type=int, help="ViT blocks (default: the preset's)")
    parser.add_argument("--size", type=int, help="square input side in pixels (multiple of 32)")
    parser.add_argument("--batch", type=int, help="batch size (default: the preset's)")
    parser.add_argument(
        "--method",
        action="append",
        help=f"method to measure, repeatable: {', '.join(sorted(common.METHOD_CONFIGS))} "
        f"(default: {', '.join(DEFAULT_METHODS)})",
    )
    parser.add_argument(
        "--with-cp",
        action=ActionYesNo(no_prefix="no-"),
        default=True,
        help="gradient checkpointing of WEFT's frozen block groups and of full fine-tuning's "
        "block groups (default: on)",
    )
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--compile", action="store_true", help="torch.compile backbone and head")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads on CPU")
    parser.add_argument(
        "--malloc-mmap-threshold",
        type=int,
        help="glibc MALLOC_MMAP_THRESHOLD_ of the workers (65536: peak RSS = memory in use)",
    )
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="timed steps (median reported)")
    parser.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="measure the methods this many times in turn, each time in fresh processes; the "
        "median over rounds is reported, so that drifting machine speed hits all methods alike",
    )
    parser.add_argument("--out", type=Path, default=common.RESULTS / "train_step.json")
    parser.add_argument("--worker", help=SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=SUPPRESS)
    args = parser.parse_args(argv)
    preset = common.PRESETS[args.preset]
    args.config = args.config or preset.config
    try:
        common.resolve_config(args.config)
    except ValueError as error:
        parser.error(str(error))
    if args.rounds < 1:
        parser.error(f"--rounds {args.rounds}: use 1 or more.")
    unknown = sorted(set(args.method or ()) - set(common.METHOD_CONFIGS))
    if unknown:
        parser.error(
            f"--method {', '.join(unknown)}: use {', '.join(sorted(common.METHOD_CONFIGS))}."
        )
    args.depth = args.depth if args.depth is not None else preset.depth
    args.size = args.size or preset.size
    if args.size % 32:
        parser.error(f"--size {args.size}: use a multiple of 32.")
    return args


# ------------------------------------------------------------------ worker (one method)
def measure(args: Namespace) -> dict[str, Any]:
    """Build one method, run warm-up and timed steps; times, memory and parameter counts."""
    import torch

    from weft_lightning.models.introspection import parameter_report

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    configs, overrides = common.model_args(args.config, args.worker, args.depth, args.with_cp)
    with torch.device("meta"):  # imports everything the build needs, allocates nothing
        common.build_module(configs, overrides)
    gc.collect()
    baseline = common.rss_mib()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    module = common.build_module(configs, overrides).to(device).train()
    report = parameter_report(module.segmentor)
    optimizer = torch.optim.AdamW(
        module.parameter_groups(), lr=module.hparams.lr, betas=tuple(module.hparams.betas)
    )
    images, masks = batch(args.batch, args.size, device, args.channels_last)
    if args.channels_last:
        module.to(memory_format=torch.channels_last)
    if args.compile:
        module.segmentor.backbone.compile()
        module.segmentor.head.compile()
    step = make_step(module, optimizer, images, masks, args.precision)
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        start = time.perf_counter()
        loss = step()
        sync(device)
        times.append(time.perf_counter() - start)
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated(device) / 2**20
    else:
        peak = common.peak_rss_mib() - baseline
    return {
        "backbone": type(module.segmentor.backbone).__name__,
        "head": type(module.segmentor.head).__name__,
        "total_params": report["total_params"],
        "trainable_params": report["trainable_params"],
        "trainable_percent": report["trainable_percent"],
        "step_ms": 1000 * common.median(times),
        "step_ms_min": 1000 * min(times),
        "images_per_s": args.batch / common.median(times),
        "peak_mem_mib": peak,
        "baseline_rss_mib": baseline,
        "last_loss": float(loss),
    }


def batch(size_b: int, side: int, device: Any, channels_last: bool) -> tuple[Any, Any]:
    """Random normalised images and blob-shaped binary masks (fixed seed)."""
    import torch
    import torch.nn.functional as F

    generator = torch.Generator().manual_seed(0)
    images = torch.randn(size_b, 3, side, side, generator=generator)
    coarse = torch.rand(size_b, 1, side // 32, side // 32, generator=generator)
    masks = (F.interpolate(coarse, size=(side, side), mode="bilinear") > 0.5).float()
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    return images.to(device), masks.to(device)


def make_step(module: Any, optimizer: Any, images: Any, masks: Any, precision: str) -> Any:
    """One training step as Lightning runs it: autocast forward, fp32 loss, backward, AdamW."""
    import torch

    device_type = images.device.type

    def step() -> Any:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device_type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            loss = module.segmentor.loss(images, masks)["loss"]
        loss.backward()
        optimizer.step()
        return loss.detach()

    return step


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------ parent (all methods)
def run_worker(method: str, argv: Sequence[str], mmap_threshold: int | None) -> dict[str, Any]:
    """Measure ``method`` in a fresh Python process and read its result."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, __file__, *argv, "--worker", method, "--worker-out", str(out)]
        env = common.worker_env(mmap_threshold)
        done = subprocess.run(command, capture_output=True, text=True, env=env)
        if done.returncode != 0 or not out.is_file():
            sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
            raise SystemExit(f"bench_train_step: method {method!r} failed (see above).")
        return json.loads(out.read_text())


def combine_rounds(rounds: list[dict[str, dict[str, Any]]], batch: int) -> dict[str, dict]:
    """One result per method from several rounds: median step time, fastest step, highest peak,
    and each round's step time (and ratio to full fine-tuning, when it was measured)."""
    combined = {}
    for method in rounds[0]:
        runs = [r[method] for r in rounds]
        result = dict(runs[0])
        result["step_ms"] = common.median([r["step_ms"] for r in runs])
        result["step_ms_min"] = min(r["step_ms_min"] for r in runs)
        result["images_per_s"] = batch / (result["step_ms"] / 1000)
        result["peak_mem_mib"] = max(r["peak_mem_mib"] for r in runs)
        result["round_step_ms"] = [r["step_ms"] for r in runs]
        if "full" in rounds[0]:
            result["round_time_vs_full"] = [
                r[method]["step_ms"] / r["full"]["step_ms"] for r in rounds
            ]
        combined[method] = result
    return combined


def with_ratios(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Add ``time_vs_full`` and ``memory_vs_full`` to every method when full was measured."""
    full = results.get("full")
    for result in results.values():
        result["time_vs_full"] = result["step_ms"] / full["step_ms"] if full else None
        result["memory_vs_full"] = result["peak_mem_mib"] / full["peak_mem_mib"] if full else None
    return results


def table(report: dict[str, Any]) -> str:
    header = [
        "method",
        "trainable params",
        "trainable %",
        "step ms (median)",
        "images/s",
        "peak MiB",
        "time / full",
        "memory / full",
    ]
    rows = [
        [
            name,
            r["trainable_params"],
            r["trainable_percent"],
            r["step_ms"],
            r["images_per_s"],
            r["peak_mem_mib"],
            r["time_vs_full"],
            r["memory_vs_full"],
        ]
        for name, r in report["methods"].items()
    ]
    s = report["settings"]
    title = (
        f"Training step, {s['config']} (depth {s['depth'] or 'as configured'}), "
        f"{s['size']}x{s['size']}, batch {s['batch']}, {s['precision']}, "
        f"checkpointing {'on' if s['with_cp'] else 'off'}, compile {s['compile']}, "
        f"channels_last {s['channels_last']}, {report['env']['device_name']}"
    )
    if s.get("rounds", 1) > 1:
        title += f", median of {s['rounds']} rounds"
    if s.get("malloc_mmap_threshold") is not None:
        title += f", MALLOC_MMAP_THRESHOLD_={s['malloc_mmap_threshold']}"
    return f"{title}\n\n{common.markdown_table(header, rows)}"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.device is None:
        import torch

        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.batch is None:
        preset = common.PRESETS[args.preset]
        args.batch = preset.batch_gpu if args.device.startswith("cuda") else preset.batch_cpu
    if args.worker:
        args.worker_out.write_text(json.dumps(measure(args)))
        return 0
    methods = list(dict.fromkeys(args.method or DEFAULT_METHODS))
    passed = [*argv, "--device", args.device, "--batch", str(args.batch)]
    rounds = [
        {m: run_worker(m, passed, args.malloc_mmap_threshold) for m in methods}
        for _ in range(args.rounds)
    ]
    results = combine_rounds(rounds, args.batch)
    settings = {
        k: getattr(args, k)
        for k in ("preset", "config", "depth", "size", "batch", "precision", "with_cp")
    }
    settings |= {"compile": args.compile, "channels_last": args.channels_last}
    settings |= {"warmup": args.warmup, "steps": args.steps, "rounds": args.rounds}
    settings |= {"threads": args.threads}
    settings |= {"malloc_mmap_threshold": args.malloc_mmap_threshold}
    report = {
        "benchmark": "training step (forward, fp32 loss, backward, AdamW step)",
        "command": "python benchmarks/bench_train_step.py " + " ".join(argv),
        "env": common.environment(args.device),
        "settings": settings,
        "methods": with_ratios(results),
    }
    common.write_report(args.out, report, table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
