"""Throughput of the whole metric suite, ours (SODMetrics) vs pysodmetrics, on the same maps.

Maps are 512x512 by default: ground truth from thresholded smooth noise (~15 % foreground),
predictions = blurred ground truth + Gaussian noise, saved as 8-bit maps. Both libraries score
the same 8-bit maps; the JSON holds images/s of each, their ratio and the largest absolute
difference of every dataset-level value.

    python benchmarks/bench_metrics.py [--images 48] [--size 512] [--output PATH]
"""

from __future__ import annotations

import json
import os
import platform
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from jsonargparse import ArgumentParser
from scipy import ndimage

from weft_lightning.metrics import SODMetrics

KEYS = ("sm", "mae", "em_adp", "em_mean", "em_max", "fm_adp", "fm_mean", "fm_max", "wfm")
DEFAULT_OUTPUT = Path(__file__).parent / "results" / "metrics.json"


def make_pairs(count: int, size: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(pred uint8, gt uint8 0/255) pairs: smooth blobs with ~15 % foreground, noisy maps."""
    rng = np.random.default_rng(seed)
    pairs = []
    for _ in range(count):
        field = ndimage.gaussian_filter(rng.random((size, size)), size / 16)
        gt = field > np.quantile(field, 0.85)
        blurred = ndimage.gaussian_filter(gt * 255.0, 4)
        pred = np.clip(blurred + rng.normal(0, 25, gt.shape), 0, 255).astype(np.uint8)
        pairs.append((pred, gt.astype(np.uint8) * 255))
    return pairs


class Reference:
    """pysodmetrics' MAE, S, E, F and weighted F, stepped image by image."""

    def __init__(self) -> None:
        import py_sod_metrics as psm

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.mae, self.sm, self.em = psm.MAE(), psm.Smeasure(), psm.Emeasure()
            self.fm, self.wfm = psm.Fmeasure(), psm.WeightedFmeasure()

    def update(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> None:
        for pred, gt in pairs:
            for measure in (self.mae, self.sm, self.em, self.fm, self.wfm):
                measure.step(pred, gt)

    def compute(self) -> dict[str, float]:
        e, f = self.em.get_results()["em"], self.fm.get_results()["fm"]
        values = {
            "sm": self.sm.get_results()["sm"],
            "mae": self.mae.get_results()["mae"],
            "em_adp": e["adp"],
            "em_mean": e["curve"].mean(),
            "em_max": e["curve"].max(),
            "fm_adp": f["adp"],
            "fm_mean": f["curve"].mean(),
            "fm_max": f["curve"].max(),
            "wfm": self.wfm.get_results()["wfm"],
        }
        return {k: float(v) for k, v in values.items()}


def interleaved(
    pairs: list[tuple[np.ndarray, np.ndarray]], batch_size: int
) -> tuple[float, float, dict[str, float], dict[str, float]]:
    """Seconds and values of both suites, alternating batch by batch so that both see the same
    machine load (this CPU is shared). Ours is fed float probability batches, as in a test loop.
    """
    probs = torch.stack([torch.from_numpy(p).float() / 255 for p, _ in pairs])
    masks = torch.stack([torch.from_numpy(g) for _, g in pairs])
    reference, ours = Reference(), SODMetrics()
    ref_s = our_s = 0.0
    for i in range(0, len(pairs), batch_size):
        start = time.perf_counter()
        reference.update(pairs[i : i + batch_size])
        middle = time.perf_counter()
        ours.update(probs[i : i + batch_size], masks[i : i + batch_size])
        end = time.perf_counter()
        ref_s, our_s = ref_s + middle - start, our_s + end - middle
    start = time.perf_counter()
    our_values = {k: float(v) for k, v in ours.compute().items()}
    our_s += time.perf_counter() - start
    return ref_s, our_s, reference.compute(), our_values


def main(argv: list[str] | None = None) -> int:
    """Run both suites and write the JSON report."""
    parser = ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48, help="number of image pairs")
    parser.add_argument("--size", type=int, default=512, help="side of the square maps")
    parser.add_argument("--batch-size", type=int, default=8, help="images per update() call")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="JSON to write")
    args = parser.parse_args(argv)

    pairs = make_pairs(args.images, args.size)
    interleaved(pairs[:2], args.batch_size)  # warm-up (imports, allocator)
    ref_s, our_s, ref, ours = interleaved(pairs, args.batch_size)
    report = {
        "images": args.images,
        "size": [args.size, args.size],
        "batch_size": args.batch_size,
        "foreground_fraction": float(np.mean([(g > 128).mean() for _, g in pairs])),
        "pysodmetrics_images_per_s": args.images / ref_s,
        "ours_images_per_s": args.images / our_s,
        "pysodmetrics_ms_per_image": 1000 * ref_s / args.images,
        "ours_ms_per_image": 1000 * our_s / args.images,
        "speedup": ref_s / our_s,
        "max_abs_diff": {k: abs(ours[k] - ref[k]) for k in KEYS},
        "ours": ours,
        "pysodmetrics": ref,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_1min": os.getloadavg()[0],
        "machine": f"{platform.processor() or platform.machine()}, {platform.python_version()}",
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in list(report)[:9]}, indent=2))
    print("max |diff|:", max(report["max_abs_diff"].values()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
