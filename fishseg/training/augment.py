"""Training augmentation (albumentations), built from ``params.augment``.

The geometric part mirrors how the archive was made (flips, 90-degree rotations resized
back to the frame, free rotations with black corners); the photometric part covers
lighting. Normalisation is not here: it runs on the device, on whole batches.
"""

from __future__ import annotations

import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402

from fishseg.params import AugmentParams  # noqa: E402


def build_augmentation(params: AugmentParams, size: tuple[int, int]) -> A.Compose:
    """The train-time pipeline for (image, mask) pairs of ``size`` = (height, width)."""
    height, width = size
    return A.Compose(
        [
            A.HorizontalFlip(p=params.hflip),
            A.VerticalFlip(p=params.vflip),
            A.RandomRotate90(p=params.rotate90),
            A.Rotate(
                limit=params.rotate_limit,
                border_mode=cv2.BORDER_CONSTANT,
                fill=0,
                fill_mask=0,
                p=params.rotate_p if params.rotate_limit > 0 else 0.0,
            ),
            # A 90-degree turn swaps height and width; the archive resized back to the frame.
            # The mask is resized like the image (linear, centre-aligned; {0,1} stays {0,1}):
            # nearest would shift it against the image by a fraction of a pixel.
            A.Resize(height, width, interpolation=cv2.INTER_LINEAR, mask_interpolation=cv2.INTER_LINEAR),
            A.RandomBrightnessContrast(
                brightness_limit=params.brightness_contrast,
                contrast_limit=params.brightness_contrast,
                p=params.brightness_contrast_p,
            ),
            A.HueSaturationValue(
                hue_shift_limit=8, sat_shift_limit=20, val_shift_limit=10, p=params.hue_saturation_p
            ),
        ],
        seed=0,
    )
