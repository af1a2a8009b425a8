"""Same specimen: the fish's own surface detail, compared in the fish's own axes.

Shots of one specimen, however the camera moved, zoomed or turned, and wherever on the
table the fish was laid, show the same marks, spots, fin edges and scale rows in the same
places on the fish. Different specimens of one species share the plan of the body (eye,
gill cover, fins) but not those details.

Each fish is resampled on a grid along its own principal axes, centred on the mask's
centroid and scaled by the mask's spread along each axis: the grid follows the fish
through shifts, rotations and zooms of the camera, and through the mild stretch of a
tilted view. What is sampled is the luminance band-passed to the scale of those details
(brightness and slow shading removed), inside the mask shrunk away from its edge. An axis
has no preferred sign, so a pair is compared in the four orientations of the grid (which
also covers flipped and half-turned copies), at small shifts that absorb the centroid's
wobble when fins or tail are cut differently; the score is 1 minus the best normalised
cross-correlation. Glare on the fish, which moves with the camera, is clipped first.

The cut is a fixed level of agreement, lowered when photos of different species already
agree that well (blurry or textureless data): the null is the nearest photos of other
species, as for the background cut.
"""

from __future__ import annotations

import cv2
import numpy as np

# Shrunk to about this many pixels first: the cut is calibrated at this detail.
_WORK_PIXELS = 96 * 128
_BAND = (1 / 128, 4 / 128)  # Gaussian sigmas of the band-pass, as fractions of the work width
_CLIP = 1.5  # values beyond this many standard deviations are clipped
_EDGE = 2 / 128  # the mask shrunk by this much (fraction of the work width): edges are outline
_GRID = (24, 64)  # samples across and along the fish
_REACH = 2.2  # the grid's half-extent in standard deviations of the mask (an ellipse reaches 2)
_MIN_MASK_PIXELS = 16
_MEAN_OF_CHANNELS = np.full((1, 3), 1 / 765, np.float32)
_SHIFTS = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)]  # in grid cells
_MIN_OVERLAP = 0.5  # of the smaller fish's valid samples
# A pair is scored exactly only when its rough score (whole grids) is below the first, and
# at every shift only when its best unshifted score is below the second.
_ROUGH_BELOW = 0.6
_REFINE_BELOW = 0.4
# Cut: 1 - NCC of 0.12 at most; at most this share of the score that one pair in 500 of
# different species reaches.
_MAX_CUT = 0.12
_NULL_QUANTILE = 0.002
_NULL_SHARE = 0.35
_MIN_CUT = 0.02


