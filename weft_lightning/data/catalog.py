"""Known benchmark datasets, the folder layouts they ship with, and the domains they belong to.

``detect_layout`` finds the image and mask folders of each split under a dataset folder for the
common conventions (``train/images`` + ``train/masks``, ``Imgs``/``GT``, ``Image``/``GT_Object``,
``test-images``/``test-labels``, ``image``/``mask``, ``DUTS-TR-Image``/``DUTS-TR-Mask``,
``Images/Train`` + ``GT/Train``, ...);
``locate`` finds a named dataset under a root and checks its file counts against the published
ones; ``DOMAINS`` says what each domain trains and tests on and with which training recipes.
Normalisation statistics per dataset split (``DatasetInfo.stats``) are those of the WEFT
reference's configs where it gives them (ORSSD, EORSSD, ORSI-4199: training and test splits
differ), ImageNet's otherwise.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, cast

from weft_lightning.constants import IMAGENET_MEAN, IMAGENET_STD
from weft_lightning.data.transforms import Augmentation

__all__ = [
    "DATASETS",
    "DOMAINS",
    "IMAGE_EXTENSIONS",
    "DatasetInfo",
    "DomainInfo",
    "LayoutError",
    "Recipe",
    "SplitDirs",
    "Stats",
    "count_files",
    "dataset_name",
    "detect_layout",
    "domain_sets",
    "find_dataset",
    "locate",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")

# Folder-name tokens (lower case, split at '-', '_', spaces and camel-case humps).
_SPLIT_TOKENS = {
    "train": "train",
    "training": "train",
    "tr": "train",
    "test": "test",
    "testing": "test",
    "te": "test",
    "val": "val",
    "valid": "val",
    "validation": "val",
}
_IMAGE_TOKENS = {"images", "image", "imgs", "img", "original", "rgb", "jpegimages"}
_MASK_TOKENS = {
    "masks",
    "mask",
    "gt",
    "labels",
    "label",
    "ground",
    "truth",
    "groundtruth",
    "pixelwisegt",
}
_NOT_MASK_TOKENS = {"edge", "edges", "instance", "instances", "contour", "boundary"}


class LayoutError(ValueError):
    """A dataset folder whose image/mask folders cannot be found or are ambiguous."""


@dataclass(frozen=True)
class SplitDirs:
    """Where one split of a dataset lives: an image folder and its mask folder."""

    split: str
    images: Path
    masks: Path | None


@dataclass(frozen=True)
class Stats:
    """Channel mean and std (RGB, 0-1 scale) that normalise a split's images."""

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    @classmethod
    def from_8bit(cls, mean: tuple[float, float, float], std: tuple[float, float, float]) -> Stats:
        """Statistics given on the 0-255 scale, as mmseg configs write them."""
        return cls(
            tuple(m / 255 for m in mean),  # type: ignore[arg-type]
            tuple(s / 255 for s in std),  # type: ignore[arg-type]
        )


IMAGENET = Stats()


@dataclass(frozen=True)
class DatasetInfo:
    """A published benchmark: its domain, folder names it ships under, split sizes and the
    normalisation statistics of its splits."""

    name: str
    domain: str
    counts: dict[str, int]
    aliases: tuple[str, ...] = ()
    stats: dict[str, Stats] = field(default_factory=dict)

    def names(self) -> set[str]:
        """Normalised folder names this dataset may be found under."""
        return {_key(n) for n in (self.name, *self.aliases)}

    def split_stats(self, split: str) -> Stats:
        """Statistics of ``split`` (``train``/``test``); ImageNet's when none are known."""
        return self.stats.get(split, IMAGENET)


Normalization = Literal["per_split", "training"]


@dataclass(frozen=True)
class Recipe:
    """A domain's training recipe: the augmentation of training crops and which statistics
    normalise evaluation images (``per_split``: each test set its own, as the WEFT reference
    does; ``training``: the training set's everywhere)."""

    augmentation: Augmentation
    normalization: Normalization = "training"


