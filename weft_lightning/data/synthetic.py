"""Procedural aerial-looking scenes with salient objects, for the CPU demo and the tests.

Each image is a small remote-sensing-like scene (crop fields, water, roads) holding zero or more
objects (ships, planes, buildings, round tanks) at varied scales and orientations; the mask marks
the objects. Every image is drawn from its own generator seeded by (seed, split, index), so a
dataset is reproducible and a larger dataset extends a smaller one with the same seed.
The output has the layout of the real benchmarks: ``{train,test}/images/*.jpg`` and
``{train,test}/masks/*.png`` (8-bit, 0/255).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

__all__ = ["SynthConfig", "generate_dataset", "generate_sample"]

MANIFEST = "synthetic.json"
SPLITS = ("train", "test")
OBJECT_KINDS = ("ship", "plane", "building", "tank")

# Field colours (RGB in [0, 1]): greens, tans, browns, greys seen from above.
FIELD_PALETTE = np.array(
    [
        [0.32, 0.42, 0.20],
        [0.42, 0.50, 0.26],
        [0.55, 0.52, 0.34],
        [0.48, 0.40, 0.28],
        [0.36, 0.36, 0.24],
        [0.60, 0.58, 0.45],
        [0.26, 0.34, 0.18],
        [0.46, 0.46, 0.42],
    ]
)
WATER_PALETTE = np.array([[0.10, 0.20, 0.26], [0.12, 0.25, 0.30], [0.16, 0.22, 0.20]])
ROOF_PALETTE = np.array([[0.70, 0.28, 0.22], [0.25, 0.38, 0.62], [0.85, 0.85, 0.82]])


@dataclass(frozen=True)
class SynthConfig:
    """How scenes are drawn: object counts, how many images are empty or low-contrast."""

    size: int = 128
    max_objects: int = 4
    empty_fraction: float = 0.1
    low_contrast_fraction: float = 0.15
    min_scale: float = 0.12
    max_scale: float = 0.42
    jpeg_quality: int = 92


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Value noise in [0, 1]: a coarse random grid upsampled bicubically to size x size."""
    grid = rng.random((cells, cells)).astype(np.float32)
    img = Image.fromarray(grid, mode="F").resize((size, size), Image.Resampling.BICUBIC)
    out = np.asarray(img)
    return (out - out.min()) / max(float(np.ptp(out)), 1e-6)


def _fields(rng: np.random.Generator, size: int) -> np.ndarray:
    """Crop-field parcels: a warped Voronoi partition, each cell with its colour and row texture."""
    n = int(rng.integers(4, 10))
    seeds = rng.random((n, 2)) * size
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    warp = 0.08 * size
    wy = yy + warp * (_smooth_noise(rng, size, 4) - 0.5)
    wx = xx + warp * (_smooth_noise(rng, size, 4) - 0.5)
    dist = (wy[None] - seeds[:, 0, None, None]) ** 2 + (wx[None] - seeds[:, 1, None, None]) ** 2
    label = dist.argmin(0)
    colours = FIELD_PALETTE[rng.integers(0, len(FIELD_PALETTE), n)] * rng.uniform(
        0.85, 1.15, (n, 1)
    )
    img = colours[label]
    angles = rng.uniform(0, np.pi, n)[label]
    freq = rng.uniform(0.3, 1.2, n)[label]
    amp = rng.uniform(0.0, 0.04, n)[label]
    rows = amp * np.sin(freq * (xx * np.cos(angles) + yy * np.sin(angles)))
    return img + rows[..., None]


def _water(rng: np.random.Generator, size: int, kind: str) -> np.ndarray:
    """A boolean water mask: none, a coast, a lake, or a harbour covering most of the scene."""
    if kind == "land":
        return np.zeros((size, size), bool)
    noise = _smooth_noise(rng, size, int(rng.integers(2, 5)))
    if kind == "coast":
        yy, xx = np.mgrid[0:size, 0:size] / size
        theta = rng.uniform(0, 2 * np.pi)
        ramp = (xx - 0.5) * np.cos(theta) + (yy - 0.5) * np.sin(theta)
        return ramp + 0.3 * (noise - 0.5) > rng.uniform(-0.2, 0.2)
    fraction = 0.25 if kind == "lake" else 0.7
    return noise > np.quantile(noise, 1.0 - fraction)


def _roads(rng: np.random.Generator, size: int) -> list[tuple[np.ndarray, float]]:
    """Zero to three straight roads as (endpoints, width) pairs crossing the whole scene."""
    roads = []
    for _ in range(int(rng.integers(0, 4))):
        c = rng.uniform(0.1, 0.9, 2) * size
        theta = rng.uniform(0, np.pi)
        d = np.array([np.cos(theta), np.sin(theta)]) * size * 1.5
        roads.append((np.stack([c - d, c + d]), float(rng.uniform(0.015, 0.04) * size)))
    return roads


