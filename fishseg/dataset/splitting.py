"""Assign train/val/test by group, stratified by species.

All members of a group (near-duplicate copies of one photo) land in the same split, so
no test photo is seen in training as a flipped or rotated copy. ``random`` treats every
image as its own group: available for comparison, not for honest numbers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def assign_splits(
    species: Sequence[str],
    groups: Sequence[int],
    *,
    val: float,
    test: float,
    seed: int,
    strategy: str = "group",
) -> np.ndarray:
    """Return an array of ``"train"/"val"/"test"`` per item.

    Per species, groups are shuffled (seeded) and each goes to test, then val, while that
    brings the split's image count closer to its target; the rest is train. Species with
    fewer than three groups keep them all in train, with a test group taken only if there
    are at least two.
    """
    species = np.asarray(species, dtype=object)
    groups = np.asarray(groups) if strategy == "group" else np.arange(len(species))
    splits = np.full(len(species), "train", dtype=object)
    rng = np.random.default_rng(seed)
    for name in sorted(set(species.tolist())):
        idx = np.flatnonzero(species == name)
        uniq, counts = np.unique(groups[idx], return_counts=True)
        order = rng.permutation(len(uniq))
        total = counts.sum()
        targets = {"test": test * total, "val": val * total}
        filled = {"test": 0, "val": 0}
        chosen: dict[int, str] = {}
        for k in order:
            for split in ("test", "val"):
                need, have = targets[split], filled[split]
                if need <= 0:
                    continue
                # Take the group when it brings the count closer to the target; always give
                # an empty split its first group when the species has room for it.
                first = have == 0 and len(uniq) - len(chosen) > 1
                if first or abs(have + counts[k] - need) < abs(have - need):
                    chosen[int(uniq[k])] = split
                    filled[split] += counts[k]
                    break
        for i in idx:
            splits[i] = chosen.get(int(groups[i]), "train")
    return splits.astype(str)
