"""The Kaggle archive's layout: the canonical form of ``data/raw``.

``Fish_Dataset/Fish_Dataset/<Species>/<Species>/NNNNN.png`` holds the images and
``.../<Species>/<Species> GT/NNNNN.png`` the masks, under the archive's own spellings.
"""

from __future__ import annotations

import unicodedata
from pathlib import Path

SPECIES: tuple[str, ...] = (
    "Black Sea Sprat",
    "Gilt-Head Bream",
    "Hourse Mackerel",
    "Red Mullet",
    "Red Sea Bream",
    "Sea Bass",
    "Shrimp",
    "Striped Red Mullet",
    "Trout",
)

# Image file types accepted anywhere a dataset or a photo is read (any case).
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})

DATASET_DIR = Path("Fish_Dataset") / "Fish_Dataset"
MASK_SUFFIX = " GT"


def species_dir(raw_dir: Path, species: str) -> Path:
    return raw_dir / DATASET_DIR / species


def image_dir(raw_dir: Path, species: str) -> Path:
    return species_dir(raw_dir, species) / species


def mask_dir(raw_dir: Path, species: str) -> Path:
    return species_dir(raw_dir, species) / f"{species}{MASK_SUFFIX}"


def canonical(name: str) -> str:
    """A name as written to disk: Unicode NFC (archives made on macOS store NFD)."""
    return unicodedata.normalize("NFC", name)


def folded(name: str) -> str:
    """The key under which two names land on one file on macOS or Windows (case, normalisation)."""
    return unicodedata.normalize("NFC", name).casefold()