@dataclass(frozen=True)
class DomainInfo:
    """A domain's standard protocol: what it trains on, which test sets it reports, and its
    training recipes (the first one is the default)."""

    name: str
    train: tuple[tuple[str, str], ...]
    tests: tuple[tuple[str, str], ...]
    recipes: dict[str, Recipe]
    combined_train: tuple[str, ...] = field(default=())

    def recipe(self, name: str | None) -> Recipe:
        """The recipe ``name`` (None: the domain's default); unknown names raise naming the key."""
        if name is None:
            return next(iter(self.recipes.values()))
        if name not in self.recipes:
            raise ValueError(
                f"data.recipe={name!r} is not defined for the {self.name} domain; choose one of "
                f"{', '.join(self.recipes)}."
            )
        return self.recipes[name]


def _info(name: str, domain: str, counts: dict[str, int], *aliases: str) -> DatasetInfo:
    return DatasetInfo(name, domain, counts, aliases)


def _reference_stats(train: tuple, test: tuple) -> dict[str, Stats]:
    """Training and test statistics as the WEFT reference's configs give them (0-255 scale)."""
    return {"train": Stats.from_8bit(*train), "test": Stats.from_8bit(*test)}


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo(
            "ORSSD",
            "orsi",
            {"train": 600, "test": 200},
            stats=_reference_stats(
                ((81.25, 87.39, 79.41), (62.30, 54.89, 49.18)),
                ((83.62, 91.04, 82.90), (53.05, 48.69, 45.89)),
            ),
        ),
        DatasetInfo(
            "EORSSD",
            "orsi",
            {"train": 1400, "test": 600},
            stats=_reference_stats(
                ((89.35, 96.94, 91.85), (59.27, 50.63, 46.23)),
                ((93.46, 99.73, 94.31), (56.12, 46.93, 44.24)),
            ),
        ),
        DatasetInfo(
            "ORSI-4199",
            "orsi",
            {"train": 2000, "test": 2199},
            ("ORSI4199",),
            stats=_reference_stats(
                ((102.85, 107.51, 98.37), (55.99, 50.94, 51.75)),
                ((109.07, 112.21, 105.93), (59.25, 54.51, 55.68)),
            ),
        ),
        _info("COD10K", "cod", {"train": 3040, "test": 2026}, "COD10K-v3", "COD10K-v2"),
        _info("CAMO", "cod", {"train": 1000, "test": 250}, "CAMO-V.1.0-CVIU2019", "CAMO-COCO"),
        _info("CHAMELEON", "cod", {"test": 76}),
        _info("NC4K", "cod", {"test": 4121}),
        _info("COD-train", "cod", {"train": 4040}, "TrainDataset", "COD-TrainDataset"),
        _info("DUTS", "sod", {"train": 10553, "test": 5019}),
        _info("ECSSD", "sod", {"test": 1000}),
        _info("HKU-IS", "sod", {"test": 4447}, "HKUIS"),
        _info("PASCAL-S", "sod", {"test": 850}, "PASCALS"),
        _info("DUT-OMRON", "sod", {"test": 5168}, "DUTOMRON", "DUT-O"),
        _info("Kvasir-SEG", "polyp", {"train": 900, "test": 100}, "Kvasir"),
        _info("CVC-ClinicDB", "polyp", {"train": 550, "test": 62}, "ClinicDB", "CVC-612"),
        _info("CVC-ColonDB", "polyp", {"test": 380}, "ColonDB"),
        _info("ETIS-LaribPolypDB", "polyp", {"test": 196}, "ETIS", "ETIS-Larib"),
        _info("CVC-300", "polyp", {"test": 60}, "EndoScene", "CVC-EndoSceneStill"),
        _info("Polyp-train", "polyp", {"train": 1450}, "TrainDataset", "Polyp-TrainDataset"),
    )
}

