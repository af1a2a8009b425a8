"""Masks stay on their image's pixel grid through the split stage's resize and augmentation.

A half-pixel shift between image and mask at the training size is learnt by the model
and survives the resize back to full resolution, so it costs IoU on every image.
"""

import random

import cv2
import numpy as np

from fishseg.dataset.index import read_mask, resize_mask
from fishseg.params import AugmentParams
from fishseg.training.augment import build_augmentation

from .helpers import REPO

REAL_MASKS = sorted((REPO / "datasets" / "realfish" / "masks").glob("*/*.png"))


def _centroid(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return np.array([ys.mean(), xs.mean()])


def _round_trip_iou(mask: np.ndarray, small: np.ndarray) -> float:
    """``small`` resized back up as evaluate/predict do; IoU with the original ``mask``."""
    back = cv2.resize(small.astype(np.float32), mask.shape[::-1], interpolation=cv2.INTER_LINEAR) >= 0.5
    truth = mask.astype(bool)
    return float((back & truth).sum() / (back | truth).sum())


def test_resized_mask_keeps_its_centre_and_stays_binary():
    mask = np.zeros((445, 590), np.uint8)
    cv2.ellipse(mask, (300, 220), (180, 60), 15, 0, 360, 1, -1)
    small = resize_mask(mask, (96, 128))
    assert small.shape == (96, 128)
    assert set(np.unique(small)) == {0, 1}
    # Pixel centres: small (i + 0.5) * scale = full (y + 0.5).
    scale = np.array([445 / 96, 590 / 128])
    moved = (_centroid(small) + 0.5) * scale - 0.5 - _centroid(mask)
    # INTER_NEAREST moves it by about half a small pixel (~2.3 full-res pixels) up and left.
    assert np.abs(moved).max() < 0.5


def test_real_masks_survive_the_round_trip_better_than_nearest():
    size = (192, 256)
    ours, nearest = [], []
    for path in REAL_MASKS[::25]:
        mask, _ = read_mask(path)
        ours.append(_round_trip_iou(mask, resize_mask(mask, size)))
        nearest.append(_round_trip_iou(mask, cv2.resize(mask, size[::-1], interpolation=cv2.INTER_NEAREST)))
    # What a perfect model could score at full resolution: about 0.988 against 0.972.
    assert all(a > b for a, b in zip(ours, nearest, strict=True))
    assert np.mean(ours) > 0.985 > 0.975 > np.mean(nearest)


def test_augmented_mask_follows_its_image_through_90_degree_turns():
    mask, _ = read_mask(REAL_MASKS[0])
    size = (96, 128)
    small = resize_mask(mask, size)
    # The image carries the mask in its pixels: both must be transformed alike.
    image = np.repeat(small[..., None] * 255, 3, axis=2).astype(np.uint8)
    only_turns = AugmentParams(
        hflip=0.5, vflip=0.5, rotate90=1.0, rotate_p=0.0, brightness_contrast_p=0.0, hue_saturation_p=0.0
    )
    transform = build_augmentation(only_turns, size)
    turned = 0
    for seed in range(8):
        transform.set_random_state(np.random.default_rng(seed), random.Random(seed))
        out = transform(image=image, mask=small)
        assert set(np.unique(out["mask"])) <= {0, 1}
        np.testing.assert_array_equal(out["mask"], out["image"][..., 0] >= 128)
        turned += not np.array_equal(out["mask"], small)
    assert turned > 0
