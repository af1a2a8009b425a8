"""Index the image/mask pairs of ``data/raw`` and check them.

The index is one row per pair (``id, species, image, mask, width, height, fg_frac``);
the split stage adds ``group`` and ``split``. Every pair is checked and *all* problems
are reported together, so a user fixes a broken dataset in one pass.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from fishseg.archive import IMAGE_SUFFIXES
from fishseg.errors import FishsegError
from fishseg.layout import DATASET_DIR, MASK_SUFFIX

log = logging.getLogger(__name__)

# Masks are stored 0/255 but JPEG-like noise is tolerated: pixels at or above this are fish.
MASK_THRESHOLD = 128
# A mask counts as binary when at most this fraction of pixels is far from 0 and 255.
MASK_GREY_TOLERANCE = 0.01


@dataclass
class Problem:
    """One bad file: what is wrong with it and how to fix it."""

    kind: str
    path: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.path} ({self.detail})"


@dataclass
class Pair:
    species: str
    image: Path
    mask: Path


@dataclass
class ScanResult:
    pairs: list[Pair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def _images_in(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES}


def scan_pairs(raw_dir: Path) -> ScanResult:
    """Match images to masks by file stem in every species folder of the canonical layout."""
    result = ScanResult()
    base = raw_dir / DATASET_DIR
    if not base.is_dir():
        raise FishsegError(f"{base}: no dataset here; run the download stage first (dvc repro download)")
    species_dirs = sorted(p for p in base.iterdir() if p.is_dir() and p.name != "NA_Fish_Dataset")
    for sdir in species_dirs:
        species = sdir.name
        images = _images_in(sdir / species)
        masks = _images_in(sdir / f"{species}{MASK_SUFFIX}")
        if not images and not masks:
            result.problems.append(
                Problem("empty species", str(sdir), "no images or masks; remove the folder or add pairs")
            )
            continue
        for stem, img in images.items():
            if stem in masks:
                result.pairs.append(Pair(species, img, masks[stem]))
            else:
                result.problems.append(
                    Problem(
                        "image without mask", str(img), f"add {species}{MASK_SUFFIX}/{stem}.png or remove it"
                    )
                )
        for stem, msk in masks.items():
            if stem not in images:
                result.problems.append(
                    Problem("mask without image", str(msk), f"add {species}/{stem}.png or remove the mask")
                )
    return result


def _decode(path: Path, flags: int) -> np.ndarray:
    """Decode an image file with OpenCV; raise ValueError naming what is wrong with it."""
    if path.stat().st_size == 0:
        raise ValueError("zero-byte file")
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if img is None:
        raise ValueError("not a readable image (corrupt or truncated)")
    return img


def read_rgb(path: Path) -> np.ndarray:
    """Decode an image as RGB uint8; raise ValueError when it cannot be read."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_mask(path: Path) -> tuple[np.ndarray, float]:
    """Decode a mask as {0,1} uint8; also return the fraction of non-binary (grey) pixels."""
    raw = _decode(path, cv2.IMREAD_GRAYSCALE)
    grey = float(np.mean((raw > 32) & (raw < 223)))
    return (raw >= MASK_THRESHOLD).astype(np.uint8), grey


@dataclass
class DecodedPair:
    """One valid pair, decoded once and resized to the training size."""

    species: str
    image_path: Path
    mask_path: Path
    width: int
    height: int
    fg_frac: float
    image: np.ndarray  # (H, W, 3) uint8 at the training size
    mask: np.ndarray  # (H, W) uint8 {0,1} at the training size


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A {0,1} mask resized to ``size`` = (height, width) on the same pixel grid as its image.

    Area averaging, rounded back to {0,1}: a pixel is fish when fish covers at least half
    of it. INTER_NEAREST would sample each pixel's top-left source pixel instead of its
    centre, shifting the mask by half a pixel against the INTER_AREA image: the model
    learns the shift, and predictions resized back to full resolution keep it (at 192x256
    a perfect model would then score full-resolution IoU 0.972 instead of 0.988).
    """
    return cv2.resize(mask, (size[1], size[0]), interpolation=cv2.INTER_AREA)


def decode_pairs(pairs: list[Pair], size: tuple[int, int], problems: list[Problem]) -> Iterator[DecodedPair]:
    """Decode, check and resize each pair; bad pairs go to ``problems`` and are not yielded."""
    height, width = size
    for pair in pairs:
        try:
            image = read_rgb(pair.image)
        except (ValueError, OSError) as exc:
            problems.append(Problem("unreadable image", str(pair.image), f"{exc}; replace or remove it"))
            continue
        try:
            mask, grey = read_mask(pair.mask)
        except (ValueError, OSError) as exc:
            problems.append(Problem("unreadable mask", str(pair.mask), f"{exc}; replace or remove it"))
            continue
        if image.shape[:2] != mask.shape[:2]:
            problems.append(
                Problem(
                    "size mismatch",
                    str(pair.mask),
                    f"mask {mask.shape[1]}x{mask.shape[0]} vs image {image.shape[1]}x{image.shape[0]}; "
                    "masks must have their image's size",
                )
            )
            continue
        if grey > MASK_GREY_TOLERANCE:
            problems.append(
                Problem(
                    "mask not binary",
                    str(pair.mask),
                    f"{grey:.1%} of pixels are neither black nor white; masks must be 0/255",
                )
            )
            continue
        yield DecodedPair(
            species=pair.species,
            image_path=pair.image,
            mask_path=pair.mask,
            width=image.shape[1],
            height=image.shape[0],
            fg_frac=float(mask.mean()),
            image=cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA),
            mask=resize_mask(mask, size),
        )


def make_ids(frame: pd.DataFrame) -> pd.Series:
    """Stable, readable ids: ``<species>/<file stem>`` (species spaces become underscores)."""
    return frame["species"].str.replace(" ", "_") + "/" + frame["image"].map(lambda p: Path(p).stem)
