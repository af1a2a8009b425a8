"""Near-duplicate grouping on the embedded real photos, against near-duplicates judged by eye.

Decodes and resizes datasets/realfish as the split stage does (``decode_pairs``), groups
it, and compares with benchmarks/realfish_near_duplicates.txt at two levels: near-identical
photos ("=": copies, shots one after another in one pose and place) and one specimen in
one sitting ("=" and "~": also turned over, moved, or the camera moved more). Pairs marked
"?" (one sitting, the specimen may differ) count neither way. Prints pairwise precision
and recall, the groups, and the clusters that the split stage's split (and a few other
seeds) puts on both sides.

    python benchmarks/grouping_real.py [--size 192 256] [--threshold 1.0] [--seeds 42 0 1 2 3 4]

Size, threshold and the split's fractions default to params.yaml's.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on the import path)
import numpy as np

from fishseg.dataset.grouping import group_ids
from fishseg.dataset.index import Pair, Problem, decode_pairs
from fishseg.dataset.splitting import assign_splits
from fishseg.params import load_params

ROOT = Path(__file__).resolve().parents[1]
REALFISH = ROOT / "datasets" / "realfish"
TRUTH = Path(__file__).with_name("realfish_near_duplicates.txt")


def load_realfish(size: tuple[int, int]) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """ids ("Species/stem"), species, images and masks at ``size`` (H, W), as the split stage makes them."""
    pairs = [
        Pair(image.parent.name, image, REALFISH / "masks" / image.parent.name / f"{image.stem}.png")
        for image in sorted((REALFISH / "images").glob("*/*.jpg"))
    ]
    problems: list[Problem] = []
    decoded = list(decode_pairs(pairs, size, problems))
    if problems:
        raise SystemExit(f"{REALFISH}: {problems[0]}")
    ids = [f"{d.species}/{d.image_path.stem}" for d in decoded]
    species = np.array([d.species for d in decoded])
    return ids, species, np.stack([d.image for d in decoded]), np.stack([d.mask for d in decoded])


def load_truth(path: Path, ids: list[str]) -> dict[str, list[list[int]]]:
    """The clusters of each kind ("=", "~", "?") as lists of indices into ``ids``."""
    where = {name: k for k, name in enumerate(ids)}
    clusters: dict[str, list[list[int]]] = {"=": [], "~": [], "?": []}
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        for kind in clusters:
            if f" {kind} " in line:
                species, stems = line.split(f" {kind} ")
                clusters[kind].append([where[f"{species}/{stem}"] for stem in stems.split()])
    return clusters


def pair_matrix(n: int, clusters: list[list[int]]) -> np.ndarray:
    """Boolean (n, n): True where both photos are in one of the clusters (diagonal False)."""
    same = np.zeros((n, n), bool)
    for members in clusters:
        same[np.ix_(members, members)] = True
    np.fill_diagonal(same, False)
    return same


def quality(groups: np.ndarray, same: np.ndarray, ignored: np.ndarray) -> tuple[float, float]:
    """Pairwise precision and recall of ``groups`` against ``same``, leaving out ``ignored`` pairs."""
    upper = np.triu(np.ones_like(same), 1) & ~ignored
    joined = (groups[:, None] == groups[None, :]) & upper
    true = same & upper
    hits = (joined & true).sum()
    return hits / max(joined.sum(), 1), hits / max(true.sum(), 1)


def straddling(clusters: list[list[int]], splits: np.ndarray) -> list[list[int]]:
    return [members for members in clusters if len(set(splits[members])) > 1]


def main() -> None:
    params = load_params(ROOT / "params.yaml")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, nargs=2, default=params.data.image_size, metavar=("H", "W"))
    parser.add_argument("--threshold", type=float, default=params.split.group_threshold)
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 0, 1, 2, 3, 4])
    args = parser.parse_args()

    ids, species, images, masks = load_realfish(tuple(args.size))
    truth = load_truth(TRUTH, ids)
    n = len(ids)
    start, cpu = time.perf_counter(), time.process_time()
    groups = group_ids(images, masks, species, threshold=args.threshold)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    sizes = np.bincount(groups)
    largest = int(np.argmax(sizes))
    print(
        f"{n} photos at {args.size[0]}x{args.size[1]}, threshold {args.threshold}: {wall:.1f} s wall, {cpu:.1f} s CPU"
    )
    print(
        f"groups {groups.max() + 1}, largest {sizes.max()} ({ids[int(np.flatnonzero(groups == largest)[0])]}...)"
    )

    identical = pair_matrix(n, truth["="])
    sitting = pair_matrix(n, truth["="] + truth["~"])
    unsure = pair_matrix(n, truth["?"])
    for name, same, ignored in (
        ("near-identical (=)", identical, (sitting | unsure) & ~identical),
        ("one sitting (= and ~)", sitting, unsure & ~sitting),
    ):
        precision, recall = quality(groups, same, ignored)
        print(
            f"{name:>22}: pairwise precision {precision:.3f}, recall {recall:.3f} ({same.sum() // 2} pairs)"
        )
    joined = np.triu(groups[:, None] == groups[None, :], 1)
    print(
        f"{'unsure (?)':>22}: {(joined & unsure & ~sitting).sum()} of {(unsure & ~sitting).sum() // 2} pairs joined"
    )
    wrong = np.argwhere(joined & ~sitting & ~unsure)
    print(
        f"{'distinct':>22}: {len(wrong)} pairs joined"
        + "".join(f"\n    {ids[a]} + {ids[b]}" for a, b in wrong[:20])
    )

    for kind in ("=", "~"):
        apart = [members for members in truth[kind] if len(set(groups[members])) > 1]
        print(f"{kind} clusters not wholly in one group: {len(apart)} of {len(truth[kind])}")
        for members in apart:
            print("    " + ", ".join(f"{ids[k]} (group {groups[k]})" for k in members))
    for seed in args.seeds:
        splits = assign_splits(species, groups, val=params.split.val, test=params.split.test, seed=seed)
        apart = {kind: straddling(truth[kind], splits) for kind in ("=", "~")}
        line = f"split seed {seed:>2}: {len(apart['='])} of {len(truth['='])} near-identical clusters straddle splits"
        line += f", {len(apart['~'])} of {len(truth['~'])} sitting clusters"
        print(line)
        if seed == args.seeds[0]:
            for kind in ("=", "~"):
                for members in apart[kind]:
                    print(f"    {kind} " + ", ".join(f"{ids[k]} ({splits[k]})" for k in members))


if __name__ == "__main__":
    main()
