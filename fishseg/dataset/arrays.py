"""The prepared-data format shared by the split stage (writer) and everything after it.

``work/prepared/<split>/`` holds ``images.npy`` (N,H,W,3 uint8 RGB), ``masks.npy``
(N,H,W uint8 in {0,1}) and ``ids.json`` (the index ids, in array order);
``work/index.csv`` has one row per pair with its species, group and split.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_text
from fishseg.paths import Paths


@dataclass
class PreparedSplit:
    """One split's arrays (memory-mapped when loaded from disk)."""

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]

    def __len__(self) -> int:
        return len(self.ids)


def load_split(paths: Paths, split: str, mmap: bool = True) -> PreparedSplit:
    """Open ``work/prepared/<split>``; memory-mapped so workers share pages, not copies."""
    folder = paths.prepared_split(split)
    mode = "r" if mmap else None
    try:
        images = np.load(folder / "images.npy", mmap_mode=mode)
        masks = np.load(folder / "masks.npy", mmap_mode=mode)
        ids = json.loads((folder / "ids.json").read_text())
    except FileNotFoundError as exc:
        raise FishsegError(f"{exc.filename}: missing; run the split stage first (dvc repro split)") from None
    if not (len(images) == len(masks) == len(ids)):
        raise FishsegError(f"{folder}: images, masks and ids disagree in length; rerun dvc repro split")
    return PreparedSplit(images, masks, ids)


def save_split(folder: Path, images: np.ndarray, masks: np.ndarray, ids: list[str]) -> None:
    """Write one split's arrays into an existing (temp) folder."""
    np.save(folder / "images.npy", np.ascontiguousarray(images))
    np.save(folder / "masks.npy", np.ascontiguousarray(masks))
    atomic_write_text(folder / "ids.json", json.dumps(list(ids)) + "\n")


def read_index(paths: Paths) -> pd.DataFrame:
    """Load ``work/index.csv`` written by :func:`prepare`."""
    try:
        return pd.read_csv(paths.index_csv)
    except FileNotFoundError:
        raise FishsegError(
            f"{paths.index_csv}: missing; run the split stage first (dvc repro split)"
        ) from None