# The WEFT reference's ORSI training pipeline (mmseg): keep-ratio rescale of (2048, 512) by
# 0.5-2.0, 512 crop with at most 75 % of one class, horizontal flip, photometric distortion;
# evaluation images normalised with their own test set's statistics.
ORSI_PAPER = Recipe(
    Augmentation(crop_size=512, rescale="keep_ratio", cat_max_ratio=0.75, photometric=True),
    normalization="per_split",
)
# The project's ORSI recipe: seen from above, any orientation is valid, so both flips and 90°
# rotations, and colour jitter.
ORSI_PROJECT = Recipe(
    Augmentation(crop_size=512, vertical_flip=True, rotate90=True, color_jitter=0.2)
)
# Camouflaged and salient objects: natural photographs with gravity, horizontal flips only,
# 384 px inputs (the fields' fixed-size protocol).
PHOTO_384 = Recipe(Augmentation(crop_size=384, color_jitter=0.2))
# Polyps: the endoscope has no up, so both flips and 90° rotations; mild colour jitter, as
# colour carries diagnostic meaning; 352 px as in the PraNet protocol.
POLYP_352 = Recipe(
    Augmentation(
        crop_size=352,
        scale_range=(0.75, 1.25),
        vertical_flip=True,
        rotate90=True,
        color_jitter=0.1,
    )
)

DOMAINS: dict[str, DomainInfo] = {
    "orsi": DomainInfo(
        "orsi",
        train=(("EORSSD", "train"),),
        tests=(("EORSSD", "test"), ("ORSSD", "test"), ("ORSI-4199", "test")),
        recipes={"paper": ORSI_PAPER, "project": ORSI_PROJECT},
    ),
    "cod": DomainInfo(
        "cod",
        train=(("COD10K", "train"), ("CAMO", "train")),
        tests=(("COD10K", "test"), ("CAMO", "test"), ("CHAMELEON", "test"), ("NC4K", "test")),
        recipes={"project": PHOTO_384},
        combined_train=("COD-train",),
    ),
    "sod": DomainInfo(
        "sod",
        train=(("DUTS", "train"),),
        tests=(
            ("DUTS", "test"),
            ("ECSSD", "test"),
            ("HKU-IS", "test"),
            ("PASCAL-S", "test"),
            ("DUT-OMRON", "test"),
        ),
        recipes={"project": PHOTO_384},
    ),
    "polyp": DomainInfo(
        "polyp",
        train=(("Kvasir-SEG", "train"), ("CVC-ClinicDB", "train")),
        tests=(
            ("Kvasir-SEG", "test"),
            ("CVC-ClinicDB", "test"),
            ("CVC-ColonDB", "test"),
            ("ETIS-LaribPolypDB", "test"),
            ("CVC-300", "test"),
        ),
        recipes={"project": POLYP_352},
        combined_train=("Polyp-train",),
    ),
}


def _tokens(name: str) -> list[str]:
    """Lower-case words of a folder name: 'DUTS-TR-Image' -> ['duts', 'tr', 'image']."""
    spaced = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", " ", name)
    return [t for t in re.split(r"[^A-Za-z0-9]+", spaced.lower()) if t]


_GENERIC_TOKENS = {*_SPLIT_TOKENS, *_IMAGE_TOKENS, *_MASK_TOKENS, "object", "objects", "set"}


def dataset_name(folder: str | Path) -> str:
    """The dataset a split folder belongs to, named as outputs and tables name it: the first
    folder upwards whose name is not a split, image or mask folder ('ECSSD/images' -> 'ECSSD',
    'COD10K/Test/GT_Object' -> 'COD10K', 'CVC-ClinicDB/Ground Truth' -> 'CVC-ClinicDB')."""
    path = Path(folder).resolve()
    for part in (path, *path.parents):
        words = _tokens(part.name)
        if words and not all(w in _GENERIC_TOKENS for w in words):
            return part.name
    return path.name or "dataset"


