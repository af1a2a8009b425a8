"""Near-duplicate grouping: copies of one photo, shots of one scene, and of one specimen share a group id.

The archive's pairs per species are copies of fewer photos: flipped, rotated by 90
degrees and resized back to the frame (which stretches one axis and squeezes the other),
or freely rotated about the frame's centre, leaving black corners. A split that puts
copies of one photo on both sides leaks, so the split stage groups first and splits by
group.

Two images are copies when one can be laid over the other. Each image is resampled on
polar grids in three canonical frames, where those transforms become circular shifts of
the angle axis, possibly reversed (a reflection):

* the photo's frame in pixels, centred on the frame: a free rotation about the centre
  is a rotation here (as long as the arrays keep the photos' aspect, as the pipeline's
  96x128 does for 445x590);
* the photo's frame scaled to a square: a 90-degree rotation resized back to the frame
  is a quarter turn here;
* the fish's own frame, centred on the mask's centroid and whitened by the mask's
  covariance: any affine map of the fish (flips, rotations, the 90-degree copies'
  stretch) leaves the whitened fish unchanged up to a rotation or a reflection. It does
  not rely on how the copies were made, but a copy whose rotation cut off part of the
  fish changes the mask, which the photo's frames do not care about.

The grid covers the fish and the surface around it (glare, speckles, stamp), which is
what tells two photos of similar fish apart. Images are shrunk to about 48x64 and
blurred first: copies agree on structure, while fine texture does not survive
resampling.

For each image, candidates are its nearest neighbours within its species under
rotation-invariant descriptors (magnitudes of the angular Fourier spectra), plus a few
random partners. Each candidate pair is then registered: the mean squared difference of
RGB and mask over the samples valid in both (in frame, not near a black corner),
minimised over all rotations and both reflections with FFTs along the angle, and over
the three frames. A match in the fish's frame also needs the same area and compactness:
that frame cannot tell a thin fish from a plump one. Copies score about an order of
magnitude below distinct photos; the cut between the two modes is found in the scores
(Otsu's method on their logs) and scaled by ``threshold``.

Real photos have a second kind of near-duplicate that no transform explains: shots taken
one after another of one specimen in one place, moved a little or turned over, with the
camera moved a little too. What they share is the surface around the fish: the same wet
patches, flakes and scratches, shifted. Each photo's background (the fish with a margin
for its shadow, black corners and the date stamp left out) is reduced to two band-passed
channels: log(blue/red), which exposure does not change, and log brightness; slow glare
and shading, which move with the camera, are removed. Two backgrounds are compared by
normalised cross-correlation over the part both show, at every shift up to a fifth of
the frame (FFTs again); at each shift the smaller of the two channels' correlations
counts, so colour and brightness must line up together, and the score is 1 minus the
best. A camera that zoomed between shots scales the fish and its surroundings alike: where
the fish are alike (within half their cut) and their areas differ as a zoom of 2-25% would
make them, the background showing the smaller fish is also compared magnified by that
zoom, and the better score counts. Candidates are each photo's nearest neighbours within its species by a blurred
thumbnail of its colour detail, outside its own copies.

One place sees many specimens, so the fish must agree too: compared inside the mask in
the fish's own frame (up to rotation and reflection: turned over still counts), and of
the same size and compactness within a quarter, as one specimen seen from one height is.
The background cut is found in the data, among pairs known to be different specimens:
each of a sample of photos is scored against its nearest photos of other species, picked
as candidates are (some were shot in the same place), and the cut is the score one such
pair in 500 reaches, capped at 0.2 (the cap alone with one species). The fish cut is the
score a quarter of random pairs of one species reach; a background that matches twice
as well as its cut allows fish twice as different. Both cuts scale with ``threshold``.

The third kind is one specimen, wherever it lay and however the camera moved: its own
marks, spots and fin edges, compared on a grid along the fish's axes
(``fishseg.dataset.specimen``), among the candidates of both other tests. Fish of one
species can look alike to the last detail the images keep, so the background weighs in:
on a background within 1.25 times its cut the fish's score over its cut decides alone;
further off, the two multiply, so a background five times its cut needs a fish four times
under its own.

Every candidate pair, of any kind, is put as its score over its cut; groups are the
connected components of the pairs under ``threshold``, and a group that holds too much of
its species is split at a tighter one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import NamedTuple

import cv2
import numpy as np
import scipy.fft
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from fishseg.dataset.specimen import specimen_cut, specimen_distances, specimen_grids
from fishseg.progress import progress_bar

log = logging.getLogger(__name__)

# Multiplies the data-derived cut: below 1 stricter groups, above 1 looser.
DEFAULT_THRESHOLD = 1.0
# A group holding more than this share of a species (of at least _GUARD_MIN_IMAGES) has
# its links tightened until it breaks up: one giant group would make the split impossible.
MAX_GROUP_FRACTION = 0.5
_GUARD_MIN_IMAGES = 20

# Larger inputs are shrunk first: registration needs no detail, and the cost then stays
# flat whatever size the pipeline prepared.
_WORK_PIXELS = 48 * 64
_BLUR = 1 / 64  # Gaussian sigma, as a fraction of the image width
_BLACK_LEVEL = 16  # max channel value below which a pixel counts as a black corner
_MIN_MASK_PIXELS = 8
_GEOMETRY_TOLERANCE = 0.1  # in log units: area and compactness within ~10%
_MASK_WEIGHT = 0.5  # the mask's weight as a channel, against RGB in [0,1]
_DESCRIPTOR_FREQUENCIES = 9  # angular frequencies kept in the retrieval descriptors
_REGISTRATION_FREQUENCIES = 17  # and in the registration
# Polar grids: radii in whitened units (a filled ellipse reaches 2) and in fractions of
# the half-diagonal.
_FISH_RADII = np.linspace(0.3, 6.0, 14)
_FISH_ANGLES = 48
_PHOTO_RADII = np.linspace(0.04, 1.0, 12)
_PHOTO_ANGLES = 64
_NEIGHBOURS = 6  # candidates per image and frame
_RANDOM_PARTNERS = 2  # and random ones, per image
_MIN_OVERLAP = 0.5  # a registration must compare at least this share of valid samples
# Bounds on the cut between copies and distinct photos (mean squared difference, RGB in
# [0,1]), and the cut used when the scores show no two clear modes.
_CUT_RANGE = (5e-4, 2e-2)
_FALLBACK_CUT = 3e-3
# Distance between the two modes' means, in the sum of their spreads (log scores): a
# single normal mode split in two gives about 1.3.
_MIN_SEPARATION = 2.0
_CUT_POSITION = 0.4  # where the cut sits from the copies' mean (0) to the others' (1)

# Same scene. Backgrounds are compared at about 48x64, as fractions of the work width:
_SCENE_PIXELS = 48 * 64
_SCENE_DETAIL = 1 / 64  # Gaussian sigma of the detail kept
_SCENE_SHADING = 4 / 64  # and of the shading removed
_SCENE_FISH_MARGIN = 2 / 64  # the fish is left out with this margin (its shadow)
_SCENE_CORNER_MARGIN = 2 / 64  # and black corners with this one (their blurred edge)
# Date stamps (saturated yellow, OpenCV HSV) sit in the same corner of every photo: left out.
_STAMP_HSV = ((20, 120, 150), (35, 255, 255))
_STAMP_MARGIN = 1 / 64
_SCENE_EPS = 0.05  # added to RGB in [0,1] before the log: dark pixels carry no ratio
_SCENE_SHIFT = 0.2  # the largest shift tried, as a fraction of each side
_SCENE_MIN_OVERLAP = 0.5  # of the smaller background, compared at that shift
_SCENE_THUMB = (16, 12)  # thumbnail for the candidates, and its blur (of the work width)
_SCENE_THUMB_BLUR = 3 / 64
_SCENE_NEIGHBOURS = 10  # candidates per image, outside its own copies
_SCENE_RANDOM = 2  # random partners per image, for the fish cut
# A zoom of the camera between these factors (linear) is tried, as the fish's sizes say.
_SCENE_MIN_ZOOM = 1.02
_SCENE_MAX_ZOOM = 1.25
_SCENE_ZOOM_FISH = 0.5  # for scene candidates whose fish score is under this many fish cuts
_SCENE_SPECTRA_AT_ONCE = 2000  # images whose spectra are kept at once (a species' candidates)
# The background cut: a quantile of the scores between sampled photos and their nearest
# photos of other species (found as candidates are), capped; the cap alone without them.
_SCENE_NULL_PHOTOS = 500
_SCENE_NULL_QUANTILE = 0.002
_SCENE_MAX_CUT = 0.2
_SCENE_MIN_CUT = 0.01  # even when unrelated photos match closely, near-copies still link
# The fish: compared inside the mask (a filled ellipse reaches 2 whitened units); the cut
# is this quantile of random same-species pairs' scores.
_FISH_INSIDE_RADII = np.linspace(0.3, 2.2, 10)
_FISH_CUT_QUANTILE = 0.25
# A specimen's detail alone links shots whose backgrounds score up to this many times
# their cut; further off, the fish's detail must match proportionally better.
_SPECIMEN_PLACE_SLACK = 1.25
# One specimen shot from one height keeps its size: area and compactness within ~25%.
_SCENE_GEOMETRY_TOLERANCE = 0.25


def group_ids(
    images: np.ndarray,
    masks: np.ndarray,
    species: Sequence[str],
    *,
    threshold: float = DEFAULT_THRESHOLD,
    max_group_fraction: float = MAX_GROUP_FRACTION,
    progress: bool = False,
) -> np.ndarray:
    """Group near-duplicate images (copies of one photo, shots of one scene); never across species.

    ``images`` (N,H,W,3) uint8 RGB, ``masks`` (N,H,W) uint8 in {0,1}, all one size.
    Returns int64 group ids 0..G-1, numbered in order of first appearance.
    ``threshold`` multiplies the cut found in the data (1: as found, lower: stricter).
    ``progress`` draws a bar over the species (on a terminal only).
    """
    images = np.asarray(images)
    masks = np.asarray(masks)
    species_arr = np.asarray([str(s) for s in species])
    n = len(images)
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise ValueError(f"expected images (N,H,W,3) and masks (N,H,W), got {images.shape} and {masks.shape}")
    if len(species_arr) != n:
        raise ValueError(f"{len(species_arr)} species labels for {n} images")
    if threshold <= 0:
        raise ValueError(f"threshold must be positive, got {threshold}")
    if n == 0:
        return np.zeros(0, np.int64)

    first, second, ratio, _ = candidate_links(
        images, masks, species_arr, threshold=threshold, progress=progress
    )
    labels = _components(n, first, second, ratio < threshold)
    if max_group_fraction < 1:
        labels = _break_giants(labels, species_arr, first, second, ratio, threshold, max_group_fraction)
    # Renumber by first appearance, so that ids follow the input order.
    _, first_at, inverse = np.unique(labels, return_index=True, return_inverse=True)
    return np.argsort(np.argsort(first_at))[inverse].astype(np.int64)


# What a link's evidence was: copies of one photo, one scene, one specimen.
LINK_KINDS = ("copy", "scene", "specimen")


class Links(NamedTuple):
    """Candidate pairs (first < second) and each one's score over its cut."""

    first: np.ndarray
    second: np.ndarray
    ratio: np.ndarray  # linked when below the threshold
    kind: np.ndarray  # index into LINK_KINDS


