"""Near-duplicate grouping on the synthetic archive: pairwise precision/recall and time.

Generates the archive at full size (590x445 by default), decodes and resizes it as the
split stage does (INTER_AREA for images, INTER_NEAREST for masks), groups it, and
compares with the generator's true photos. Also prints how many copy pairs a random
split would put on both sides, against the grouped split.

    python benchmarks/grouping_quality.py [--photos 20] [--copies 5] [--seed 0] [--size 96 128]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on the import path)
import cv2
import numpy as np

from fishseg.dataset.grouping import group_ids, pair_quality, straddling_pairs
from fishseg.dataset.splitting import assign_splits
from fishseg.sources.layout import image_dir, mask_dir
from fishseg.sources.synthetic import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=20)
    parser.add_argument("--copies", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--frame", type=int, nargs=2, default=(445, 590), metavar=("H", "W"))
    args = parser.parse_args()
    h, w = args.size

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        start = time.perf_counter()
        records = generate(
            root,
            photos_per_species=args.photos,
            copies_per_photo=args.copies,
            width=args.frame[1],
            height=args.frame[0],
            seed=args.seed,
            progress=False,
        )
        images, masks = [], []
        for r in records:
            image = cv2.cvtColor(cv2.imread(str(image_dir(root, r.species) / r.name)), cv2.COLOR_BGR2RGB)
            mask = (cv2.imread(str(mask_dir(root, r.species) / r.name), cv2.IMREAD_GRAYSCALE) > 127).astype(
                np.uint8
            )
            images.append(cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA))
            masks.append(cv2.resize(mask, (w, h), interpolation=cv2.INTER_NEAREST))
        print(f"{len(records)} pairs generated and loaded in {time.perf_counter() - start:.1f} s")

    species = [r.species for r in records]
    truth = [f"{r.species}/{r.photo}" for r in records]
    start, cpu = time.perf_counter(), time.process_time()
    groups = group_ids(np.stack(images), np.stack(masks), species)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    precision, recall = pair_quality(groups, truth)
    print(f"grouping at {h}x{w}: {wall:.2f} s wall, {cpu:.2f} s CPU")
    print(f"groups found {groups.max() + 1}, true {len(set(truth))}")
    print(f"pairwise precision {precision:.3f}, recall {recall:.3f}")

    species_arr = np.asarray(species)
    for strategy in ("random", "group"):
        splits = assign_splits(species_arr, groups, val=0.15, test=0.15, seed=42, strategy=strategy)
        print(f"{strategy:>6} split: {straddling_pairs(truth, splits)} copy pairs straddle splits")


if __name__ == "__main__":
    main()