def _key(name: str) -> str:
    """Name without case or punctuation, for alias matching: 'CVC-ClinicDB' -> 'cvcclinicdb'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _role(name: str) -> tuple[str | None, str | None]:
    """(role, split) of a folder name: role 'images' or 'masks' (or None), split if it names one."""
    words = _tokens(name)
    split = next((_SPLIT_TOKENS[w] for w in words if w in _SPLIT_TOKENS), None)
    if any(w in _NOT_MASK_TOKENS for w in words):
        return None, split
    if any(w in _MASK_TOKENS for w in words):
        return "masks", split
    if any(w in _IMAGE_TOKENS for w in words):
        return "images", split
    return None, split


def _mask_rank(path: Path) -> int:
    """Prefer object-level ground truth ('GT_Object') over plain names when several exist."""
    words = _tokens(path.name)
    return 0 if "object" in words else 1


def _subdirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _pairs_in(folder: Path, default_split: str) -> list[SplitDirs]:
    """Image/mask folder pairs directly inside folder, grouped by the split their names give."""
    found: dict[str, dict[str, list[Path]]] = {}
    for sub in _subdirs(folder):
        role, split = _role(sub.name)
        if role is not None:
            found.setdefault(split or default_split, {}).setdefault(role, []).append(sub)
    pairs = []
    for split, roles in found.items():
        images = roles.get("images", [])
        masks = sorted(roles.get("masks", []), key=_mask_rank)
        if len(images) > 1:
            raise LayoutError(_ambiguous(folder, images))
        if len(masks) > 1 and _mask_rank(masks[0]) == _mask_rank(masks[1]):
            raise LayoutError(_ambiguous(folder, masks))
        if images:
            pairs += _split_inside(SplitDirs(split, images[0], masks[0] if masks else None))
    return pairs


def _split_inside(pair: SplitDirs) -> list[SplitDirs]:
    """Role folders that hold split folders (CAMO's ``Images/Train`` + ``GT/Train``) expand
    into one pair per split; a flat mask folder beside them (CAMO as released: ``Images/Train``,
    ``Images/Test`` + one ``GT/``) serves every split; any other pair is returned as it is."""
    if count_files(pair.images):
        return [pair]
    splits = {_role(d.name)[1]: d for d in _subdirs(pair.images) if _role(d.name)[1]}
    if not splits:
        return [pair]
    if count_files(pair.masks):
        return [SplitDirs(cast(str, split), images, pair.masks) for split, images in splits.items()]
    masks = {_role(d.name)[1]: d for d in _subdirs(pair.masks)} if pair.masks else {}
    # the keys are the non-empty splits kept by the filter above
    return [
        SplitDirs(cast(str, split), images, masks.get(split)) for split, images in splits.items()
    ]


def _ambiguous(folder: Path, candidates: list[Path]) -> str:
    names = ", ".join(p.name for p in candidates)
    return (
        f"Cannot tell which folder of {folder} to use among {names}; "
        "pass the image and mask folders explicitly."
    )


def detect_layout(folder: str | Path) -> dict[str, SplitDirs]:
    """Find each split's image and mask folders under a dataset folder, keyed by split name.

    Split folders (``train``, ``TrainDataset``, ``Test``, ``DUTS-TE``, ...) are looked into; a
    folder holding images and masks directly is one split named by those folders or the folder
    itself, else ``test`` (single-split benchmarks such as ECSSD). Raises LayoutError when
    nothing is found or a choice is ambiguous.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise LayoutError(f"Dataset folder {folder} does not exist.")
    own_split = _role(folder.name)[1] or "test"
    layout = {p.split: p for p in _pairs_in(folder, own_split)}
    for sub in _subdirs(folder):
        role, split = _role(sub.name)
        if role is None and split is not None and split not in layout:
            for pair in _pairs_in(sub, split):
                layout.setdefault(pair.split, pair)
    if not layout:
        seen = ", ".join(p.name for p in _subdirs(folder)) or "no sub-folders"
        raise LayoutError(
            f"No image/mask folders found under {folder} (it holds: {seen}). Expected e.g. "
            "train/images + train/masks, Imgs + GT, Image + GT_Object or test-images + "
            "test-labels; otherwise pass the image and mask folders explicitly."
        )
    return dict(sorted(layout.items()))


def count_files(folder: Path | None) -> int:
    """Number of image files (by extension) directly inside folder."""
    if folder is None or not folder.is_dir():
        return 0
    return sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)