def candidate_links(
    images: np.ndarray,
    masks: np.ndarray,
    species: np.ndarray,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    progress: bool = False,
) -> Links:
    """Every candidate pair, copies, same scene and same specimen, with its score over its cut.

    Scene candidates are sought outside the copy groups at ``threshold``; the specimen
    test scores the candidates of both other tests that are not copies already.
    ``progress`` draws a bar over the species (on a terminal only).
    """
    first, second, scores = candidate_scores(images, masks, species, progress=progress)
    cut = copy_cut(scores)
    copied = scores < threshold * cut
    log.info("copies: cut %.2e, %d of %d candidate pairs", threshold * cut, copied.sum(), len(scores))
    copies = _components(len(images), first, second, copied)
    backgrounds = _Backgrounds.of(images, masks, species)
    scene_first, scene_second, scene_ratio = _scene_ratios(images, masks, species, copies, backgrounds)
    log.info("same scene: %d of %d candidate pairs", (scene_ratio < threshold).sum(), len(scene_ratio))
    spec_first, spec_second, spec_ratio = _specimen_ratios(
        images,
        masks,
        copies,
        (np.concatenate([first, scene_first]), np.concatenate([second, scene_second])),
        backgrounds,
        threshold,
    )
    log.info("same specimen: %d of %d candidate pairs", (spec_ratio < threshold).sum(), len(spec_ratio))
    return Links(
        np.concatenate([first, scene_first, spec_first]),
        np.concatenate([second, scene_second, spec_second]),
        np.concatenate([scores / cut, scene_ratio, spec_ratio]).astype(np.float32),
        np.repeat(np.arange(3, dtype=np.int8), [len(scores), len(scene_ratio), len(spec_ratio)]),
    )