def specimen_grids(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Band-passed luminance (N,24,64) on each fish's axis grid, and where it is valid (N,24,64).

    The values are zero-mean over the valid samples and zero elsewhere; a photo without a
    usable mask has no valid sample.
    """
    n, h, w = masks.shape
    scale = min(1.0, np.sqrt(_WORK_PIXELS / (h * w)))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    grids = np.zeros((n, *_GRID), np.float32)
    valid = np.zeros((n, *_GRID), np.float32)
    for k in range(n):
        image = np.ascontiguousarray(images[k], dtype=np.uint8)
        mask = np.ascontiguousarray(masks[k] > 0, dtype=np.uint8)
        if size != (w, h):
            image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            mask = cv2.resize(mask, size, interpolation=cv2.INTER_NEAREST)
        grids[k], valid[k] = _sample(image, mask)
    return grids, valid


def _sample(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One photo's grid values and validity (see ``specimen_grids``), at work size."""
    rows, cols = _GRID
    values, ok = np.zeros(_GRID, np.float32), np.zeros(_GRID, np.float32)
    axes = _axes(mask)
    if axes is None:
        return values, ok
    centre, major, minor = axes
    v = np.linspace(-_REACH, _REACH, rows)[:, None]
    u = np.linspace(-_REACH, _REACH, cols)[None, :]
    xs = (centre[0] + u * major[0] + v * minor[0]).astype(np.float32)
    ys = (centre[1] + u * major[1] + v * minor[1]).astype(np.float32)
    width = image.shape[1]
    reach = 2 * round(_EDGE * width) + 1
    inner = cv2.erode(mask, np.ones((reach, reach), np.uint8)).astype(np.float32)
    ok[:] = cv2.remap(inner, xs, ys, cv2.INTER_LINEAR, borderValue=0) > 0.999
    if not ok.any():
        return values, ok
    lum = cv2.transform(image.astype(np.float32), _MEAN_OF_CHANNELS)  # (R + G + B) / 765
    band = cv2.GaussianBlur(lum, (0, 0), _BAND[0] * width) - cv2.GaussianBlur(lum, (0, 0), _BAND[1] * width)
    values[:] = cv2.remap(band, xs, ys, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    inside = values[ok > 0]
    mean, spread = inside.mean(), _CLIP * inside.std()
    # Glare highlights move with the camera and would outweigh the fish's own marks: clipped.
    np.clip(values, mean - spread, mean + spread, out=values)
    values -= values[ok > 0].mean()
    return values * ok, ok


def _axes(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Centroid, and the major and minor axes scaled by the mask's spread (pixel index coordinates).

    The major axis points right (or down), the minor axis is it turned a quarter clockwise
    on screen: one fixed handedness, so that a mirrored copy is a mirrored grid.
    """
    m = cv2.moments(mask, binaryImage=True)
    if m["m00"] < _MIN_MASK_PIXELS:
        return None
    centre = np.array([m["m10"], m["m01"]]) / m["m00"]
    # +1/12: the variance of a uniform pixel, so a one-pixel-wide mask is not singular.
    cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / m["m00"] + np.eye(2) / 12
    values, vectors = np.linalg.eigh(cov)
    direction = vectors[:, 1]
    if direction[0] < 0 or (direction[0] == 0 and direction[1] < 0):
        direction = -direction
    major = direction * np.sqrt(values[1])
    minor = np.array([-direction[1], direction[0]]) * np.sqrt(values[0])
    return centre, major, minor


def specimen_distances(grids: np.ndarray, valid: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """1 minus the best correlation of the fish details of pairs (i, j), over orientations and shifts.

    Infinite where either photo has no fish or the overlap is too small. A rough score
    over the whole grids (each normalised alone) picks the orientation and stands for
    pairs far apart; the exact one, over the overlap, replaces it where the rough one is
    close, and the pairs that come close are scored at every small shift too.
    """
    out = np.full(len(i), np.inf, np.float32)
    norms = np.sqrt(np.einsum("pij,pij->p", grids, grids))
    chunk = 4096
    for start in range(0, len(i), chunk):
        a, b = i[start : start + chunk], j[start : start + chunk]
        first, second = grids[a], grids[b]
        product = norms[a] * norms[b]
        rough = np.stack([np.einsum("pij,pij->p", first, _orient(second, k)) for k in range(4)])
        orientation, rough = rough.argmax(0), rough.max(0)
        # The rough score stands where the exact one is not needed (pairs without a fish: inf).
        out[start : start + len(a)] = np.where(product > 0, 1 - rough / np.maximum(product, 1e-12), np.inf)
        keep = np.flatnonzero(rough > (1 - _ROUGH_BELOW) * product)
        a, b, orientation = a[keep], b[keep], orientation[keep]
        best = _aligned_scores(grids, valid, a, b, orientation, [(0, 0)])
        close = np.flatnonzero(best < _REFINE_BELOW)
        shifted = _aligned_scores(grids, valid, a[close], b[close], orientation[close], _SHIFTS)
        best[close] = np.minimum(best[close], shifted)
        out[start + keep] = best
    return out


def _orient(x: np.ndarray, k: int) -> np.ndarray:
    """The grids turned by orientation k: as is, half-turned, mirrored across, mirrored along."""
    return (x, x[:, ::-1, ::-1], x[:, ::-1, :], x[:, :, ::-1])[k]


def _ncc(a: np.ndarray, va: np.ndarray, b: np.ndarray, vb: np.ndarray) -> np.ndarray:
    """1 - normalised cross-correlation of stacks a and b (zero outside va, vb) over their overlap."""
    ab = np.einsum("pij,pij->p", a, b)
    aa = np.einsum("pij,pij->p", a * a, vb)
    bb = np.einsum("pij,pij->p", b * b, va)
    overlap = np.einsum("pij,pij->p", va, vb)
    least = np.minimum(va.sum((1, 2)), vb.sum((1, 2)))
    score = 1 - ab / np.sqrt(np.maximum(aa * bb, 1e-12))
    return np.where((overlap >= _MIN_OVERLAP * least) & (least > 0), score, np.inf).astype(np.float32)


def _aligned_scores(
    grids: np.ndarray,
    valid: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    orientation: np.ndarray,
    shifts: list[tuple[int, int]],
) -> np.ndarray:
    """The best exact score of each pair, b turned by its orientation, over ``shifts`` (grid cells)."""
    rows, cols = grids.shape[1:]
    second = np.empty((len(b), rows, cols), np.float32)
    second_ok = np.empty_like(second)
    for k in range(4):
        pick = orientation == k
        second[pick] = _orient(grids[b[pick]], k)
        second_ok[pick] = _orient(valid[b[pick]], k)
    pad = ((0, 0), (1, 1), (1, 1))
    second, second_ok = np.pad(second, pad), np.pad(second_ok, pad)
    best = np.full(len(a), np.inf, np.float32)
    for dy, dx in shifts:
        window = (slice(None), slice(1 + dy, 1 + dy + rows), slice(1 + dx, 1 + dx + cols))
        best = np.minimum(best, _ncc(grids[a], valid[a], second[window], second_ok[window]))
    return best


def specimen_cut(null_scores: np.ndarray) -> float:
    """The score below which two fish count as one specimen, given scores of different species' fish."""
    finite = null_scores[np.isfinite(null_scores)]
    if len(finite) == 0:
        return _MAX_CUT
    return float(np.clip(_NULL_SHARE * np.quantile(finite, _NULL_QUANTILE), _MIN_CUT, _MAX_CUT))
