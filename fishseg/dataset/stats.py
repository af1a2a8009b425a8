"""Dataset statistics: normalisation from the train split only, counts for everyone.

Only train pixels feed the mean/std, so no val/test information reaches training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from fishseg.dataset.arrays import PreparedSplit
from fishseg.dataset.grouping import straddling_pairs

CHUNK = 256


def channel_stats(split: PreparedSplit) -> dict[str, Any]:
    """Per-channel mean/std of the images in [0, 1] and the mean foreground fraction."""
    if len(split) == 0:
        raise ValueError("the train split is empty")
    total = np.zeros(3)
    total_sq = np.zeros(3)
    fg = 0.0
    pixels = 0
    for start in range(0, len(split), CHUNK):
        block = np.asarray(split.images[start : start + CHUNK], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        total_sq += (block**2).sum(axis=(0, 1, 2))
        fg += float(np.asarray(split.masks[start : start + CHUNK]).sum())
        pixels += block.shape[0] * block.shape[1] * block.shape[2]
    mean = total / pixels
    std = np.sqrt(np.maximum(total_sq / pixels - mean**2, 1e-12))
    return {
        "mean": [round(float(v), 6) for v in mean],
        "std": [round(float(v), 6) for v in std],
        "fg_frac": round(fg / pixels, 6),
        "n_images": len(split),
    }


def data_metrics(index: pd.DataFrame, validation: dict[str, Any]) -> dict[str, Any]:
    """Counts per split and species, groups, leaks and skipped files: ``metrics/data.json``."""
    per_split = index["split"].value_counts().to_dict()
    per_species = index.groupby(["species", "split"]).size().unstack(fill_value=0).to_dict(orient="index")
    groups = index.groupby("species")["group"].nunique().to_dict()
    return {
        "n_images": len(index),
        "n_groups": int(index["group"].nunique()),
        "split": {s: int(per_split.get(s, 0)) for s in ("train", "val", "test")},
        "species": {sp: {k: int(v) for k, v in counts.items()} for sp, counts in per_species.items()},
        "groups_per_species": {k: int(v) for k, v in groups.items()},
        "straddling_pairs": int(straddling_pairs(index["group"].tolist(), index["split"].tolist())),
        "skipped_files": len(validation.get("problems", [])) if validation.get("on_invalid") == "skip" else 0,
    }
