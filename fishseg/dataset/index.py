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

from fishseg.errors import FishsegError
from fishseg.images import check_image_file
from fishseg.params import DataParams
from fishseg.sources.layout import DATASET_DIR, IMAGE_SUFFIXES, MASK_SUFFIX

log = logging.getLogger(__name__)

# Masks with more than two levels (0/255 with JPEG-like noise, anti-aliased edges) are cut
# here: pixels at or above this fraction of the full scale (255, or 65535 at 16 bit) are fish.
MASK_THRESHOLD = 0.5
# Such a mask counts as binary when at most this fraction of pixels is far from 0 and full scale.
MASK_GREY_TOLERANCE = 0.01
DEFAULT_MAX_PIXELS = DataParams.model_fields["max_image_pixels"].default
# "Far from 0 and full scale": between these fractions of it.
MASK_GREY_BAND = (0.125, 0.875)
MASK_FIX = "save masks as 0 background, 255 (or 1) fish, one channel"


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


def _decode(path: Path, flags: int, max_pixels: int | None, knob: str) -> np.ndarray:
    """Check the header (pixel cap), then decode with OpenCV; raise ValueError naming what is wrong."""
    check_image_file(path, max_pixels or DEFAULT_MAX_PIXELS, knob)
    img = cv2.imdecode(np.fromfile(path, dtype=np.uint8), flags)
    if img is None:
        raise ValueError("not a readable image (corrupt or truncated)")
    return img


def read_rgb(path: Path, max_pixels: int | None = None, knob: str = "data.max_image_pixels") -> np.ndarray:
    """Decode an image as RGB uint8 (at most ``max_pixels``); raise ValueError when it cannot be read."""
    return cv2.cvtColor(_decode(path, cv2.IMREAD_COLOR, max_pixels, knob), cv2.COLOR_BGR2RGB)


class MaskEncodingError(ValueError):
    """A mask whose encoding cannot say which pixels are fish; the message names the fix."""


def _colour_plane(pixels: np.ndarray) -> np.ndarray:
    """One plane from colour pixels: grey ones as they are, black and one colour as 0/1."""
    if (pixels == pixels[..., :1]).all():
        return pixels[..., 0]  # grey stored as RGB, or a palette of greys
    colours = np.unique(pixels.reshape(-1, pixels.shape[-1]), axis=0)
    if len(colours) == 2 and not colours[0].any():  # sorted: black comes first
        return pixels.any(axis=-1).astype(pixels.dtype)  # e.g. a palette mask, fish in (128, 0, 0)
    if len(colours) == 2:
        rgb = colours[:, 2::-1].tolist()
        raise MaskEncodingError(f"two colours (RGB) {rgb}, neither black: which is fish? {MASK_FIX}")
    # Noisy grey (JPEG) keeps its levels; a coloured mask then reads as grey and is refused.
    return np.round(pixels.mean(axis=-1)).astype(pixels.dtype)


def mask_plane(pixels: np.ndarray) -> tuple[np.ndarray, int]:
    """The plane of a decoded mask (as ``cv2.IMREAD_UNCHANGED`` gives it) that marks fish, and its full scale.

    A varying alpha channel is the mask (cut-outs, alpha-only masks); otherwise the colour
    or grey channels are (``_colour_plane``). Palette PNGs arrive here as colours.
    """
    if pixels.dtype not in (np.uint8, np.uint16):
        raise MaskEncodingError(f"{pixels.dtype} pixels; {MASK_FIX}, 8-bit (PNG)")
    full = int(np.iinfo(pixels.dtype).max)
    if pixels.ndim == 3 and pixels.shape[-1] in (2, 4):
        alpha = pixels[..., -1]
        if alpha.min() != alpha.max():
            return alpha, full
        pixels = pixels[..., :-1]
    if pixels.ndim == 3:
        pixels = pixels[..., 0] if pixels.shape[-1] == 1 else _colour_plane(pixels)
    return pixels, full


