"""PR curves and F-measure-vs-threshold curves per dataset, one line per method (PNG)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_curves"]

Curves = dict[str, dict[str, dict[str, np.ndarray]]]  # method -> dataset -> curve name -> (256,)


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def plot_curves(curves: Curves, out_dir: Path) -> list[Path]:
    """Write ``<dataset>_pr.png`` and ``<dataset>_fm.png`` under out_dir; return the paths.

    Curves are those of :meth:`SODMetrics.curves` (entry k is threshold 255 - k).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    datasets = list(dict.fromkeys(d for per in curves.values() for d in per))
    thresholds = np.arange(255, -1, -1)
    written = []
    for dataset in datasets:
        pr, pr_ax = plt.subplots(figsize=(5, 4.5))
        fm, fm_ax = plt.subplots(figsize=(5, 4.5))
        for method, per in curves.items():
            if dataset in per:
                c = per[dataset]
                pr_ax.plot(c["recall"], c["precision"], label=method)
                fm_ax.plot(thresholds, c["fm_curve"], label=method)
        pr_ax.set(
            xlabel="Recall",
            ylabel="Precision",
            title=f"{dataset}: PR curve",
            xlim=(0, 1),
            ylim=(0, 1.02),
        )
        fm_ax.set(
            xlabel="Threshold",
            ylabel="F-measure",
            title=f"{dataset}: F-measure",
            xlim=(0, 255),
            ylim=(0, 1.02),
        )
        for fig, ax, suffix in ((pr, pr_ax, "pr"), (fm, fm_ax, "fm")):
            ax.grid(alpha=0.3)
            ax.legend(loc="lower left", fontsize="small")
            path = out_dir / f"{_safe(dataset)}_{suffix}.png"
            fig.tight_layout()
            fig.savefig(path, dpi=120)
            plt.close(fig)
            written.append(path)
    return written