def candidate_scores(
    images: np.ndarray, masks: np.ndarray, species: np.ndarray, *, progress: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs within each species and their registration scores.

    Returns (first, second, score): index arrays with first < second, and the lowest mean
    squared difference over rotations, reflections and both frames (inf when no
    registration overlapped enough). One species at a time keeps memory bounded.
    """
    firsts, seconds, scores = [], [], []
    for name in progress_bar(np.unique(species), desc="group", unit="species", enabled=progress):
        idx = np.flatnonzero(species == name)
        if len(idx) >= 2:
            i, j, score = _species_scores(images[idx], masks[idx])
            firsts.append(idx[i])
            seconds.append(idx[j])
            scores.append(score)
    if not scores:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    return np.concatenate(firsts), np.concatenate(seconds), np.concatenate(scores)


def _species_scores(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs (i < j) among images of one species, and their scores."""
    channels, valid, weights = _prepare(images, masks)
    n, h, w = weights.shape
    centres, frames, has_fish, geometry = _fish_frames(weights)
    fish = _Spectra(*_polar(channels, valid, centres, frames, _FISH_RADII, _FISH_ANGLES))
    middle = np.tile([w / 2, h / 2], (n, 1))
    # The photo's frame twice: in pixels, where a free rotation is a rotation, and scaled
    # to a square, where a 90-degree rotation resized back to the frame is one.
    pixel_radii = _PHOTO_RADII * np.hypot(h, w) / 2
    pixel = _Spectra(
        *_polar(channels, valid, middle, np.tile(np.eye(2), (n, 1, 1)), pixel_radii, _PHOTO_ANGLES)
    )
    square_radii = _PHOTO_RADII * np.sqrt(2)
    square_frame = np.tile(np.diag([w / 2, h / 2]), (n, 1, 1))
    square = _Spectra(*_polar(channels, valid, middle, square_frame, square_radii, _PHOTO_ANGLES))

    # Rings inside the inscribed circle (ellipse) never meet the black corners of a
    # rotation, so their spectra describe the photo whatever the angle.
    pairs = [
        _nearest_pairs(pixel.descriptors(pixel_radii < min(h, w) / 2 - 1), _NEIGHBOURS),
        _nearest_pairs(square.descriptors(square_radii < 1 - 2 / min(h, w)), _NEIGHBOURS),
    ]
    if has_fish.sum() >= 2:
        ok = np.flatnonzero(has_fish)
        fi, fj = _nearest_pairs(fish.descriptors()[ok], _NEIGHBOURS)
        pairs.append((ok[fi], ok[fj]))
    # A few random partners per image: when photos have many copies, every nearest
    # neighbour may be a copy, and the cut needs distinct photos' scores too.
    rng = np.random.default_rng(n)
    pairs.append((np.repeat(np.arange(n), _RANDOM_PARTNERS), rng.integers(0, n, n * _RANDOM_PARTNERS)))
    i, j = _unique_pairs(np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs]), n)
    score = np.minimum(pixel.best_msd(i, j), square.best_msd(i, j))
    # The fish's frame forgets any affine difference (a thin and a plump fish both whiten
    # to a disk), so its matches must also agree on the invariant geometry.
    both = has_fish[i] & has_fish[j]
    both &= (np.abs(geometry[i] - geometry[j]) < _GEOMETRY_TOLERANCE).all(1)
    score[both] = np.minimum(score[both], fish.best_msd(i[both], j[both]))
    return i, j, score


def copy_cut(scores: np.ndarray) -> float:
    """The score below which a pair counts as copies, found from the scores themselves.

    Copies and distinct photos form two modes about an order of magnitude apart on a log
    scale. Otsu's split separates them and the cut sits between their means (on the log
    scale), nearer the copies: distinct photos of one species can look much alike.
    Without two clear modes (no copies at all, or too few pairs) the fallback cut is
    used.
    """
    x = np.sort(np.log10(np.clip(scores[np.isfinite(scores)], 1e-6, 1.0)))
    if len(x) < 10:
        return _FALLBACK_CUT
    # Otsu: the split maximising the between-class variance, over the sorted values.
    k = np.arange(1, len(x))
    below = np.cumsum(x)[:-1]
    mean_low, mean_high = below / k, (x.sum() - below) / (len(x) - k)
    split = int(np.argmax(k * (len(x) - k) * (mean_high - mean_low) ** 2)) + 1
    low, high = x[:split], x[split:]
    # The spread floor keeps a mode of identical scores (exact flips) from looking
    # infinitely far from the other.
    s_low, s_high = max(low.std(), 0.05), max(high.std(), 0.05)
    separation = (high.mean() - low.mean()) / (s_low + s_high)
    if separation < _MIN_SEPARATION:
        log.warning(
            "no clear gap between near-duplicates and distinct photos (separation %.2f < %.2f); "
            "using the fallback cut %.1e",
            separation,
            _MIN_SEPARATION,
            _FALLBACK_CUT,
        )
        return _FALLBACK_CUT
    cut = 10 ** (low.mean() + _CUT_POSITION * (high.mean() - low.mean()))
    return float(np.clip(cut, *_CUT_RANGE))


