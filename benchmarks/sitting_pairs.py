"""Can one specimen in one sitting be told from look-alikes? Every pair of the embedded photos, every test.

The grouping scores only its candidate pairs; here every pair of photos of one species
in datasets/realfish (decoded as the split stage does) gets the grouping's own scores:
the background (one place, the camera zoomed or not), the fish inside its outline (up
to rotation and reflection: turned over counts) and the specimen's detail along its
axes, each over the cut the grouping finds. The pairs are labelled from
benchmarks/realfish_near_duplicates.txt: near-identical ("="), one specimen in one
sitting only ("~": turned over, moved) and distinct (no line joins them; "?" pairs are
left out). Printed:

* each score's quantiles per label: where "~" pairs sit among distinct ones;
* looser cuts: the pairs' combined score over its cut (the lower of the scene and the
  specimen ratio, as the grouping forms them) under T joins them; groups, the largest,
  clusters left apart and distinct pairs joined, per T;
* purging instead of joining: the split as the split stage makes it (seeds 42, 0-4),
  then every training photo within T of a val or test photo dropped from training:
  how many photos that costs and which clusters still straddle.

    python benchmarks/sitting_pairs.py [--size 192 256] [--cuts 1 1.5 2 3 4 6]
"""

from __future__ import annotations

import argparse
import itertools

import _common  # noqa: F401  (puts the project on the import path)
import numpy as np
from grouping_real import TRUTH, load_realfish, load_truth, pair_matrix

from fishseg.dataset import grouping
from fishseg.dataset.specimen import specimen_cut, specimen_distances, specimen_grids
from fishseg.dataset.splitting import assign_splits
from fishseg.params import load_params

LABELS = {"=": "near-identical", "~": "one sitting only", "d": "distinct"}


def all_pairs(species: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pairs = [
        pair
        for name in np.unique(species)
        for pair in itertools.combinations(np.flatnonzero(species == name), 2)
    ]
    first, second = np.array(pairs).T
    return first, second


def scores(images, masks, species, first, second) -> dict[str, np.ndarray]:
    """Background, fish and specimen scores over their cuts, and the combined ratio, per pair."""
    backgrounds = grouping._Backgrounds.of(images, masks, species)
    background = backgrounds.scores(first, second) / backgrounds.cut
    fish, random_fish = np.full(len(first), np.inf), []
    for name in np.unique(species):
        idx = np.flatnonzero(species == name)
        where = np.full(len(species), -1)
        where[idx] = np.arange(len(idx))
        pick = np.flatnonzero(species[first] == name)
        fish[pick], r = grouping._fish_distances(
            images[idx], masks[idx], where[first[pick]], where[second[pick]]
        )
        random_fish.append(r)
    cut = grouping.fish_cut(np.concatenate(random_fish))
    grids, valid = specimen_grids(images, masks)
    specimen = specimen_distances(grids, valid, first, second)
    specimen /= specimen_cut(specimen_distances(grids, valid, *backgrounds.null))
    combined = np.minimum(
        grouping.scene_ratio(background, fish, cut), grouping.specimen_ratio(specimen, background)
    )
    return {
        "background": background,
        "fish": fish / cut,
        "specimen": specimen,
        "combined": combined,
    }


def apart(clusters: list[list[int]], labels: np.ndarray) -> int:
    return sum(len(set(labels[members])) > 1 for members in clusters)


def straddling(clusters: list[list[int]], split: np.ndarray, kept: np.ndarray) -> int:
    """Clusters whose photos still in use sit in more than one split."""
    return sum(len({split[k] for k in members if kept[k]}) > 1 for members in clusters)


def main() -> None:
    params = load_params(_common.ROOT / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=params.data.image_size, metavar=("H", "W"))
    parser.add_argument("--cuts", type=float, nargs="+", default=[1, 1.5, 2, 3, 4, 6])
    args = parser.parse_args()

    ids, species, images, masks = load_realfish(tuple(args.size))
    n = len(ids)
    truth = load_truth(TRUTH, ids)
    first, second = all_pairs(species)
    found = scores(images, masks, species, first, second)
    same = pair_matrix(n, truth["="])[first, second]
    sitting = pair_matrix(n, truth["="] + truth["~"])[first, second]
    unsure = pair_matrix(n, truth["?"])[first, second]
    label = np.where(same, "=", np.where(sitting, "~", np.where(unsure, "?", "d")))
    print(f"{n} photos at {args.size[0]}x{args.size[1]}, {len(first)} pairs within species")
    print("score over its cut (quantiles 0, 10, 25, 50, 75%); under 1 joins")
    for name, values in found.items():
        for key, text in LABELS.items():
            q = np.quantile(values[label == key], [0, 0.1, 0.25, 0.5, 0.75], method="nearest")
            print(
                f"  {name:>10} {text:>16} ({(label == key).sum():>4} pairs): "
                + " ".join(f"{x:6.2f}" for x in q)
            )

    print("joining at looser cuts (all pairs, connected components)")
    for cut in args.cuts:
        linked = found["combined"] < cut
        groups = grouping._components(n, first, second, linked)
        distinct = ((groups[first] == groups[second]) & (label == "d")).sum()
        print(
            f"  T={cut:<4g}: {groups.max() + 1:>3} groups, largest {np.bincount(groups).max():>3}; apart: "
            f"{apart(truth['='], groups)} of {len(truth['='])} '=', {apart(truth['~'], groups)} of "
            f"{len(truth['~'])} '~'; {distinct} distinct pairs joined"
        )

    print("purging training photos within T of a val/test photo (seeds 42, 0-4)")
    groups = grouping.group_ids(images, masks, species, threshold=params.split.group_threshold)
    for cut in args.cuts:
        dropped, left = [], []
        near = found["combined"] < cut
        for seed in (42, 0, 1, 2, 3, 4):
            split = assign_splits(species, groups, val=params.split.val, test=params.split.test, seed=seed)
            held = split != "train"
            drop = np.zeros(n, bool)
            drop[first[near & held[second] & ~held[first]]] = True
            drop[second[near & held[first] & ~held[second]]] = True
            dropped.append(int(drop.sum()))
            left.append(straddling(truth["~"], split, ~drop))
        print(f"  T={cut:<4g}: drops {dropped} of {n} photos; '~' clusters still straddling {left}")


if __name__ == "__main__":
    main()
