"""What the benchmarks share: the import path, fish-like test images, a prepared project.

The images imitate the archive's photos closely enough to make segmentation non-trivial:
a fish (body, tail, fins, a darker back, stripes or spots) on a textured blue surface,
with glare spots, a soft shadow, a date stamp and a distractor object; some fish have
the surface's colours.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from fishseg.fsutil import atomic_write_json  # noqa: E402
from fishseg.paths import Paths  # noqa: E402
from fishseg.prepared import load_split, save_split  # noqa: E402

SPECIES = ["Trout", "Sea Bass", "Striped Red Mullet", "Shrimp"]
FISH_COLOURS = [(190, 190, 200), (150, 110, 90), (200, 120, 110), (120, 140, 170), (210, 180, 120)]


def _noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Smooth noise in [0, 1]: a small random grid, resized up."""
    grid = rng.random((cells, max(2, cells * w // h)), dtype=np.float32)
    return cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC).clip(0, 1)


def _fish_mask(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A body (two arcs), a forked tail and a dorsal fin, placed and turned at random."""
    length = rng.uniform(0.35, 0.7) * w
    depth = length * rng.uniform(0.12, 0.4)
    x = np.linspace(-0.5, 0.5, 40)
    profile = np.sqrt(np.clip(1 - (2 * x) ** 2, 0, 1)) * (1 - 0.35 * (x + 0.5))
    top = np.stack([x * length, -profile * depth / 2 * rng.uniform(0.8, 1.2)], 1)
    bottom = np.stack([x * length, profile * depth / 2], 1)[::-1]
    tail_x = -0.5 * length
    tail = np.array(
        [[tail_x, 0], [tail_x - 0.18 * length, -depth * 0.5], [tail_x - 0.1 * length, 0],
         [tail_x - 0.18 * length, depth * 0.5]]
    )  # fmt: skip
    fin = np.array(
        [[-0.1 * length, -depth * 0.35], [0.05 * length, -depth * 0.7], [0.15 * length, -depth * 0.3]]
    )
    angle = rng.uniform(0, 2 * np.pi)
    turn = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    centre = np.array([rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * h])
    mask = np.zeros((h, w), np.uint8)
    for poly in (np.concatenate([top, bottom]), tail, fin):
        pts = (poly @ turn.T + centre).round().astype(np.int32)
        cv2.fillPoly(mask, [pts], 1)
    return mask


def fish_pair(rng: np.random.Generator, h: int = 445, w: int = 590) -> tuple[np.ndarray, np.ndarray]:
    """One RGB uint8 photo and its {0, 1} mask."""
    surface = np.array([40, 80, 170], np.float32) * (0.7 + 0.6 * _noise(rng, h, w, 4))[..., None]
    surface += rng.normal(0, 14, (h, w, 3)).astype(np.float32) * _noise(rng, h, w, 8)[..., None]
    image = surface
    mask = _fish_mask(rng, h, w)
    # A soft shadow to one side, then the fish.
    shift = np.float32([[1, 0, rng.integers(4, 15)], [0, 1, rng.integers(4, 15)]])
    shadow = cv2.GaussianBlur(cv2.warpAffine(mask.astype(np.float32), shift, (w, h)), (0, 0), 6)
    image = image * (1 - 0.45 * shadow[..., None])
    camouflage = rng.random() < 0.3
    base = np.array(FISH_COLOURS[rng.integers(len(FISH_COLOURS))], np.float32)
    if camouflage:
        base = np.array([70, 100, 170], np.float32) * rng.uniform(0.8, 1.2)
    ys, xs = np.nonzero(mask)
    back = np.zeros((h, w), np.float32)
    if len(ys):
        # Darker along one side (the back), with stripes or spots on top.
        direction = rng.normal(size=2)
        proj = (xs - xs.mean()) * direction[0] + (ys - ys.mean()) * direction[1]
        back[ys, xs] = (proj - proj.min()) / max(np.ptp(proj), 1)
    pattern = _noise(rng, h, w, int(rng.integers(6, 30)))
    fish = base * (0.55 + 0.5 * back[..., None]) * (0.8 + 0.4 * pattern[..., None])
    fish += rng.normal(0, 10, (h, w, 3)).astype(np.float32)
    soft = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), 1.2)[..., None]
    image = image * (1 - soft) + fish * soft
    # Glare: bright blurred spots anywhere, on the fish and off it.
    glare = np.zeros((h, w), np.float32)
    for _ in range(rng.integers(1, 5)):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = (int(rng.integers(10, 60)), int(rng.integers(5, 30)))
        cv2.ellipse(glare, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    image += 200 * cv2.GaussianBlur(glare, (0, 0), 8)[..., None]
    # A distractor (a dark tag or a leaf-like blob) and the date stamp.
    tag = np.zeros((h, w), np.uint8)
    cv2.ellipse(
        tag,
        (int(rng.integers(0, w)), int(rng.integers(0, h))),
        (int(rng.integers(10, 40)), int(rng.integers(4, 15))),
        float(rng.uniform(0, 180)), 0, 360, 1, -1,
    )  # fmt: skip
    tag &= 1 - mask
    image = np.where(tag[..., None] > 0, np.array(FISH_COLOURS[rng.integers(len(FISH_COLOURS))]) * 0.6, image)
    image = np.clip(image, 0, 255).astype(np.uint8)
    cv2.putText(image, f"2{rng.integers(10, 99)} 0{rng.integers(1, 9)} 1{rng.integers(0, 9)}", (w - 200, h - 20),
                cv2.FONT_HERSHEY_SIMPLEX, 1.0, (250, 200, 40), 2)  # fmt: skip
    return image, mask


def write_png_archive(root: Path, n: int, seed: int = 0, size: tuple[int, int] = (445, 590)) -> Path:
    """``n`` pairs as PNG files in the archive's layout (``Fish_Dataset/Fish_Dataset/...``)."""
    rng = np.random.default_rng(seed)
    base = root / "Fish_Dataset" / "Fish_Dataset"
    for i in tqdm(range(n), desc=f"writing PNG pairs ({size[1]}x{size[0]})", leave=False):
        species = SPECIES[i % len(SPECIES)]
        image, mask = fish_pair(rng, *size)
        for folder, pixels in (
            (species, cv2.cvtColor(image, cv2.COLOR_RGB2BGR)),
            (f"{species} GT", mask * 255),
        ):
            path = base / species / folder / f"{i:05d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), pixels)
    return root


def write_project(root: Path, counts: dict[str, int], size: tuple[int, int], seed: int = 0) -> Paths:
    """A project with ``data/prepared`` and ``data/stats.json``, as the split and stats stages write."""
    from fishseg.stats import channel_stats

    paths = Paths(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for split, n in counts.items():
        images = np.empty((n, height, width, 3), np.uint8)
        masks = np.empty((n, height, width), np.uint8)
        for i in tqdm(range(n), desc=f"drawing {split} pairs", leave=False):
            image, mask = fish_pair(rng)
            images[i] = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA)
            masks[i] = cv2.resize(mask, (width, height), interpolation=cv2.INTER_NEAREST)
        folder = paths.prepared_split(split)
        folder.mkdir(parents=True, exist_ok=True)
        save_split(folder, images, masks, [f"{SPECIES[i % len(SPECIES)]}/{split}{i:04d}" for i in range(n)])
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    (root / "dvc.yaml").write_text("stages: {}\n")
    return paths


def dump(obj: object) -> str:
    return json.dumps(obj, indent=2)
