"""Dataset check (`weft data check`): decode every file and report what training trips on.

Problems (exit status 1): unreadable or truncated files, images without masks, masks without
images, image/mask size mismatches, non-image files, two files with the same stem, empty or
missing folders. Warnings (exit status 0): empty masks, non-binary masks, masks that are not
8-bit grayscale, split sizes that differ from the published benchmark. The report also gives
counts per split, the image size range, foreground-fraction statistics and the channel mean/std
to put in a config.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, UnidentifiedImageError

from weft_lightning.data.catalog import (
    DATASETS,
    IMAGE_EXTENSIONS,
    LayoutError,
    SplitDirs,
    check_counts,
    dataset_folders,
    detect_layout,
)
from weft_lightning.data.dataset import DataFileError, first_image_note, read_image
from weft_lightning.data.image_io import ImageReading
from weft_lightning.data.masks import FOREGROUND_THRESHOLD, MaskDecodeError, mask_to_u8

__all__ = ["Finding", "Report", "SplitReport", "check_dataset", "format_report"]


@dataclass(frozen=True)
class Finding:
    """One thing found about one file (or folder): a problem (error) or a warning."""

    level: str
    kind: str
    path: str
    detail: str = ""


@dataclass
class SplitReport:
    """What one split holds: counts, sizes, foreground statistics and findings."""

    split: str
    images_dir: str
    masks_dir: str | None
    num_images: int = 0
    num_masks: int = 0
    num_pairs: int = 0
    min_size: tuple[int, int] | None = None
    max_size: tuple[int, int] | None = None
    distinct_sizes: int = 0
    foreground: dict[str, float] = field(default_factory=dict)
    mask_modes: dict[str, int] = field(default_factory=dict)
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)
    reading: str | None = None
    findings: list[Finding] = field(default_factory=list)


@dataclass
class Report:
    """The whole check: one SplitReport per split, global findings and the time it took."""

    root: str
    dataset: str | None
    splits: list[SplitReport] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    seconds: float = 0.0
    workers: int = 1

    def all_findings(self) -> list[Finding]:
        return self.findings + [f for s in self.splits for f in s.findings]

    @property
    def ok(self) -> bool:
        return not any(f.level == "error" for f in self.all_findings())


#: Files an operating system leaves in folders; never data.
_OS_FILES = {"thumbs.db", "desktop.ini", "ehthumbs.db"}


# ----------------------------------------------------------------------------- folder listing
def _list_folder(folder: Path, role: str) -> tuple[dict[str, Path], list[Finding]]:
    """Files of folder by stem, with findings for non-image files, duplicates and emptiness."""
    if not folder.is_dir():
        return {}, [Finding("error", "missing folder", str(folder), f"{role} folder not found")]
    files: dict[str, Path] = {}
    findings = []
    litter = []
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            continue
        if path.name.startswith(".") or path.name.lower() in _OS_FILES:
            litter.append(path.name)
            continue
        if path.suffix.lower() not in IMAGE_EXTENSIONS:
            findings.append(
                Finding("error", "non-image file", str(path), f"not {'/'.join(IMAGE_EXTENSIONS)}")
            )
        elif path.stem in files:
            other = files[path.stem].name
            findings.append(Finding("error", "duplicate stem", str(path), f"same stem as {other}"))
        else:
            files[path.stem] = path
    if not files:
        findings.append(Finding("error", "empty folder", str(folder), f"no {role} files"))
    if litter:
        shown = ", ".join(sorted(set(litter))[:3])
        findings.append(
            Finding(
                "warning", "ignored files", str(folder), f"{len(litter)} OS/hidden files ({shown})"
            )
        )
    return files, findings


# ------------------------------------------------------------------------------- decoding
def _decode(path: Path) -> Image.Image:
    """Open and fully decode a file (so that truncation is found), or raise OSError."""
    with Image.open(path) as image:
        image.load()
        return image


def _decode_error(path: Path, error: Exception) -> Finding:
    if isinstance(error, UnidentifiedImageError):
        empty = path.stat().st_size == 0
        reason = "empty (0 bytes)" if empty else "not an image PIL can decode"
        return Finding("error", "unreadable file", str(path), reason)
    return Finding("error", "unreadable file", str(path), f"truncated or corrupt: {error}")


def _inspect_image(path: Path) -> dict:
    """Size and RGB histogram of an image as training reads it (TIFFs of any bit depth and
    band count included), or the finding that it cannot be decoded."""
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            rgb = Image.fromarray(read_image(path))
        else:
            rgb = _decode(path).convert("RGB")
        return {"size": (rgb.height, rgb.width), "hist": rgb.histogram()}
    except DataFileError as error:
        return {"finding": Finding("error", "unreadable file", str(path), str(error.__cause__))}
    except (OSError, ValueError, SyntaxError) as error:
        return {"finding": _decode_error(path, error)}


def _inspect_mask(path: Path) -> dict:
    """Size, mode and 8-bit value histogram of a mask, or the finding that it cannot be read."""
    try:
        image = _decode(path)
        values = mask_to_u8(image)
        hist = np.bincount(values.ravel(), minlength=256)
        return {"size": values.shape, "mode": image.mode, "hist": hist}
    except (OSError, ValueError, SyntaxError, MaskDecodeError) as error:
        return {"finding": _decode_error(path, error)}


# -------------------------------------------------------------------------------- a split
def _mask_findings(path: Path, info: dict) -> list[Finding]:
    """Warnings about a decoded mask: empty, non-binary, not 8-bit grayscale."""
    hist, out = info["hist"], []
    foreground = int(hist[FOREGROUND_THRESHOLD + 1 :].sum())
    if foreground == 0:
        top = int(np.flatnonzero(hist)[-1])
        detail = "no foreground" + (f" (values up to {top}, none > 128)" if top else "")
        out.append(Finding("warning", "empty mask", str(path), detail))
    other = int(hist.sum() - hist[0] - hist[255])
    if other:
        detail = f"{other} pixels neither 0 nor 255 (binarised at > 128)"
        out.append(Finding("warning", "non-binary mask", str(path), detail))
    if info["mode"] != "L":
        out.append(Finding("warning", f"{info['mode']} mask", str(path), "read as 8-bit luminance"))
    return out


def _pairing_findings(images: dict[str, Path], masks: dict[str, Path]) -> list[Finding]:
    out = [
        Finding("error", "image without mask", str(p), "no mask with this stem")
        for s, p in images.items()
        if s not in masks
    ]
    out += [
        Finding("error", "mask without image", str(p), "no image with this stem")
        for s, p in masks.items()
        if s not in images
    ]
    return out


def _statistics(report: SplitReport, sizes: list, fractions: list, hist: np.ndarray) -> None:
    """Fill the size range, foreground statistics and channel mean/std of a split."""
    if sizes:
        report.min_size = (min(h for h, _ in sizes), min(w for _, w in sizes))
        report.max_size = (max(h for h, _ in sizes), max(w for _, w in sizes))
        report.distinct_sizes = len(set(sizes))
    if fractions:
        f = np.asarray(fractions)
        nonzero = f[f > 0]
        report.foreground = {
            "mean": float(f.mean()),
            "median": float(np.median(f)),
            "min_nonzero": float(nonzero.min()) if len(nonzero) else 0.0,
            "max": float(f.max()),
        }
    if hist.sum():
        levels = np.arange(256) / 255.0
        counts = hist.reshape(3, 256)
        n = counts.sum(1)
        mean = (counts * levels).sum(1) / n
        var = (counts * levels**2).sum(1) / n - mean**2
        report.mean = [round(float(m), 4) for m in mean]
        report.std = [round(float(s), 4) for s in np.sqrt(np.maximum(var, 0))]


def check_split(
    split: SplitDirs, pool: ThreadPoolExecutor, others: frozenset[str] = frozenset()
) -> SplitReport:
    """Decode every file of one split and collect its statistics and findings; ``others`` are
    the image stems of the splits that share its mask folder, whose masks are theirs."""
    report = SplitReport(split.split, str(split.images), str(split.masks) if split.masks else None)
    images, findings = _list_folder(split.images, "image")
    masks: dict[str, Path] = {}
    if split.masks is not None:
        masks, mask_findings = _list_folder(split.masks, "mask")
        masks = {stem: path for stem, path in masks.items() if stem in images or stem not in others}
        findings += mask_findings + _pairing_findings(images, masks)
    report.num_images, report.num_masks = len(images), len(masks)
    if images:  # what training will decide for these images, said once, as fit says it
        report.reading = first_image_note(next(iter(images.values())), ImageReading())
    image_info = dict(zip(images, pool.map(_inspect_image, images.values()), strict=True))
    mask_info = dict(zip(masks, pool.map(_inspect_mask, masks.values()), strict=True))
    modes: Counter[str]
    sizes, fractions, hist, modes = [], [], np.zeros(768, np.int64), Counter()
    for info in image_info.values():
        if "finding" in info:
            findings.append(info["finding"])
            continue
        sizes.append(info["size"])
        hist += np.asarray(info["hist"], np.int64)
    for stem, info in mask_info.items():
        if "finding" in info:
            findings.append(info["finding"])
            continue
        modes[info["mode"]] += 1
        findings += _mask_findings(masks[stem], info)
        fractions.append(float(info["hist"][FOREGROUND_THRESHOLD + 1 :].sum() / info["hist"].sum()))
        image = image_info.get(stem, {})
        if "size" in image and tuple(image["size"]) != tuple(info["size"]):
            (ih, iw), (mh, mw) = image["size"], info["size"]
            detail = f"mask {mw}x{mh} but image {images[stem].name} is {iw}x{ih} (W x H)"
            findings.append(Finding("error", "size mismatch", str(masks[stem]), detail))
        elif "size" in image:
            report.num_pairs += 1
    if report.num_pairs == 0:
        where = (
            f"{split.images} and {split.masks}"
            if split.masks
            else f"{split.images} (no mask folder)"
        )
        findings.append(
            Finding(
                "error",
                "no usable pairs",
                str(split.images),
                f"looked at {where}: a split needs images and masks of the same stem and size",
            )
        )
    report.mask_modes = dict(modes)
    report.findings = findings
    _statistics(report, sizes, fractions, hist)
    return report


# ---------------------------------------------------------------------------- a dataset
def _other_splits_stems(splits: list[SplitDirs]) -> list[frozenset[str]]:
    """For each split, the image stems of the other splits that share its mask folder (CAMO
    as released keeps the masks of both splits in one ``GT/``)."""
    stems = [frozenset(_list_folder(s.images, "image")[0]) for s in splits]
    return [
        frozenset().union(
            *(
                theirs
                for other, theirs in zip(splits, stems, strict=True)
                if other is not split and split.masks is not None and other.masks == split.masks
            )
        )
        for split in splits
    ]


def _identify(root: Path) -> str | None:
    """The catalog name of a dataset folder, from its own name."""
    key = "".join(c for c in root.name.lower() if c.isalnum())
    return next((name for name, info in DATASETS.items() if key in info.names()), None)


def _datasets_under(root: Path) -> dict[str, dict[str, SplitDirs]]:
    """Layouts of the dataset folders directly under a folder that holds several datasets."""
    found = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        try:
            found[sub.name] = detect_layout(sub)
        except LayoutError:
            continue
    return found


def _root_splits(root: Path, report: Report) -> list[tuple[str | None, SplitDirs]]:
    """(dataset, split) pairs of a dataset folder, or of each dataset in a folder of datasets."""
    try:
        return [(report.dataset, s) for s in detect_layout(root).values()]
    except LayoutError as error:
        nested = _datasets_under(root) if root.is_dir() else {}
        if not nested:
            report.findings.append(Finding("error", "layout", str(root), str(error)))
        return [
            (_identify(root / name), SplitDirs(f"{name}/{s.split}", s.images, s.masks))
            for name, layout in nested.items()
            for s in layout.values()
        ]


def _duplicate_findings(root: Path) -> list[Finding]:
    """Warnings for known datasets found more than once under a folder of datasets."""
    findings = []
    for name in DATASETS:
        hits = dataset_folders(root, name)
        if len(hits) > 1:
            others = ", ".join(str(p) for p in hits[1:])
            detail = f"{name} also at {others}; fit and test use this one (the shallowest)"
            findings.append(Finding("warning", "duplicate dataset", str(hits[0]), detail))
    return findings


def _count_findings(root: Path, splits: list[tuple[str | None, SplitDirs]]) -> list[Finding]:
    """Warnings for known datasets whose split sizes differ from the published ones."""
    by_dataset: dict[str, dict[str, SplitDirs]] = {}
    for dataset, split in splits:
        if dataset is not None:
            by_dataset.setdefault(dataset, {})[split.split.rsplit("/", 1)[-1]] = split
    return [
        Finding("warning", "split size", str(root), message)
        for dataset, layout in by_dataset.items()
        for message in check_counts(dataset, layout, warn=False)
    ]


def check_dataset(
    root: str | Path | None = None,
    images: str | Path | None = None,
    masks: str | Path | None = None,
    workers: int | None = None,
) -> Report:
    """Check a dataset folder (layout detected), a folder of dataset folders, or one explicit
    image/mask folder pair."""
    workers = workers or min(8, 2 * (os.cpu_count() or 1))
    start = time.perf_counter()
    splits: list[tuple[str | None, SplitDirs]]
    if images is not None:
        report = Report(str(images), None, workers=workers)
        splits = [(None, SplitDirs("custom", Path(images), Path(masks) if masks else None))]
    else:
        root = Path(str(root))
        report = Report(str(root), _identify(root), workers=workers)
        splits = _root_splits(root, report)
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file must be found, never padded
    try:
        with ThreadPoolExecutor(workers) as pool:
            shared = _other_splits_stems([split for _, split in splits])
            report.splits = [
                check_split(split, pool, others)
                for (_, split), others in zip(splits, shared, strict=True)
            ]
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous
    if root is not None:
        report.findings += _count_findings(Path(root), splits)
        if report.dataset is None:  # a folder of datasets
            report.findings += _duplicate_findings(Path(root))
    report.seconds = time.perf_counter() - start
    return report


# ------------------------------------------------------------------------------ the report
def _size(hw: tuple[int, int] | None) -> str:
    return f"{hw[1]}x{hw[0]}" if hw else "-"


def _split_lines(s: SplitReport) -> list[str]:
    lines = [
        f"split {s.split}: {s.num_images} images, {s.num_masks} masks, {s.num_pairs} usable pairs",
        f"  images: {s.images_dir}",
        f"  masks : {s.masks_dir or '(none)'}",
        f"  image size (W x H): {_size(s.min_size)} .. {_size(s.max_size)}"
        f" ({s.distinct_sizes} distinct)",
    ]
    if s.foreground:
        fg = s.foreground
        lines.append(
            f"  foreground fraction: mean {fg['mean']:.2%}, median {fg['median']:.2%}, "
            f"smallest non-empty {fg['min_nonzero']:.3%}, max {fg['max']:.2%}"
        )
    kinds = Counter(f.kind for f in s.findings if f.level == "warning")
    lines.append(
        f"  empty masks: {kinds['empty mask']}, non-binary masks: {kinds['non-binary mask']}, "
        f"mask modes: {', '.join(f'{k} {v}' for k, v in sorted(s.mask_modes.items())) or '-'}"
    )
    if s.mean:
        lines.append(f"  image mean (RGB, 0-1): {s.mean}, std: {s.std}")
    if s.reading:
        lines.append(f"  reading: {s.reading}")
    return lines


def _finding_lines(findings: list[Finding], level: str, max_list: int | None) -> list[str]:
    chosen = [f for f in findings if f.level == level]
    title = "Problems" if level == "error" else "Warnings"
    lines = [f"{title} ({len(chosen)}):" if chosen else f"{title}: none"]
    by_kind: dict[str, list[Finding]] = {}
    for f in chosen:
        by_kind.setdefault(f.kind, []).append(f)
    for kind, items in by_kind.items():
        lines.append(f"  {kind} ({len(items)}):")
        shown = items if max_list is None else items[:max_list]
        lines += [f"    {f.path}" + (f": {f.detail}" if f.detail else "") for f in shown]
        if len(shown) < len(items):
            lines.append(f"    ... and {len(items) - len(shown)} more (--max-list 0 lists all)")
    return lines


def format_report(report: Report, max_list: int | None = 20) -> str:
    """Human-readable report; every problem is listed, warnings up to max_list per kind."""
    head = f"weft data check: {report.root}"
    lines = [head + (f" (known dataset {report.dataset})" if report.dataset else "")]
    for split in report.splits:
        lines += _split_lines(split)
    findings = report.all_findings()
    lines += _finding_lines(findings, "error", None)
    lines += _finding_lines(findings, "warning", max_list)
    files = sum(s.num_images + s.num_masks for s in report.splits)
    verdict = "OK" if report.ok else "PROBLEMS FOUND"
    lines.append(
        f"{verdict}: decoded {files} files in {report.seconds:.1f} s "
        f"({report.workers} threads); exit status {0 if report.ok else 1}"
    )
    return "\n".join(lines)