def binarize_mask(plane: np.ndarray, full: int) -> tuple[np.ndarray, float]:
    """{0,1} uint8 fish pixels of one mask plane, and the fraction of grey (non-binary) pixels.

    Two levels with the lower one 0 need no threshold: the other level is fish, whatever
    its value (0/1 label masks at 8 or 16 bit, 0/255, 0/65535, palette colours). Anything
    else is cut at ``MASK_THRESHOLD`` of the full scale (255 at 8 bit; 8-bit values in a
    16-bit file are taken as such), or refused when no pixel reaches it and several levels
    look like class labels.
    """
    levels = np.unique(plane)
    low, high = int(levels[0]), int(levels[-1])
    if len(levels) <= 2 and low == 0:
        return (plane > 0).astype(np.uint8), 0.0
    if full > 255 and high <= 255:
        full = 255
    if high < MASK_THRESHOLD * full:
        raise MaskEncodingError(
            f"levels {low}..{high} ({len(levels)} distinct), none near {full}: class labels?; {MASK_FIX}"
        )
    lo, hi = (fraction * full for fraction in MASK_GREY_BAND)
    grey = float(np.mean((plane > lo) & (plane < hi)))
    return (plane >= MASK_THRESHOLD * full).astype(np.uint8), grey


def read_mask(
    path: Path, max_pixels: int | None = None, knob: str = "data.max_image_pixels"
) -> tuple[np.ndarray, float]:
    """Decode a mask of any common encoding as {0,1} uint8; also return its fraction of grey pixels.

    0/255 and 0/1 (8 or 16 bit), grey, RGB, palette and alpha masks read as the fish they
    mark; an encoding that cannot say which pixels are fish raises :class:`MaskEncodingError`.
    """
    pixels = _decode(path, cv2.IMREAD_UNCHANGED, max_pixels, knob)  # keeps 16 bit, alpha
    if (pixels.ndim == 2 or pixels.shape[-1] == 3) and _may_carry_orientation(path):
        # IMREAD_UNCHANGED ignores an EXIF orientation; read_rgb applies it, so must the mask.
        pixels = _decode(path, cv2.IMREAD_ANYCOLOR | cv2.IMREAD_ANYDEPTH, max_pixels, knob)
    plane, full = mask_plane(pixels)
    return binarize_mask(plane, full)


def _may_carry_orientation(path: Path) -> bool:
    """Whether the file may hold an EXIF orientation (JPEG/WebP/PNG EXIF, or TIFF)."""
    with open(path, "rb") as fh:
        head = fh.read(65536)
    return b"Exif" in head or b"eXIf" in head or head[:4] in (b"II*\0", b"MM\0*")


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


def read_pair(
    image_path: Path, mask_path: Path, max_pixels: int | None = None, knob: str = "data.max_image_pixels"
) -> tuple[np.ndarray, np.ndarray] | Problem:
    """The RGB image and its {0,1} mask at their own size, or the problem that keeps the pair out.

    The one set of rules for a usable pair (both readable, the mask's encoding clear, one
    size, the mask binary): the split stage and ``evaluate_folder`` both apply it.
    """
    try:
        image = read_rgb(image_path, max_pixels, knob)
    except (ValueError, OSError) as exc:
        return Problem("unreadable image", str(image_path), f"{exc}; replace or remove it")
    try:
        mask, grey = read_mask(mask_path, max_pixels, knob)
    except MaskEncodingError as exc:
        return Problem("mask encoding", str(mask_path), str(exc))
    except (ValueError, OSError) as exc:
        return Problem("unreadable mask", str(mask_path), f"{exc}; replace or remove it")
    if image.shape[:2] != mask.shape[:2]:
        size = f"mask {mask.shape[1]}x{mask.shape[0]} vs image {image.shape[1]}x{image.shape[0]}"
        return Problem("size mismatch", str(mask_path), f"{size}; masks must have their image's size")
    if grey > MASK_GREY_TOLERANCE:
        detail = f"{grey:.1%} of pixels are neither black nor white; {MASK_FIX}"
        return Problem("mask not binary", str(mask_path), detail)
    return image, mask


def decode_pairs(
    pairs: list[Pair], size: tuple[int, int], problems: list[Problem], max_pixels: int | None = None
) -> Iterator[DecodedPair]:
    """Decode, check and resize each pair; bad pairs go to ``problems`` and are not yielded."""
    height, width = size
    for pair in pairs:
        read = read_pair(pair.image, pair.mask, max_pixels)
        if isinstance(read, Problem):
            problems.append(read)
            continue
        image, mask = read
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
