"""Contact sheets of the near-duplicate grouping on the embedded real photos, to judge by eye.

Groups datasets/realfish as the split stage does and writes two PNGs:

* ``largest_groups.png``: the largest groups, one row each (photos of one group should
  show one specimen in one place, or copies of one photo);
* ``nearest_unjoined.png``: the candidate pairs closest to being joined that were not,
  side by side with their score over the cut (1.0 is the cut; "copy", "scene" or
  "specimen" says which test came closest).

    python benchmarks/grouping_sheet.py [--out grouping_sheets] [--groups 8] [--pairs 16] [--threshold 1.0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common  # noqa: F401  (puts the project on the import path)
import cv2
import numpy as np
from grouping_real import REALFISH, load_realfish

from fishseg.dataset.grouping import LINK_KINDS, candidate_links, group_ids

THUMB = (236, 178)  # (w, h) of each photo on the sheets
PER_ROW = 6
CAPTION = 18  # pixels of text above each photo


def thumbnail(photo_id: str, caption: str) -> np.ndarray:
    """The photo at full quality, shrunk, with a caption strip above it (BGR)."""
    species, stem = photo_id.split("/")
    image = cv2.resize(
        cv2.imread(str(REALFISH / "images" / species / f"{stem}.jpg")), THUMB, interpolation=cv2.INTER_AREA
    )
    tile = np.full((THUMB[1] + CAPTION, THUMB[0], 3), 255, np.uint8)
    tile[CAPTION:] = image
    cv2.putText(tile, caption, (3, CAPTION - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (0, 0, 0), 1, cv2.LINE_AA)
    return tile


def sheet(rows: list[list[np.ndarray]], titles: list[str], per_row: int = PER_ROW) -> np.ndarray:
    """Rows of tiles under a title line each, ``per_row`` tiles to a line."""
    width = per_row * (THUMB[0] + 4)
    blocks = []
    for tiles, title in zip(rows, titles, strict=True):
        head = np.full((24, width, 3), 235, np.uint8)
        cv2.putText(head, title, (4, 17), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
        blocks.append(head)
        for start in range(0, len(tiles), per_row):
            line = np.full((THUMB[1] + CAPTION + 4, width, 3), 255, np.uint8)
            for k, tile in enumerate(tiles[start : start + per_row]):
                x = k * (THUMB[0] + 4)
                line[: tile.shape[0], x : x + tile.shape[1]] = tile
            blocks.append(line)
    return np.concatenate(blocks)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("grouping_sheets"), help="folder for the PNGs")
    parser.add_argument("--groups", type=int, default=8, help="how many of the largest groups to show")
    parser.add_argument("--pairs", type=int, default=16, help="how many unjoined pairs to show")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 128), metavar=("H", "W"))
    parser.add_argument("--threshold", type=float, default=1.0)
    args = parser.parse_args()

    ids, species, images, masks = load_realfish(tuple(args.size))
    groups = group_ids(images, masks, species, threshold=args.threshold)
    links = candidate_links(images, masks, species, threshold=args.threshold)
    args.out.mkdir(parents=True, exist_ok=True)

    sizes = np.bincount(groups)
    largest = np.argsort(-sizes, kind="stable")[: args.groups]
    rows = [[thumbnail(ids[k], ids[k]) for k in np.flatnonzero(groups == g)] for g in largest]
    titles = [f"group {g}: {sizes[g]} photos" for g in largest]
    cv2.imwrite(str(args.out / "largest_groups.png"), sheet(rows, titles))

    # The closest candidate pair between each two groups, closest first.
    apart = groups[links.first] != groups[links.second]
    order = np.flatnonzero(apart)[np.argsort(links.ratio[apart], kind="stable")]
    shown: set[tuple[int, int]] = set()
    rows, titles = [], []
    for k in order:
        key = tuple(sorted((int(groups[links.first[k]]), int(groups[links.second[k]]))))
        if key in shown:
            continue
        shown.add(key)
        a, b = int(links.first[k]), int(links.second[k])
        kind = LINK_KINDS[links.kind[k]]
        rows.append([thumbnail(ids[a], ids[a]), thumbnail(ids[b], ids[b])])
        titles.append(f"{kind} score / cut = {links.ratio[k]:.2f}")
        if len(rows) == args.pairs:
            break
    # Two pairs side by side per row of the sheet.
    paired = [rows[k] + (rows[k + 1] if k + 1 < len(rows) else []) for k in range(0, len(rows), 2)]
    paired_titles = [" | ".join(titles[k : k + 2]) for k in range(0, len(titles), 2)]
    cv2.imwrite(str(args.out / "nearest_unjoined.png"), sheet(paired, paired_titles, per_row=4))
    print(f"{len(ids)} photos, {groups.max() + 1} groups; wrote {args.out / 'largest_groups.png'}")
    print(f"wrote {args.out / 'nearest_unjoined.png'} ({len(rows)} pairs)")


if __name__ == "__main__":
    main()
