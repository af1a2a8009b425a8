"""Same specimen: the fish's detail on its own axis grid, on real photos from datasets/realfish.

A camera move is made with cv2.warpAffine (shift, zoom, a small turn) on the photo at
twice the pipeline's size, then shrunk as the split stage does; copies are flips and
half-turns. Different specimens are photos of one species that share no near-duplicate.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from fishseg.dataset import specimen as S
from fishseg.dataset.index import Pair, decode_pairs

REALFISH = Path(__file__).resolve().parents[1] / "datasets" / "realfish"
SIZE = (96, 128)


def _photos(*names: str, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    pairs = [
        Pair(name.split("/")[0], REALFISH / "images" / f"{name}.jpg", REALFISH / "masks" / f"{name}.png")
        for name in names
    ]
    problems: list = []
    decoded = list(decode_pairs(pairs, size, problems))
    assert not problems
    return np.stack([d.image for d in decoded]), np.stack([d.mask for d in decoded])


def _camera_moved(image: np.ndarray, mask: np.ndarray, zoom: float, turn: float, shift: tuple[int, int]):
    """The photo as a camera moved by ``shift`` pixels, zoomed by ``zoom`` and turned by ``turn`` degrees."""
    h, w = mask.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), turn, zoom)
    m[:, 2] += shift
    moved = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    moved_mask = cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST)
    small = (SIZE[1], SIZE[0])
    return cv2.resize(moved, small, interpolation=cv2.INTER_AREA), cv2.resize(
        moved_mask, small, interpolation=cv2.INTER_NEAREST
    )


def test_copies_and_camera_moves_match_and_other_specimens_do_not():
    big, big_masks = _photos("Trout/00014", size=(2 * SIZE[0], 2 * SIZE[1]))
    small = (SIZE[1], SIZE[0])
    original = cv2.resize(big[0], small, interpolation=cv2.INTER_AREA)
    original_mask = cv2.resize(big_masks[0], small, interpolation=cv2.INTER_NEAREST)
    copies = [cv2.flip(original, 1), cv2.flip(original, -1), cv2.flip(original, 0)]
    copy_masks = [cv2.flip(original_mask, 1), cv2.flip(original_mask, -1), cv2.flip(original_mask, 0)]
    moved, moved_mask = _camera_moved(big[0], big_masks[0], zoom=1.12, turn=4.0, shift=(-20, 10))
    # Other specimens of the species: no near-duplicate of Trout/00014, by eye or by point matches.
    others, other_masks = _photos("Trout/00001", "Trout/00005", "Trout/00009")
    images = np.stack([original, *copies, moved, *others])
    masks = np.stack([original_mask, *copy_masks, moved_mask, *other_masks])
    grids, valid = S.specimen_grids(images, masks)
    assert grids.shape == (8, *S._GRID) and valid.dtype == np.float32
    scores = S.specimen_distances(grids, valid, np.zeros(7, np.int64), np.arange(1, 8))
    np.testing.assert_allclose(scores[:3], 0, atol=1e-3)  # flipped, half-turned, mirrored copies
    assert scores[3] < 0.06, scores  # the camera moved, zoomed and turned (cut on real photos: 0.12)
    assert (scores[4:] > 0.2).all(), scores  # other specimens of the species


def test_shifts_absorb_a_wobbling_centroid():
    images, masks = _photos("Trout/00014")
    shifted_mask = masks[0].copy()
    shifted_mask[:, :60] = 0  # the tail cut off: the centroid and spread move
    grids, valid = S.specimen_grids(np.concatenate([images, images]), np.stack([masks[0], shifted_mask]))
    pair = np.array([0]), np.array([1])
    assert S.specimen_distances(grids, valid, *pair)[0] < S._REFINE_BELOW
    unshifted = S._aligned_scores(grids, valid, *pair, np.array([0]), [(0, 0)])[0]
    assert S.specimen_distances(grids, valid, *pair)[0] <= unshifted


def test_no_fish_scores_infinite_and_the_cut_is_bounded():
    images, masks = _photos("Trout/00014", "Trout/00015")
    empty = masks.copy()
    empty[1] = 0
    grids, valid = S.specimen_grids(images, empty)
    assert not valid[1].any() and not grids[1].any()
    assert np.isinf(S.specimen_distances(grids, valid, np.array([0]), np.array([1]))[0])
    assert S.specimen_cut(np.array([np.inf])) == S._MAX_CUT  # no null: the fixed level
    assert S.specimen_cut(np.full(100, 0.01)) == S._MIN_CUT  # other species agree closely: strictest
    assert S.specimen_cut(np.full(100, 0.25)) == np.float32(S._NULL_SHARE * 0.25)
    assert S.specimen_cut(np.full(100, 0.9)) == S._MAX_CUT


def test_larger_inputs_are_shrunk_to_the_work_size_first():
    small, small_masks = _photos("Trout/00014", "Trout/00015")
    large, large_masks = _photos("Trout/00014", "Trout/00015", size=(192, 256))
    pair = np.array([0]), np.array([1])
    at_small = S.specimen_distances(*S.specimen_grids(small, small_masks), *pair)[0]
    at_large = S.specimen_distances(*S.specimen_grids(large, large_masks), *pair)[0]
    assert abs(at_small - at_large) < 0.03, (at_small, at_large)
