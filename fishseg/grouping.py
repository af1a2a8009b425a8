"""Find near-duplicates: copies of one photo made by flips and rotations.

The archive's images per species are flipped, 90-degree rotated (then resized back to the
frame, which stretches them) and freely rotated (black corners) copies of fewer photos.
Every copy shows the same fish, so the descriptors here look only at the masked fish and
are built to be unchanged by those transforms:

- shape: mask pixel coordinates are whitened by their covariance (undoing any stretch,
  scale and rotation: an affine normalisation), then described by their radial
  distribution, which ignores rotation and reflection;
- colour: mean and spread of the fish's Lab colour, and its radial colour profile.

Within a species, images are clustered by average linkage on standardised descriptors
and cut at ``threshold``; average linkage resists chaining distinct photos together.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import cv2
import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import pdist

log = logging.getLogger(__name__)

RINGS = np.linspace(0.0, 2.5, 6)  # ring centres, in whitened units (std of the mask)
# Descriptor blocks (name: width) and their weights in the distance. Chosen on synthetic
# data with known groups (pairwise precision and recall 1.0 at the default threshold).
BLOCKS = {"geometry": 2, "colour_mean": 3, "colour_std": 3, "colour_profile": 3 * len(RINGS)}
WEIGHTS = {"geometry": 0.5, "colour_mean": 1.0, "colour_std": 1.0, "colour_profile": 2.0}
DEFAULT_THRESHOLD = 0.35
# A group holding more than this share of a species (with enough images to tell) is suspicious.
GIANT_GROUP_SHARE = 0.5


def _ring_weights(r: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear interpolation of radius ``r`` between neighbouring rings."""
    step = RINGS[1] - RINGS[0]
    pos = np.clip(r / step, 0, len(RINGS) - 1 - 1e-9)
    lo = pos.astype(np.int64)
    frac = pos - lo
    return lo, 1.0 - frac, frac


def descriptors(images: np.ndarray, masks: np.ndarray) -> np.ndarray:
    """Flip/rotation/stretch-invariant descriptors (N, D) of the masked fish in each image.

    Per image (the blocks of ``BLOCKS``): log area share and elongation, the fish's mean
    and spread of Lab colour, and its radial Lab profile. Angular and finer shape detail
    is left out: at training sizes it is noise (fins, crops by rotation), while colour is
    what two photos of one species differ in most.
    """
    n, h, w = masks.shape
    k = len(RINGS)
    flat = masks.reshape(n, -1).astype(bool)
    out = np.zeros((n, sum(BLOCKS.values())))
    yy, xx = np.mgrid[0:h, 0:w]
    xx, yy = xx.ravel().astype(np.float64), yy.ravel().astype(np.float64)
    lab_all = cv2.cvtColor(np.asarray(images).reshape(-1, w, 3), cv2.COLOR_RGB2LAB).reshape(n, -1, 3)
    for i in range(n):
        pix = np.flatnonzero(flat[i])
        if len(pix) < 8:
            continue  # nothing to describe: all zeros
        dx, dy = xx[pix] - xx[pix].mean(), yy[pix] - yy[pix].mean()
        cov = np.cov(np.stack([dx, dy])) + np.eye(2) / 12.0
        vals, vecs = np.linalg.eigh(cov)
        px, py = (vecs @ np.diag(vals**-0.5) @ vecs.T) @ np.stack([dx, dy])
        lo, wl, wh = _ring_weights(np.hypot(px, py))
        mass = np.bincount(lo, wl, k + 1) + np.bincount(lo + 1, wh, k + 1)  # weights of the profile
        lab = lab_all[i, pix].astype(np.float64) / 255.0
        profile = [
            (np.bincount(lo, wl * lab[:, c], k + 1) + np.bincount(lo + 1, wh * lab[:, c], k + 1))[:k]
            / np.maximum(mass[:k], 1e-6)
            for c in range(3)
        ]
        out[i] = np.concatenate(
            [
                [np.log(len(pix) / (h * w)), np.log(vals[1] / vals[0])],
                lab.mean(0),
                lab.std(0),
                *profile,
            ]
        )
    return out


def weighted(feats: np.ndarray) -> np.ndarray:
    """Standardise each feature over the dataset, then weight blocks (each block's weight
    spread over its width), so that distances are comparable whatever the data."""
    scale = feats.std(0)
    feats = feats / np.where(scale > 1e-9, scale, 1.0)
    cols, start = [], 0
    for name, width in BLOCKS.items():
        cols.append(feats[:, start : start + width] * WEIGHTS[name] / np.sqrt(width))
        start += width
    return np.concatenate(cols, axis=1) / np.sqrt(sum(w * w for w in WEIGHTS.values()))


def group_ids(
    images: np.ndarray, masks: np.ndarray, species: Sequence[str], *, threshold: float = DEFAULT_THRESHOLD
) -> np.ndarray:
    """Group ids (N,) 0..G-1: near-duplicate copies share one; species never mix.

    ``images`` (N,H,W,3) uint8 RGB and ``masks`` (N,H,W) {0,1}, all at one size.
    """
    species_arr = np.asarray(species, dtype=object)
    groups = np.zeros(len(species_arr), dtype=np.int64)
    if len(species_arr) == 0:
        return groups
    feats = weighted(descriptors(np.asarray(images), np.asarray(masks)))
    next_id = 0
    for name in sorted(set(species_arr.tolist())):
        idx = np.flatnonzero(species_arr == name)
        if len(idx) == 1:
            labels = np.array([1])
        else:
            tree = linkage(pdist(feats[idx]), method="average")
            labels = fcluster(tree, t=threshold, criterion="distance")
        _, dense = np.unique(labels, return_inverse=True)
        groups[idx] = dense + next_id
        next_id += dense.max() + 1
        largest = np.bincount(dense).max()
        if len(idx) >= 10 and largest > GIANT_GROUP_SHARE * len(idx):
            log.warning(
                "%s: one near-duplicate group holds %d of %d images; the split has little to choose from",
                name,
                largest,
                len(idx),
            )
    return groups


def pair_quality(pred: Sequence[int], true: Sequence[int]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping against the truth (1.0 when undefined)."""
    pred, true = np.asarray(pred), np.asarray(true)
    same_pred = pred[:, None] == pred[None, :]
    same_true = true[:, None] == true[None, :]
    upper = np.triu(np.ones_like(same_pred, dtype=bool), k=1)
    both = (same_pred & same_true & upper).sum()
    n_pred, n_true = (same_pred & upper).sum(), (same_true & upper).sum()
    return (float(both / n_pred) if n_pred else 1.0, float(both / n_true) if n_true else 1.0)


def straddling_pairs(groups: Sequence[int], splits: Sequence[str]) -> int:
    """Number of same-group pairs whose members are in different splits."""
    total = 0
    groups_arr, splits_arr = np.asarray(groups), np.asarray(splits)
    for g in np.unique(groups_arr):
        _, counts = np.unique(splits_arr[groups_arr == g], return_counts=True)
        n = counts.sum()
        total += int((n * n - (counts**2).sum()) // 2)
    return total
