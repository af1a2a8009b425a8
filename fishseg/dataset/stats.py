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


def data_metrics(index: pd.DataFrame, validation: dict[str, Any]) -> dict[str, int]:
    """A handful of scalars for ``metrics/data.json`` (one ``dvc exp show`` column each):
    pairs, near-duplicate groups, pairs per split, pairs straddling splits, skipped files.
    Counts per species go to :func:`species_table` (a plots table), not into metrics."""
    per_split = index["split"].value_counts().to_dict()
    skipped = len(validation.get("problems", [])) if validation.get("on_invalid") == "skip" else 0
    return {
        "pairs": len(index),
        "groups": int(index["group"].nunique()),
        **{f"{s}_pairs": int(per_split.get(s, 0)) for s in ("train", "val", "test")},
        "straddling_pairs": int(straddling_pairs(index["group"].tolist(), index["split"].tolist())),
        "skipped_files": skipped,
    }


SPECIES_COLUMNS = ["species", "pairs", "groups", "train", "val", "test"]


def species_table(index: pd.DataFrame) -> pd.DataFrame:
    """Pairs and groups per species, and pairs per split: ``plots/data/species.csv``."""
    per_split = pd.crosstab(index["species"], index["split"]).reindex(columns=["train", "val", "test"])
    table = per_split.fillna(0).astype(int)
    table.insert(0, "groups", index.groupby("species")["group"].nunique())
    table.insert(0, "pairs", index.groupby("species").size())
    return table.reset_index()[SPECIES_COLUMNS]
