"""Result tables: a concise console table, CSV, and LaTeX with the best three per column marked."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence

from weft_lightning.metrics import METRIC_KEYS

__all__ = [
    "LABELS",
    "LATEX_STYLES",
    "LOWER_IS_BETTER",
    "format_results",
    "format_table",
    "grid",
    "latex_escape",
    "to_csv",
    "to_latex",
    "value_ranks",
]

LABELS = {
    "sm": "Sm",
    "mae": "MAE",
    "em_adp": "adpEm",
    "em_mean": "meanEm",
    "em_max": "maxEm",
    "fm_adp": "adpFm",
    "fm_mean": "meanFm",
    "fm_max": "maxFm",
    "wfm": "wFm",
    "iou": "IoU",
    "dice": "Dice",
    "miou": "mIoU",
    "mdice": "mDice",
    "mfscore": "mFscore",
}
LOWER_IS_BETTER = frozenset({"mae"})

Results = dict[str, dict[str, dict[str, float]]]  # method -> dataset -> metric -> value


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None or math.isnan(value):
        return "-"
    return f"{value:.{digits}f}"


def grid(header: list[str], rows: list[list[str]], text_columns: int = 1) -> str:
    """Markdown table: names left-aligned, numbers right-aligned."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        padded = [
            c.ljust(w) if i < text_columns else c.rjust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "| " + " | ".join(padded) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def _keys(keys: Sequence[str] | None, present: list[dict[str, float]]) -> list[str]:
    if keys is not None:
        return list(keys)
    return [k for k in METRIC_KEYS if any(k in m for m in present)]


def format_table(results: dict[str, dict[str, float]], keys: Sequence[str] | None = None) -> str:
    """Datasets as rows, measures as columns (a Markdown table that reads well in a terminal)."""
    cols = _keys(keys, list(results.values()))
    header = ["Dataset", *(LABELS.get(k, k) for k in cols)]
    rows = [[name, *(_fmt(values.get(k)) for k in cols)] for name, values in results.items()]
    return grid(header, rows)


def format_results(results: Results, keys: Sequence[str] | None = None) -> str:
    """Method x dataset rows for several methods (Markdown)."""
    cols = _keys(keys, [m for per in results.values() for m in per.values()])
    header = ["Method", "Dataset", *(LABELS.get(k, k) for k in cols)]
    rows = [
        [method, dataset, *(_fmt(values.get(k)) for k in cols)]
        for method, per in results.items()
        for dataset, values in per.items()
    ]
    return grid(header, rows, text_columns=2)


def _csv_value(value: float | None) -> str:
    return "" if value is None or math.isnan(value) else repr(float(value))


def to_csv(results: Results, counts: dict[str, dict[str, int]] | None = None) -> str:
    """One row per (method, dataset): method, dataset, images, then every measure."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["method", "dataset", "images", *METRIC_KEYS])
    for method, per in results.items():
        for dataset, values in per.items():
            images = (counts or {}).get(method, {}).get(dataset, "")
            writer.writerow(
                [method, dataset, images, *(_csv_value(values.get(k)) for k in METRIC_KEYS)]
            )
    return out.getvalue()


def value_ranks(values: Sequence[float | None], key: str, digits: int) -> list[int | None]:
    """Rank (0 = best) of each printed value among the distinct printed values of a column."""
    shown = [None if v is None or math.isnan(v) else round(v, digits) for v in values]
    distinct = sorted({v for v in shown if v is not None}, reverse=key not in LOWER_IS_BETTER)
    return [None if v is None else distinct.index(v) for v in shown]


LATEX_STYLES = (r"\textbf{%s}", r"\underline{%s}", r"\textit{%s}")


def latex_escape(text: str) -> str:
    """Text with LaTeX's special characters escaped."""
    return "".join("\\" + c if c in "&%$#_{}" else c for c in text)


def _latex_cells(
    results: Results, datasets: list[str], cols: list[str], digits: int
) -> dict[str, list[str]]:
    """Formatted cells per method, the best three of each column styled."""
    cells: dict[str, list[str]] = {m: [] for m in results}
    for dataset in datasets:
        for key in cols:
            column = [per.get(dataset, {}).get(key) for per in results.values()]
            ranks = value_ranks(column, key, digits)
            for method, value, rank in zip(results, column, ranks, strict=True):
                text = "--" if rank is None else f"{value:.{digits}f}"
                cells[method].append(
                    LATEX_STYLES[rank] % text if rank is not None and rank < 3 else text
                )
    return cells


def to_latex(results: Results, keys: Sequence[str] | None = None, digits: int = 3) -> str:
    """Methods as rows, (dataset, measure) as columns (booktabs); in each column the best value
    is bold, the second underlined, the third italic (MAE: lower is better)."""
    datasets = list(dict.fromkeys(d for per in results.values() for d in per))
    cols = list(keys) if keys is not None else list(METRIC_KEYS)
    cells = _latex_cells(results, datasets, cols, digits)
    group = rf"\multicolumn{{{len(cols)}}}{{c}}"
    top = " & ".join(["", *(group + "{" + latex_escape(d) + "}" for d in datasets)])
    arrow = {True: r"$\downarrow$", False: r"$\uparrow$"}
    labels = [LABELS.get(k, k) + arrow[k in LOWER_IS_BETTER] for k in cols]
    lines = [
        rf"\begin{{tabular}}{{l{'c' * len(cols) * len(datasets)}}}",
        r"\toprule",
        top + r" \\",
        " & ".join(["Method", *labels * len(datasets)]) + r" \\",
        r"\midrule",
        *(" & ".join([latex_escape(m), *row]) + r" \\" for m, row in cells.items()),
        r"\bottomrule",
        r"\end{tabular}",
    ]
    return "\n".join(lines) + "\n"