class _Backgrounds(NamedTuple):
    """Every photo's background detail, where it is valid, its thumbnail, and the background cut."""

    detail: np.ndarray
    valid: np.ndarray
    thumbs: np.ndarray
    areas: np.ndarray  # of the fish, in pixels: a zoom of the camera scales them
    cut: float
    null: tuple[np.ndarray, np.ndarray]  # pairs of photos of different species (``_null_pairs``)

    @classmethod
    def of(cls, images: np.ndarray, masks: np.ndarray, species: np.ndarray) -> _Backgrounds:
        detail, valid = _scene_arrays(images, masks)
        thumbs = _scene_thumbnails(detail, valid)
        areas = (np.asarray(masks) > 0).sum((1, 2))
        cut = _scene_cut(detail, valid, thumbs, species)
        return cls(detail, valid, thumbs, areas, cut, _null_pairs(thumbs, species))

    def scores(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        """Background scores of pairs (i, j): the better of as shot and zoomed as the fish say."""
        return np.minimum(
            _scene_distances(self.detail, self.valid, i, j),
            _zoomed_scene_distances(self.detail, self.valid, self.areas, i, j),
        )


def _scene_ratios(
    images: np.ndarray, masks: np.ndarray, species: np.ndarray, copies: np.ndarray, backgrounds: _Backgrounds
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate same-scene pairs within each species, as (first, second, ratio).

    ``copies`` labels the copy groups already found: a photo's candidates are sought
    outside its own. With b the background score over its cut and f the fish score over
    its cut (infinite when the fish differ in size), the ratio is max(b, b * f): the pair
    is a near-duplicate when it is under the threshold.
    """
    detail, valid, thumbs, _, background_cut, _ = backgrounds
    found = []
    for name in np.unique(species):
        idx = np.flatnonzero(species == name)
        if len(idx) >= 2:
            own = thumbs[idx]
            near = _nearest_outside(own, own, copies[idx][:, None] == copies[idx][None, :])
            i, j = _unique_pairs(*near, len(idx))
            background = _scene_distances(detail[idx], valid[idx], i, j, all_at_once=True)
            fish, random_fish = _fish_distances(images[idx], masks[idx], i, j)
            found.append((idx[i], idx[j], background, fish, random_fish))
    if not found:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros(0, np.float32)
    first, second, background, fish, random_fish = (np.concatenate(x) for x in zip(*found, strict=True))
    cut = fish_cut(random_fish)
    # A zoomed camera is tried where the fish are alike (the background alone never links).
    alike = np.flatnonzero(fish < _SCENE_ZOOM_FISH * cut)
    zoomed = _zoomed_scene_distances(detail, valid, backgrounds.areas, first[alike], second[alike])
    background[alike] = np.minimum(background[alike], zoomed)
    log.info("same scene: background cut %.3f, fish cut %.2e", background_cut, cut)
    # The background must be under its cut, and the fish under theirs divided by how far
    # the background is under its own: a background that matches twice as well allows
    # fish twice as different (exposure and turning over change a fish's look).
    return first, second, scene_ratio(background / background_cut, fish, cut).astype(np.float32)


def fish_cut(random_fish: np.ndarray) -> float:
    """The fish score a quarter of random pairs of one species reach (infinite scores left out)."""
    finite = random_fish[np.isfinite(random_fish)]
    return max(float(np.quantile(finite, _FISH_CUT_QUANTILE)), 1e-12) if len(finite) else 1e-12


def scene_ratio(background: np.ndarray, fish: np.ndarray, cut: float) -> np.ndarray:
    """max(b, b * f / cut) of pairs with background score ``background`` (over its cut) and ``fish``.

    Infinite where the fish differ in size; under the threshold: one scene.
    """
    return np.where(np.isfinite(fish), np.maximum(background, background * fish / cut), np.inf)


def specimen_ratio(specimen: np.ndarray, place: np.ndarray) -> np.ndarray:
    """max(s, s * b / _SPECIMEN_PLACE_SLACK): the fish's detail ``specimen`` and background ``place``, each over its cut."""
    return np.maximum(specimen, specimen * place / _SPECIMEN_PLACE_SLACK)


def _scene_cut(detail: np.ndarray, valid: np.ndarray, thumbs: np.ndarray, species: np.ndarray) -> float:
    """The background score below which two photos count as one scene, from the data.

    Photos of different species show different specimens, some of them shot in the same
    place: each of a seeded sample of photos is scored against its nearest photos of other
    species, picked as candidates are, and the cut is the score that one such pair in 500
    reaches, within [_SCENE_MIN_CUT, _SCENE_MAX_CUT] (the upper bound alone with one species).
    """
    i, j = _null_pairs(thumbs, species)
    if len(i) == 0:
        return _SCENE_MAX_CUT
    scores = _scene_distances(detail, valid, i, j)
    return min(max(float(np.quantile(scores, _SCENE_NULL_QUANTILE)), _SCENE_MIN_CUT), _SCENE_MAX_CUT)


def _null_pairs(thumbs: np.ndarray, species: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pairs known to show different specimens: a seeded sample of photos and their nearest of other species.

    Nearest by the background thumbnails, as scene candidates are picked, so that some
    of the pairs were shot in one place. Empty with fewer than two species.
    """
    n = len(species)
    if len(np.unique(species)) < 2:
        empty = np.zeros(0, np.int64)
        return empty, empty
    rng = np.random.default_rng(n)
    sample = np.sort(rng.choice(n, min(n, _SCENE_NULL_PHOTOS), replace=False))
    i, j = _nearest_outside(thumbs[sample], thumbs, species[sample][:, None] == species[None, :])
    return sample[i], j


def _specimen_ratios(
    images: np.ndarray,
    masks: np.ndarray,
    copies: np.ndarray,
    candidates: tuple[np.ndarray, np.ndarray],
    backgrounds: _Backgrounds,
    threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate same-specimen pairs as (first, second, ratio).

    ``candidates`` (pairs within species) are scored unless one copy group holds both or
    their fish differ in shape.
    With s the fish's detail score over its cut (``fishseg.dataset.specimen``; the null
    pairs of different species give the cut) and b the background score over its cut,
    the ratio is max(s, s * b / _SPECIMEN_PLACE_SLACK): the background need not match, but
    the further it is from matching the better the fish must. Fish of one species can
    look alike to the last detail the images keep; elsewhere on the table, only a closer
    match tells one specimen from its look-alikes.
    """
    first, second = _unique_pairs(*candidates, len(images))
    # Not copies already, and fish of one shape (compactness; a zoom leaves it, unlike the area).
    compactness = _compactness(masks)
    keep = copies[first] != copies[second]
    keep &= np.abs(compactness[first] - compactness[second]) < _SCENE_GEOMETRY_TOLERANCE
    first, second = first[keep], second[keep]
    grids, valid = specimen_grids(images, masks)
    cut = specimen_cut(specimen_distances(grids, valid, *backgrounds.null))
    ratio = specimen_distances(grids, valid, first, second) / cut
    log.info("same specimen: cut %.3f", cut)
    # Only pairs that could link need their backgrounds compared.
    close = np.flatnonzero(ratio < max(threshold, 1.0))
    place = backgrounds.scores(first[close], second[close]) / backgrounds.cut
    ratio[close] = specimen_ratio(ratio[close], place)
    return first, second, ratio.astype(np.float32)


def pair_quality(pred: Sequence[int], true: Sequence[int]) -> tuple[float, float]:
    """Pairwise precision and recall of a grouping against the truth.

    Over all pairs i<j: precision = |pred-same & true-same| / |pred-same|, recall =
    |pred-same & true-same| / |true-same|; each is 1.0 when its denominator is 0.
    """
    pred = np.asarray(pred)
    true = np.asarray(true)
    if pred.shape != true.shape:
        raise ValueError(f"pred and true differ in length: {pred.shape} vs {true.shape}")
    # Pairs counted from the contingency table: sum C(n,2) over cells, rows, columns.
    _, p = np.unique(pred, return_inverse=True)
    _, t = np.unique(true, return_inverse=True)
    joint = np.unique(p.astype(np.int64) * (t.max(initial=0) + 1) + t, return_counts=True)[1]
    both = _pairs(joint)
    pred_same = _pairs(np.bincount(p))
    true_same = _pairs(np.bincount(t))
    precision = both / pred_same if pred_same else 1.0
    recall = both / true_same if true_same else 1.0
    return float(precision), float(recall)


def straddling_pairs(groups: Sequence[int], splits: Sequence[str]) -> int:
    """Number of same-group pairs whose members are in different splits."""
    groups = np.asarray(groups)
    splits = np.asarray(splits)
    if groups.shape != splits.shape:
        raise ValueError(f"groups and splits differ in length: {groups.shape} vs {splits.shape}")
    if groups.size == 0:
        return 0
    _, g = np.unique(groups, return_inverse=True)
    _, s = np.unique(splits, return_inverse=True)
    same_group = _pairs(np.bincount(g))
    same_both = _pairs(np.unique(g.astype(np.int64) * (s.max() + 1) + s, return_counts=True)[1])
    return int(same_group - same_both)


def _pairs(counts: np.ndarray) -> int:
    counts = np.asarray(counts, np.int64)
    return int((counts * (counts - 1) // 2).sum())


def _prepare(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Channels (N,h,w,4), validity (N,h,w) and mask weights (N,h,w), at work size.

    The channels are RGB in [0,1] and the mask (at a lower weight: it tells apart two
    fish of the same colour as their surface), blurred: copies agree on structure, not
    on the fine texture that resampling changes. A pixel is valid when no black corner
    is within reach of the blur.
    """
    n, h, w = masks.shape
    scale = min(1.0, np.sqrt(_WORK_PIXELS / (h * w)))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))
    small = np.empty((n, size[1], size[0], 3), np.uint8)
    fish = np.empty((n, size[1], size[0]), np.uint8)
    clear = np.empty((n, size[1], size[0]), np.uint8)
    black_top = (_BLACK_LEVEL - 1,) * 3
    images = np.ascontiguousarray(images, dtype=np.uint8)
    masks = np.ascontiguousarray(masks, dtype=np.uint8)
    for i in range(n):
        image = images[i]
        mask = cv2.compare(masks[i], 0, cv2.CMP_GT)
        # Black corners are found at full size, before averaging smears them.
        bright = cv2.bitwise_not(cv2.inRange(image, (0, 0, 0), black_top))
        if size == (w, h):
            small[i], fish[i], clear[i] = image, mask, bright
        else:
            small[i] = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            fish[i] = cv2.resize(mask, size, interpolation=cv2.INTER_AREA)
            clear[i] = cv2.resize(bright, size, interpolation=cv2.INTER_AREA)
    images = small
    channels = np.empty((n, size[1], size[0], 4), np.float32)
    np.multiply(images, np.float32(1 / 255), out=channels[..., :3])
    weights = fish * np.float32(1 / 255)  # moments use the mask before the blur
    channels[..., 3] = weights * _MASK_WEIGHT
    sigma = _BLUR * size[0]
    for i in range(n):
        channels[i] = cv2.GaussianBlur(channels[i], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    # Valid: the whole block was clear, and so is everything the blur mixed in.
    reach = 2 * int(np.ceil(2 * sigma)) + 1
    kernel = np.ones((reach, reach), np.uint8)
    valid = np.stack([cv2.erode(x, kernel, borderType=cv2.BORDER_REPLICATE) for x in clear]) == 255
    return channels, valid.astype(np.float32), weights


def _scene_arrays(images: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background detail (N,2,h,w) and where it is valid (N,h,w uint8, 0 or 1), at scene work size.

    Two channels: log(blue/red), which exposure does not change, and log brightness,
    each band-passed and zero-mean over the valid part: what the fish (with a margin for
    its shadow), black corners and the date stamp leave. The band-pass averages only over
    valid pixels, so the bright fish does not bleed into its surroundings.
    """
    n, h, w = masks.shape
    scale = min(1.0, np.sqrt(_SCENE_PIXELS / (h * w)))
    size = (max(8, round(w * scale)), max(8, round(h * scale)))

    def margin(fraction: float) -> np.ndarray:
        reach = 2 * round(fraction * size[0]) + 1
        return np.ones((reach, reach), np.uint8)

    detail = np.empty((n, 2, size[1], size[0]), np.float32)
    valid = np.empty((n, size[1], size[0]), np.uint8)
    black_top = (_BLACK_LEVEL - 1,) * 3
    for k in range(n):
        image = np.ascontiguousarray(images[k], dtype=np.uint8)
        fish = cv2.compare(np.ascontiguousarray(masks[k]), 0, cv2.CMP_GT)
        black = cv2.inRange(image, (0, 0, 0), black_top)
        stamp = cv2.inRange(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), *_STAMP_HSV)
        left_out = (
            cv2.dilate(cv2.resize(fish, size, interpolation=cv2.INTER_AREA), margin(_SCENE_FISH_MARGIN))
            | cv2.dilate(cv2.resize(black, size, interpolation=cv2.INTER_AREA), margin(_SCENE_CORNER_MARGIN))
            | cv2.dilate(cv2.resize(stamp, size, interpolation=cv2.INTER_AREA), margin(_STAMP_MARGIN))
        )
        v = (left_out == 0).astype(np.float32)
        small = np.log(
            cv2.resize(image, size, interpolation=cv2.INTER_AREA).astype(np.float32) / 255 + _SCENE_EPS
        )
        for c, values in enumerate((small[..., 2] - small[..., 0], small.mean(-1))):
            band = _masked_blur(values, v, _SCENE_DETAIL * size[0])
            band -= _masked_blur(values, v, _SCENE_SHADING * size[0])
            band *= v
            band -= v * (band.sum() / max(v.sum(), 1.0))
            detail[k, c] = band
        valid[k] = v
    return detail, valid


def _scene_thumbnails(detail: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """A blurred thumbnail of each background's colour detail, unit length (N, 16*12)."""
    n, _, h, w = detail.shape
    size = (min(_SCENE_THUMB[0], w), min(_SCENE_THUMB[1], h))
    sigma = _SCENE_THUMB_BLUR * w
    thumbs = np.stack(
        [
            cv2.resize(
                _masked_blur(d[0], v.astype(np.float32), sigma), size, interpolation=cv2.INTER_AREA
            ).ravel()
            for d, v in zip(detail, valid, strict=True)
        ]
    )
    thumbs -= thumbs.mean(1, keepdims=True)
    thumbs /= np.linalg.norm(thumbs, axis=1, keepdims=True) + 1e-9
    return thumbs


def _masked_blur(values: np.ndarray, weights: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``values`` averaging only where ``weights`` is 1 (normalised convolution)."""
    num = cv2.GaussianBlur(values * weights, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(weights, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    return num / np.maximum(den, 1e-3)


def _scene_distances(
    detail: np.ndarray, valid: np.ndarray, i: np.ndarray, j: np.ndarray, *, all_at_once: bool = False
) -> np.ndarray:
    """1 minus the best correlation of the backgrounds of pairs (i, j) at one shift.

    At each shift up to _SCENE_SHIFT of each side whose overlap holds at least
    _SCENE_MIN_OVERLAP of the smaller background, both channels' normalised
    cross-correlations over the overlap are taken and the smaller one counts: colour and
    brightness must line up together. The overlap and the sums of a*a, b*b and a*b over it
    are cross-correlations, one FFT product each. Spectra are computed once for all
    images (``all_at_once``: one species' candidates, where each image is in many pairs)
    or for the images of each chunk of pairs (a sample of pairs: memory stays bounded).
    """
    h, w = detail.shape[-2:]
    dy, dx = int(_SCENE_SHIFT * h), int(_SCENE_SHIFT * w)
    # Padding by the largest shift keeps the circular correlation from wrapping.
    shape = (scipy.fft.next_fast_len(h + dy), scipy.fft.next_fast_len(w + dx))
    rows = np.r_[0 : dy + 1, shape[0] - dy : shape[0]]
    cols = np.r_[0 : dx + 1, shape[1] - dx : shape[1]]
    counts = valid.sum((1, 2))

    def spectra(images: np.ndarray) -> np.ndarray:
        # valid, the detail of both channels and its square: 5 spectra per image.
        parts = np.concatenate(
            [valid[images][:, None].astype(np.float32), detail[images], np.square(detail[images])], 1
        )
        return scipy.fft.rfft2(parts, s=shape, axes=(-2, -1))

    # Up to _SCENE_SPECTRA_AT_ONCE images (about 100 KB of spectra each) at once.
    every = spectra(np.arange(len(detail))) if all_at_once and len(detail) <= _SCENE_SPECTRA_AT_ONCE else None
    # Overlap; then per channel the sums of a^2 and b^2 over it, and of ab.
    pick = np.array([[0, 0], [3, 0], [0, 3], [1, 1], [4, 0], [0, 4], [2, 2]])
    out = np.empty(len(i), np.float32)
    chunk = 128
    for start in range(0, len(i), chunk):
        a, b = i[start : start + chunk], j[start : start + chunk]
        if every is None:
            used, where = np.unique(np.concatenate([a, b]), return_inverse=True)
            spec = spectra(used)
            left, right = spec[where[: len(a)]], spec[where[len(a) :]]
        else:
            left, right = every[a], every[b]
        np.conjugate(left, out=left)
        products = left[:, pick[:, 0]] * right[:, pick[:, 1]]
        # Inverse FFT along the rows first, keeping only the shifts wanted.
        sums = scipy.fft.irfft(scipy.fft.ifft(products, axis=-2)[..., rows, :], n=shape[1], axis=-1)[
            ..., cols
        ]
        corr = np.minimum(
            sums[:, 3] / np.sqrt(np.maximum(sums[:, 1] * sums[:, 2], 1e-12)),
            sums[:, 6] / np.sqrt(np.maximum(sums[:, 4] * sums[:, 5], 1e-12)),
        )
        corr[sums[:, 0] < _SCENE_MIN_OVERLAP * np.minimum(counts[a], counts[b])[:, None, None] - 0.5] = -1.0
        out[start : start + chunk] = 1 - corr.reshape(len(a), -1).max(1)
    return out


def _zoomed_scene_distances(
    detail: np.ndarray, valid: np.ndarray, areas: np.ndarray, i: np.ndarray, j: np.ndarray
) -> np.ndarray:
    """``_scene_distances`` of pairs (i, j) with the camera zoomed as the fish's size says (else inf).

    A zoom scales the fish and its surroundings alike: where the fish's areas differ by a
    zoom between _SCENE_MIN_ZOOM and _SCENE_MAX_ZOOM, the background of the photo that
    shows the fish smaller is magnified by that zoom about the frame's centre (the shifts
    searched cover a zoom about any point near it) and compared. ``areas`` are the fish's
    areas in pixels.
    """
    out = np.full(len(i), np.inf, np.float32)
    zoom = np.sqrt(np.maximum(areas[j], 1) / np.maximum(areas[i], 1))
    factor = np.maximum(zoom, 1 / zoom)
    todo = np.flatnonzero((factor > _SCENE_MIN_ZOOM) & (factor < _SCENE_MAX_ZOOM))
    h, w = valid.shape[1:]
    chunk = 512
    for start in range(0, len(todo), chunk):
        pick = todo[start : start + chunk]
        smaller = np.where(zoom[pick] >= 1, i[pick], j[pick])
        larger = np.where(zoom[pick] >= 1, j[pick], i[pick])
        zoomed_detail, zoomed_valid = _magnified(detail[smaller], valid[smaller], factor[pick])
        both_detail = np.concatenate([zoomed_detail, detail[larger]])
        both_valid = np.concatenate([zoomed_valid, valid[larger]])
        pairs = np.arange(len(pick))
        out[pick] = _scene_distances(both_detail, both_valid, pairs, pairs + len(pick))
    return out


def _magnified(detail: np.ndarray, valid: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Background detail (K,2,h,w) and validity (K,h,w) magnified about the centre, detail re-centred."""
    h, w = valid.shape[1:]
    out_detail = np.empty_like(detail)
    out_valid = np.empty_like(valid)
    for k, factor in enumerate(factors):
        m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), 0.0, float(factor))
        ok = cv2.warpAffine(valid[k].astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR) > 0.999
        for c in range(detail.shape[1]):
            band = cv2.warpAffine(detail[k, c], m, (w, h), flags=cv2.INTER_LINEAR) * ok
            out_detail[k, c] = band - ok * (band.sum() / max(ok.sum(), 1))
        out_valid[k] = ok
    return out_detail, out_valid


def _fish_distances(
    images: np.ndarray, masks: np.ndarray, i: np.ndarray, j: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """How alike the fish of pairs (i, j) of one species are, and of random pairs of it.

    The fish are compared inside the mask in their own frame, over rotations and
    reflections (turned over counts), by mean squared difference; pairs whose fish differ
    in size or compactness score infinite. The random pairs' scores give the fish cut.
    """
    n = len(images)
    rng = np.random.default_rng(n)
    ri, rj = _unique_pairs(np.repeat(np.arange(n), _SCENE_RANDOM), rng.integers(0, n, n * _SCENE_RANDOM), n)
    channels, ok, weights = _prepare(images, masks)
    centres, frames, has_fish, geometry = _fish_frames(weights)
    fish = _Spectra(*_polar(channels, ok, centres, frames, _FISH_INSIDE_RADII, _FISH_ANGLES))
    fi, fj = np.concatenate([i, ri]), np.concatenate([j, rj])
    scores = np.full(len(fi), np.inf, np.float32)
    both = has_fish[fi] & has_fish[fj]
    scores[both] = fish.best_msd(fi[both], fj[both])
    # The whitened frame forgets size; one specimen seen from one height keeps it.
    resized = (np.abs(geometry[i] - geometry[j]) >= _SCENE_GEOMETRY_TOLERANCE).any(1)
    scores[: len(i)][resized] = np.inf
    return scores[: len(i)], scores[len(i) :]


def _compactness(masks: np.ndarray) -> np.ndarray:
    """log(det(C) / area^2) of each mask, C its covariance: its shape, whatever its size (as ``_fish_frames``)."""
    out = np.zeros(len(masks))
    for k, mask in enumerate(masks):
        m = cv2.moments(np.ascontiguousarray(mask, dtype=np.uint8), binaryImage=True)
        area = max(m["m00"], 1.0)
        cov = np.array([[m["mu20"], m["mu11"]], [m["mu11"], m["mu02"]]]) / area + np.eye(2) / 12
        out[k] = np.log(np.linalg.det(cov)) - 2 * np.log(area)
    return out


def _nearest_outside(
    query: np.ndarray, pool: np.ndarray, excluded: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's _SCENE_NEIGHBOURS nearest pool rows (unit vectors), skipping ``excluded``.

    Returns (query index, pool index) pairs. ``excluded`` (queries x pool) marks pairs
    not to make: a photo's own copies, which are joined already and would take every
    place, or photos of its own species.
    """
    dist = 1 - query @ pool.T
    dist[excluded] = np.inf
    k = min(_SCENE_NEIGHBOURS, pool.shape[0] - 1)
    nearest = np.argpartition(dist, k - 1, axis=1)[:, :k].ravel()
    rows = np.repeat(np.arange(len(query)), k)
    keep = np.isfinite(dist[rows, nearest])
    return rows[keep], nearest[keep]


def _fish_frames(masks: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Centroid (N,2), whitening frame C^(1/2) (N,2,2), usability (N,) and geometry (N,2).

    The geometry, log area and log det(C)/area^2, is the same for every copy: the
    transforms all have determinant +-1.
    """
    n, h, w = masks.shape
    flat = masks.reshape(n, -1).astype(np.float64)
    area = flat.sum(1)
    ok = area >= _MIN_MASK_PIXELS
    safe = np.where(ok, area, 1.0)
    ys, xs = np.divmod(np.arange(h * w), w)
    xs = xs + 0.5
    ys = ys + 0.5
    mx, my = flat @ xs / safe, flat @ ys / safe
    # +1/12: the variance of a uniform pixel, so a one-pixel-wide mask is not singular.
    cxx = flat @ (xs * xs) / safe - mx**2 + 1 / 12
    cyy = flat @ (ys * ys) / safe - my**2 + 1 / 12
    cxy = flat @ (xs * ys) / safe - mx * my
    cov = np.stack([np.stack([cxx, cxy], -1), np.stack([cxy, cyy], -1)], -2)
    cov[~ok] = np.eye(2)
    vals, vecs = np.linalg.eigh(cov)
    root = vecs @ (np.sqrt(np.maximum(vals, 1e-6))[..., None] * np.swapaxes(vecs, -1, -2))
    geometry = np.stack([np.log(safe), np.log(np.linalg.det(cov)) - 2 * np.log(safe)], 1)
    return np.stack([mx, my], 1), root, ok, geometry


def _polar(
    channels: np.ndarray,
    valid: np.ndarray,
    centres: np.ndarray,
    frames: np.ndarray,
    radii: np.ndarray,
    angles: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Sample each image at centre + frame @ (r cos t, r sin t).

    Returns values (N,R,T,C) and validity (N,R,T): a sample is valid when it lies in the
    frame and none of the pixels it mixes is a black corner.
    """
    n, h, w, c = channels.shape
    theta = 2 * np.pi * np.arange(angles) / angles
    unit = np.stack([np.cos(theta), np.sin(theta)])
    offsets = frames @ unit  # (N, 2, T)
    # -0.5: cv2 addresses pixel centres by index, the frames by pixel-centre position.
    xs = centres[:, 0, None, None] - 0.5 + radii[None, :, None] * offsets[:, None, 0, :]
    ys = centres[:, 1, None, None] - 0.5 + radii[None, :, None] * offsets[:, None, 1, :]
    inside = (xs >= 0) & (xs <= w - 1) & (ys >= 0) & (ys <= h - 1)
    values = np.empty((n, len(radii), angles, c), np.float32)
    ok = np.empty((n, len(radii), angles), np.float32)
    # Images are stacked vertically and sampled with one remap per chunk; cv2 keeps map
    # coordinates in 16 bits, hence the chunks.
    per_chunk = max(1, 30000 // h)
    for start in range(0, n, per_chunk):
        stop = min(n, start + per_chunk)
        rows = (np.arange(stop - start) * h)[:, None, None]
        map_x = xs[start:stop].reshape(-1, angles).astype(np.float32)
        map_y = (ys[start:stop] + rows).reshape(-1, angles).astype(np.float32)
        stacked = channels[start:stop].reshape(-1, w, c)
        out = cv2.remap(stacked, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)
        values[start:stop] = out.reshape(stop - start, len(radii), angles, c)
        fine = cv2.remap(valid[start:stop].reshape(-1, w), map_x, map_y, cv2.INTER_LINEAR)
        ok[start:stop] = fine.reshape(stop - start, len(radii), angles) > 0.999
    ok *= inside
    return values, ok


class _Spectra:
    """Angular Fourier spectra of polar samples, for registration by FFT.

    For a shift s, sum v_i v_j' |a_i - a_j'|^2 = (v_i|a_i|^2 * v_j') + (v_i * v_j'|a_j'|^2)
    - 2 sum_c (v_i a_ic * v_j' a_jc'), each term a circular cross-correlation along the
    angle, so a product of spectra summed over rings; the overlap sum v_i v_j' likewise.
    A reflection of one image conjugates its spectra.
    """

    def __init__(self, values: np.ndarray, ok: np.ndarray) -> None:
        n, rings, self.angles, channels = values.shape
        parts = np.empty((n, 2 + channels, rings, self.angles), np.float32)
        parts[:, 0] = ok
        parts[:, 1] = 0
        for c in range(channels):
            np.multiply(ok, values[..., c], out=parts[:, 2 + c])
            parts[:, 1] += values[..., c] * parts[:, 2 + c]  # v |a|^2, as v a_c a_c summed
        spec = scipy.fft.rfft(parts, axis=-1)  # (N, 2 + C, R, F), complex64
        self.magnitude = np.abs(spec[:, [0, *range(2, 2 + channels)], :, :_DESCRIPTOR_FREQUENCIES])
        # The blur leaves little above these frequencies; dropping them halves the work
        # and only smooths the comparison along the angle.
        spec = np.ascontiguousarray(spec[..., :_REGISTRATION_FREQUENCIES].transpose(0, 3, 1, 2))
        # (N, F, 2 + C, R). Left factors (conjugated in the products) and right factors,
        # paired column by column: the first R give the overlap, the rest the squared
        # difference: v|a|^2 * v' + v * v'|a'|^2 - 2 sum_c v a_c * v' a_c'.
        left = np.concatenate([spec[:, :, :1], spec], 2).reshape(n, spec.shape[1], -1)
        right = np.concatenate([spec[:, :, :1], spec[:, :, 1:2], spec[:, :, :1], -2 * spec[:, :, 2:]], 2)
        right = right.reshape(n, spec.shape[1], -1)
        self.rings = rings
        self.left_re, self.left_im = np.ascontiguousarray(left.real), np.ascontiguousarray(left.imag)
        self.right_re, self.right_im = np.ascontiguousarray(right.real), np.ascontiguousarray(right.imag)
        self.count = ok.sum((1, 2))

    def descriptors(self, rings: np.ndarray | None = None) -> np.ndarray:
        """Rotation- and reflection-invariant magnitudes (N, D), standardised."""
        mag = self.magnitude if rings is None else self.magnitude[:, :, rings]
        feats = mag.reshape(len(mag), -1)
        return (feats - feats.mean(0)) / (feats.std(0) + 1e-6)

    def best_msd(self, i: np.ndarray, j: np.ndarray, chunk: int = 2048) -> np.ndarray:
        """Lowest mean squared difference of pairs (i, j) over rotations and reflections."""
        out = np.full(len(i), np.inf, np.float32)
        r = self.rings
        for start in range(0, len(i), chunk):
            a, b = i[start : start + chunk], j[start : start + chunk]
            lr, li, rr, ri = self.left_re[a], self.left_im[a], self.right_re[b], self.right_im[b]
            least = np.maximum(np.minimum(self.count[a], self.count[b]), 1)[:, None]
            sums = []
            for part in (slice(0, r), slice(r, None)):  # overlap, squared difference
                # Real arithmetic: conj(l) r = (lr rr + li ri) + i (lr ri - li rr).
                re_re = np.einsum("pfx,pfx->pf", lr[..., part], rr[..., part])
                im_im = np.einsum("pfx,pfx->pf", li[..., part], ri[..., part])
                re_im = np.einsum("pfx,pfx->pf", lr[..., part], ri[..., part])
                im_re = np.einsum("pfx,pfx->pf", li[..., part], rr[..., part])
                # As is, and with the second image reflected (its spectra conjugated).
                sums.append(((re_re + im_im) + 1j * (re_im - im_re), (re_re - im_im) - 1j * (re_im + im_re)))
            best = np.full(len(a), np.inf, np.float32)
            for overlap_f, sq_f in zip(*sums, strict=True):
                overlap = scipy.fft.irfft(overlap_f, n=self.angles, axis=-1)
                sq = scipy.fft.irfft(sq_f, n=self.angles, axis=-1)
                enough = overlap >= _MIN_OVERLAP * least
                msd = np.where(enough, np.maximum(sq, 0) / np.maximum(overlap, 1e-6), np.inf)
                best = np.minimum(best, msd.min(1))
            out[start : start + chunk] = best
        return out


def _nearest_pairs(features: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Each row's k nearest other rows (squared L2): index arrays, one pair per neighbour."""
    n = len(features)
    k = min(k, n - 1)
    sq = (features * features).sum(1)
    dist = sq[:, None] + sq[None, :] - 2 * features @ features.T
    np.fill_diagonal(dist, np.inf)
    nearest = np.argpartition(dist, k - 1, axis=1)[:, :k]
    return np.repeat(np.arange(n), k), nearest.ravel()


def _unique_pairs(i: np.ndarray, j: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Deduplicated unordered pairs, as (first, second) with first < second."""
    key = np.unique(np.minimum(i, j).astype(np.int64) * n + np.maximum(i, j))
    key = key[key // n != key % n]
    return key // n, key % n


def _components(n: int, first: np.ndarray, second: np.ndarray, linked: np.ndarray) -> np.ndarray:
    """Connected components (0..K-1) of the graph of linked pairs over n nodes."""
    graph = coo_matrix((np.ones(int(linked.sum())), (first[linked], second[linked])), shape=(n, n))
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _break_giants(
    labels: np.ndarray,
    species: np.ndarray,
    first: np.ndarray,
    second: np.ndarray,
    scores: np.ndarray,
    cut: float,
    max_fraction: float,
) -> np.ndarray:
    """Tighten the cut inside any group that holds too much of its species."""
    labels = labels.copy()
    next_label = labels.max() + 1
    for name in np.unique(species):
        size = int((species == name).sum())
        cap = max(1, int(max_fraction * size))
        if size < _GUARD_MIN_IMAGES:
            continue
        sizes = np.bincount(labels[species == name])
        for label in np.flatnonzero(sizes > cap):
            members = labels == label
            inside = members[first] & members[second]
            tight = cut
            # Single linkage can chain distinct photos through a few borderline pairs;
            # tightening cuts those first.
            for _ in range(30):
                tight *= 0.8
                sub = _components(len(labels), first[inside], second[inside], scores[inside] < tight)[members]
                if np.bincount(sub).max() <= cap:
                    break
            log.warning(
                "species %r: one near-duplicate group held %d of %d images; split at cut %.1e "
                "(largest part now %d): near-duplicates may be hard to tell apart here",
                name,
                int(members.sum()),
                size,
                tight,
                int(np.bincount(sub).max()),
            )
            _, sub = np.unique(sub, return_inverse=True)
            labels[members] = next_label + sub
            next_label += sub.max() + 1
    return labels
