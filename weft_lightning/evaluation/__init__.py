"""Folder-vs-folder evaluation of saved maps, result tables (console, CSV, LaTeX, JSON), curves."""

from weft_lightning.evaluation.pairing import EvaluationError, Pairing, pair_folders
from weft_lightning.evaluation.scoring import FolderResult, evaluate_folder, read_map
from weft_lightning.evaluation.tables import format_results, format_table, to_csv, to_latex

__all__ = [
    "EvaluationError",
    "FolderResult",
    "Pairing",
    "evaluate_folder",
    "format_results",
    "format_table",
    "pair_folders",
    "read_map",
    "to_csv",
    "to_latex",
]