def _background(rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """An aerial-looking scene (H, W, 3) in [0, 1] and its water mask."""
    img = _fields(rng, size)
    kind = rng.choice(["land", "coast", "lake", "harbour"], p=[0.35, 0.3, 0.15, 0.2])
    water = _water(rng, size, str(kind))
    ripple = 0.03 * (_smooth_noise(rng, size, max(size // 6, 4)) - 0.5)
    water_colour = WATER_PALETTE[rng.integers(0, len(WATER_PALETTE))]
    img[water] = water_colour + ripple[water, None]
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for ends, width in _roads(rng, size):
        draw.line([tuple(p) for p in ends[:, ::-1]], fill=255, width=max(round(width), 1))
    road = (np.asarray(canvas) > 0) & ~water
    img[road] = rng.uniform(0.45, 0.62) + 0.02 * rng.standard_normal((int(road.sum()), 1))
    img += 0.05 * (_smooth_noise(rng, size, max(size // 16, 3))[..., None] - 0.5)
    return img, water


def _rotate(points: np.ndarray, angle: float, centre: np.ndarray, length: float) -> np.ndarray:
    """Scale unit-length shape points by length, rotate by angle and move them to centre (y, x)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    return points * length @ rot.T + centre


def _ship(rng: np.random.Generator) -> list[np.ndarray]:
    """A hull with a pointed bow, long axis along x, length 1."""
    w = rng.uniform(0.1, 0.18)
    return [np.array([[-w, -0.5], [w, -0.5], [w, 0.3], [0.0, 0.5], [-w, 0.3]])]


def _plane(rng: np.random.Generator) -> list[np.ndarray]:
    """A fuselage, swept wings and a tail plane, nose towards +x, length 1."""
    f = rng.uniform(0.05, 0.08)
    span = rng.uniform(0.4, 0.55)
    sweep = rng.uniform(0.05, 0.2)
    fuselage = np.array([[-f, -0.5], [f, -0.5], [f, 0.42], [0.0, 0.5], [-f, 0.42]])
    wing = np.array([[0.0, 0.12], [span, -0.05 - sweep], [span, -0.14 - sweep], [0.0, -0.08]])
    tail = np.array([[0.0, -0.36], [0.18, -0.48], [0.18, -0.52], [0.0, -0.47]])
    flip = np.array([-1.0, 1.0])
    return [fuselage, wing, wing * flip, tail, tail * flip]


def _building(rng: np.random.Generator) -> list[np.ndarray]:
    """A rectangular or L-shaped footprint, extent 1 along x."""
    h = rng.uniform(0.3, 0.7) / 2
    main = np.array([[-h, -0.5], [h, -0.5], [h, 0.5], [-h, 0.5]])
    if rng.random() < 0.5:
        return [main]
    wing = np.array([[h, 0.1], [h + rng.uniform(0.2, 0.4), 0.1], [h + 0.3, 0.5], [h, 0.5]])
    return [main, wing]


def _tank(rng: np.random.Generator) -> list[np.ndarray]:
    """A round storage tank of diameter 1."""
    t = np.linspace(0, 2 * np.pi, 40, endpoint=False)
    return [0.5 * np.stack([np.sin(t), np.cos(t)], 1)]


SHAPES: dict[str, Callable[[np.random.Generator], list[np.ndarray]]] = {
    "ship": _ship,
    "plane": _plane,
    "building": _building,
    "tank": _tank,
}


def _rasterize(polygons: list[np.ndarray], size: int) -> np.ndarray:
    """Fill polygons given as (y, x) points into a boolean size x size mask."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    for poly in polygons:
        draw.polygon([(float(x), float(y)) for y, x in poly], fill=255)
    return np.asarray(canvas) > 0


def _object_colour(rng: np.random.Generator, kind: str, local: np.ndarray, low: bool) -> np.ndarray:
    """A colour that stands out from the local background, or barely does when ``low``."""
    lum = float(local.mean())
    if low:
        delta = rng.uniform(0.08, 0.14) * (1 if lum < 0.5 else -1)
        return np.clip(local + delta, 0, 1)
    if kind == "building" and rng.random() < 0.6:
        return ROOF_PALETTE[rng.integers(0, len(ROOF_PALETTE))] * rng.uniform(0.9, 1.1)
    if lum < 0.55 or rng.random() < 0.8:
        return np.full(3, rng.uniform(0.82, 0.97)) + rng.uniform(-0.03, 0.03, 3)
    return np.full(3, rng.uniform(0.05, 0.15))


def _place(
    rng: np.random.Generator,
    kind: str,
    size: int,
    water: np.ndarray,
    taken: np.ndarray,
    cfg: SynthConfig,
) -> np.ndarray | None:
    """Rasterise one object at a free spot (ships on water where there is water); None if full."""
    length = rng.uniform(cfg.min_scale, cfg.max_scale) * size * (0.6 if kind == "tank" else 1.0)
    angle = rng.uniform(0, 2 * np.pi)
    shape = SHAPES[kind](rng)
    on_water = np.argwhere(water) if kind == "ship" and water.any() else None
    for _ in range(20):
        if on_water is not None:
            centre = on_water[rng.integers(0, len(on_water))].astype(float)
        else:
            centre = rng.uniform(length / 2, size - length / 2, 2)
        mask = _rasterize([_rotate(p, angle, centre, length) for p in shape], size)
        grown = ndimage.binary_dilation(taken, iterations=2)
        if mask.sum() >= 6 and not (mask & grown).any():
            return mask
    return None


def _paint(img: np.ndarray, mask: np.ndarray, colour: np.ndarray, kind: str, shadow: bool) -> None:
    """Blend an object (soft edges, a shadow for raised objects, a rim for tanks) into img."""
    if shadow and kind in ("building", "plane"):
        shade = np.roll(mask, (2, 2), axis=(0, 1)) & ~mask
        img[shade] *= 0.55
    alpha = ndimage.gaussian_filter(mask.astype(np.float32), 0.6)[..., None]
    img[:] = img * (1 - alpha) + colour * alpha
    if kind == "tank":
        rim = mask & ~ndimage.binary_erosion(mask, iterations=1)
        img[rim] *= 0.8


def generate_sample(
    seed: int, split: str, index: int, cfg: SynthConfig | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: an RGB uint8 image (S, S, 3) and its 0/255 uint8 mask (S, S)."""
    cfg = cfg or SynthConfig()
    rng = np.random.default_rng([seed, SPLITS.index(split), index])
    size = cfg.size
    img, water = _background(rng, size)
    target = np.zeros((size, size), bool)
    count = 0 if rng.random() < cfg.empty_fraction else int(rng.integers(1, cfg.max_objects + 1))
    kinds = (
        rng.choice(OBJECT_KINDS, size=count)
        if rng.random() < 0.5
        else [rng.choice(OBJECT_KINDS)] * count
    )
    for kind in kinds:
        mask = _place(rng, str(kind), size, water, target, cfg)
        if mask is None:
            continue
        local = img[ndimage.binary_dilation(mask, iterations=3)].mean(0)
        colour = _object_colour(rng, str(kind), local, rng.random() < cfg.low_contrast_fraction)
        _paint(img, mask, colour, str(kind), shadow=rng.random() < 0.7)
        target |= mask
    img += 0.02 * rng.standard_normal(img.shape)
    image = (np.clip(img, 0, 1) * 255).round().astype(np.uint8)
    return image, target.astype(np.uint8) * 255


def _manifest(cfg: SynthConfig, num_train: int, num_test: int, seed: int) -> dict:
    """What a generated folder was made from, so an identical request can reuse it."""
    return {"seed": seed, "num_train": num_train, "num_test": num_test, **asdict(cfg)}


def generate_dataset(
    out: Path,
    num_train: int,
    num_test: int,
    size: int = 128,
    seed: int = 0,
    *,
    max_objects: int = 4,
    empty_fraction: float = 0.1,
    low_contrast_fraction: float = 0.15,
    overwrite: bool = False,
) -> Path:
    """Write a synthetic dataset under out (train/test, images/masks) and return out.

    A folder already generated with the same parameters is reused as is unless ``overwrite``.
    """
    if size < 32:
        raise ValueError(f"synthetic image size must be >= 32 pixels, got size={size}")
    if num_train < 0 or num_test < 0:
        raise ValueError(
            f"image counts must be >= 0, got num_train={num_train}, num_test={num_test}"
        )
    cfg = SynthConfig(size, max_objects, empty_fraction, low_contrast_fraction)
    out = Path(out)
    manifest = _manifest(cfg, num_train, num_test, seed)
    if not overwrite and _made_from(out, manifest):
        return out
    if out.exists() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise FileExistsError(
            f"{out} holds files that weft did not generate; give an empty or new folder."
        )
    # Written aside and moved into place whole: processes that generate the same folder at
    # once (the runs of an experiment) never see a half-written or half-deleted dataset.
    staging = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    for split, count in zip(SPLITS, (num_train, num_test), strict=True):
        _write_split(staging / split, split, count, seed, cfg)
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if out.exists() and (overwrite or not _made_from(out, manifest)):
        shutil.rmtree(out)
    try:
        staging.rename(out)
    except OSError:  # another process moved an identical dataset into place first
        if not _made_from(out, manifest):
            raise
        shutil.rmtree(staging)
    return out


def _made_from(out: Path, manifest: dict) -> bool:
    record = out / MANIFEST
    return record.is_file() and json.loads(record.read_text()) == manifest


def _write_split(folder: Path, split: str, count: int, seed: int, cfg: SynthConfig) -> None:
    """Write count image/mask pairs of one split into a new folder."""
    images, masks = folder / "images", folder / "masks"
    for sub in (images, masks):
        sub.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image, mask = generate_sample(seed, split, i, cfg)
        stem = f"{split}_{i:05d}"
        Image.fromarray(image).save(images / f"{stem}.jpg", quality=cfg.jpeg_quality)
        Image.fromarray(mask, mode="L").save(masks / f"{stem}.png")