def dataset_folders(root: Path, name: str, max_depth: int = 3) -> list[Path]:
    """Every folder of dataset ``name`` under root (by its name or aliases, any case),
    shallowest first; the root alone when its own name is one of the dataset's."""
    info = DATASETS.get(name)
    if info is None:
        raise KeyError(f"Unknown dataset {name!r}; known datasets: {', '.join(DATASETS)}.")
    names = info.names()
    if _key(root.name) in names:
        return [root]
    level = [root] if root.is_dir() else []
    hits: list[Path] = []
    for _ in range(max_depth):
        level = [sub for parent in level for sub in _subdirs(parent)]
        hits += [p for p in level if _key(p.name) in names]
    return hits


def find_dataset(root: str | Path, name: str, max_depth: int = 3) -> Path | None:
    """The folder of dataset ``name`` under root (by its name or aliases, any case); None if absent.

    The root itself matches when its own name is one of the dataset's names. When several
    folders match, the shallowest is used and a warning names the others.
    """
    root = Path(root)
    hits = dataset_folders(root, name, max_depth)
    if hits[:1] == [root]:
        return root
    if len(hits) > 1:
        others = ", ".join(str(p) for p in hits[1:])
        warnings.warn(
            f"Dataset {name} is under {root} {len(hits)} times; using {hits[0]} (the shallowest), "
            f"not {others}. Point data.root at the one you mean.",
            stacklevel=2,
        )
    return hits[0] if hits else None


def check_counts(name: str, layout: dict[str, SplitDirs], warn: bool = True) -> list[str]:
    """Messages (also warned unless ``warn`` is off) for splits whose image count differs from
    the published one."""
    info = DATASETS[name]
    messages = []
    for split, expected in info.counts.items():
        if split not in layout:
            continue
        found = count_files(layout[split].images)
        if found != expected:
            messages.append(
                f"Dataset {name}: {split} split has {found} images in {layout[split].images}, "
                f"the published {name} {split} split has {expected}."
            )
    for message in messages if warn else []:
        warnings.warn(message, stacklevel=2)
    return messages


def locate(root: str | Path, name: str) -> dict[str, SplitDirs]:
    """Find dataset ``name`` under root, detect its layout and check its counts (warnings)."""
    folder = find_dataset(root, name)
    if folder is None:
        names = ", ".join((name, *DATASETS[name].aliases))
        raise LayoutError(f"Dataset {name} not found under {root} (looked for folders {names}).")
    layout = detect_layout(folder)
    check_counts(name, layout)
    return layout


def domain_sets(root: str | Path, domain: str) -> tuple[dict[str, SplitDirs], dict[str, SplitDirs]]:
    """Training and test sets of a domain that are present under root, keyed by dataset name.

    Training uses the domain's combined training folder when present (e.g. COD's TrainDataset),
    else each standard training split found. Test sets absent from root are skipped.
    """
    info = DOMAINS.get(domain)
    if info is None:
        raise KeyError(f"Unknown domain {domain!r}; known domains: {', '.join(DOMAINS)}.")
    layouts: dict[str, dict[str, SplitDirs]] = {}

    def present(name: str) -> dict[str, SplitDirs]:
        if name not in layouts:
            layouts[name] = _present(root, name)
        return layouts[name]

    combined = {n: present(n)["train"] for n in info.combined_train if "train" in present(n)}
    train = combined or {n: present(n)[s] for n, s in info.train if s in present(n)}
    tests = {n: present(n)[s] for n, s in info.tests if s in present(n)}
    return train, tests


def _present(root: str | Path, name: str) -> dict[str, SplitDirs]:
    """Layout of dataset ``name`` under root, or an empty dict when it is not there."""
    folder = find_dataset(root, name)
    if folder is None:
        return {}
    layout = detect_layout(folder)
    check_counts(name, layout)
    return layout
