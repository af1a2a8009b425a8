"""Cross-check the near-duplicates judged by eye (realfish_near_duplicates.txt) with point matches.

Two photos of one specimen, same side up, show the same marks on the fish: SIFT points
found inside each fish (at full size, the mask shrunk away from its edge) match point for
point under one homography, whatever the camera or the fish did in between (the second
photo is also tried mirrored, for a fish turned round). Different specimens match only
a few points (the eye, a fin edge), except where the skin is a fine repeating pattern
(sprats): hence each species' own base rate, the median over pairs no line joins.

Prints the "=" pairs with few matches (a copy, or shots of one pose, should match well)
and the pairs no line joins that match many times over their species' base rate: both
are worth another look, for instance with --draw, which writes the matches of one pair.

    python benchmarks/realfish_audit.py [--few 15] [--many 40]
    python benchmarks/realfish_audit.py --draw "Sea Bass/00022" "Sea Bass/00040" --out matches.png
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import _common  # noqa: F401  (puts the project on the import path)
import cv2
import numpy as np
from grouping_real import REALFISH, TRUTH, load_truth, pair_matrix

RATIO = 0.8  # Lowe's ratio test
RANSAC_PIXELS = 5.0
EDGE = 7  # pixels the mask is shrunk by: points on the outline describe the background too


class Points:
    """SIFT points and descriptors inside one photo's fish, as is and mirrored."""

    def __init__(self, sift: cv2.SIFT, photo_id: str) -> None:
        species, stem = photo_id.split("/")
        gray = cv2.imread(str(REALFISH / "images" / species / f"{stem}.jpg"), cv2.IMREAD_GRAYSCALE)
        mask = cv2.imread(str(REALFISH / "masks" / species / f"{stem}.png"), cv2.IMREAD_GRAYSCALE)
        inner = cv2.erode((mask > 127).astype(np.uint8) * 255, np.ones((EDGE, EDGE), np.uint8))
        self.views = [
            self._detect(sift, gray, inner),
            self._detect(sift, cv2.flip(gray, 1), cv2.flip(inner, 1)),
        ]

    @staticmethod
    def _detect(sift: cv2.SIFT, gray: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
        keys, desc = sift.detectAndCompute(gray, mask)
        return np.float32([k.pt for k in keys]).reshape(-1, 2), desc


def matches(a: Points, b: Points) -> tuple[int, list[tuple[np.ndarray, np.ndarray]]]:
    """The most point matches one homography explains, over b as is and mirrored, and those points."""
    matcher = cv2.BFMatcher()
    best, best_points = 0, []
    pa, da = a.views[0]
    for pb, db in b.views:
        if da is None or db is None or len(da) < 5 or len(db) < 5:
            continue
        good = [
            m[0]
            for m in matcher.knnMatch(da, db, k=2)
            if len(m) == 2 and m[0].distance < RATIO * m[1].distance
        ]
        if len(good) < 5:
            continue
        src, dst = pa[[g.queryIdx for g in good]], pb[[g.trainIdx for g in good]]
        _, inliers = cv2.findHomography(src, dst, cv2.RANSAC, RANSAC_PIXELS)
        if inliers is not None and inliers.sum() > best:
            keep = inliers.ravel().astype(bool)
            best, best_points = int(inliers.sum()), [(src[keep], dst[keep])]
    return best, best_points


def draw(a: str, b: str, out: Path) -> None:
    """Both photos side by side with the matched points of their fish joined by lines."""
    sift = cv2.SIFT_create(nfeatures=1500)
    count, points = matches(Points(sift, a), Points(sift, b))
    images = [
        cv2.imread(str(REALFISH / "images" / x.split("/")[0] / f"{x.split('/')[1]}.jpg")) for x in (a, b)
    ]
    canvas = np.concatenate(images, 1)
    width = images[0].shape[1]
    for src, dst in points:
        for (x0, y0), (x1, y1) in zip(src, dst, strict=True):
            cv2.line(
                canvas, (round(x0), round(y0)), (round(x1) + width, round(y1)), (0, 255, 0), 1, cv2.LINE_AA
            )
    cv2.putText(
        canvas, f"{a} / {b}: {count} matches", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 2
    )
    cv2.imwrite(str(out), canvas)
    print(f"{a} / {b}: {count} matches; wrote {out}")


def audit(few: int, many: int) -> None:
    ids = [f"{p.parent.name}/{p.stem}" for p in sorted((REALFISH / "images").glob("*/*.jpg"))]
    species = np.array([x.split("/")[0] for x in ids])
    start, cpu = time.perf_counter(), time.process_time()
    sift = cv2.SIFT_create(nfeatures=1500)
    points = [Points(sift, x) for x in ids]
    count = np.zeros((len(ids), len(ids)), np.int64)
    for name in np.unique(species):
        for a, b in itertools.combinations(np.flatnonzero(species == name), 2):
            count[a, b] = count[b, a] = matches(points[a], points[b])[0]
    print(
        f"{len(ids)} photos: {time.perf_counter() - start:.0f} s wall, {time.process_time() - cpu:.0f} s CPU"
    )
    truth = load_truth(TRUTH, ids)
    identical = pair_matrix(len(ids), truth["="])
    joined = pair_matrix(len(ids), truth["="] + truth["~"] + truth["?"])
    upper = np.triu(species[:, None] == species[None, :], 1)
    for name in np.unique(species):
        rows = species == name
        base = np.median(count[np.ix_(rows, rows)][(upper & ~joined)[np.ix_(rows, rows)]])
        print(f"{name}: unjoined pairs match {base:.0f} points (median)")
        for a, b in np.argwhere(upper & identical & rows[:, None]):
            if count[a, b] < few:
                print(f"    '=' with few matches: {ids[a]} + {ids[b]}: {count[a, b]}")
        for a, b in np.argwhere(upper & ~joined & rows[:, None]):
            if count[a, b] >= max(many, 3 * base):
                print(f"    unjoined with many matches: {ids[a]} + {ids[b]}: {count[a, b]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--few", type=int, default=15, help="'=' pairs below this many matches are listed")
    parser.add_argument(
        "--many", type=int, default=40, help="unjoined pairs from this many matches are listed"
    )
    parser.add_argument("--draw", nargs=2, metavar=("A", "B"), help="draw the matches of photos A and B")
    parser.add_argument("--out", type=Path, default=Path("matches.png"), help="where --draw writes")
    args = parser.parse_args()
    if args.draw:
        draw(*args.draw, args.out)
    else:
        audit(args.few, args.many)


if __name__ == "__main__":
    main()
