"""Near-duplicate grouping, measured against the synthetic generator's true groups."""

import cv2
import numpy as np
import pytest

from fishseg.grouping import group_ids, pair_quality, straddling_pairs
from fishseg.layout import image_dir, mask_dir
from fishseg.synthetic import generate


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    root = tmp_path_factory.mktemp("grouping")
    records = generate(
        root, photos_per_species=5, copies_per_photo=4, width=295, height=222, seed=3, progress=False
    )
    images, masks = [], []
    for r in records:
        img = cv2.cvtColor(cv2.imread(str(image_dir(root, r.species) / r.name)), cv2.COLOR_BGR2RGB)
        mask = (cv2.imread(str(mask_dir(root, r.species) / r.name), cv2.IMREAD_GRAYSCALE) > 127).astype(
            np.uint8
        )
        images.append(cv2.resize(img, (128, 96), interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize(mask, (128, 96), interpolation=cv2.INTER_NEAREST))
    truth = [f"{r.species}/{r.photo}" for r in records]
    return np.stack(images), np.stack(masks), [r.species for r in records], truth


def test_groups_copies_of_one_photo_together(synthetic):
    images, masks, species, truth = synthetic
    groups = group_ids(images, masks, species)
    precision, recall = pair_quality(groups, np.unique(truth, return_inverse=True)[1])
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)
    for g in np.unique(groups):
        assert len({species[i] for i in np.flatnonzero(groups == g)}) == 1
    assert groups.min() == 0 and len(np.unique(groups)) == groups.max() + 1


def test_invariant_to_each_transform_alone(synthetic):
    images, masks, species, _ = synthetic
    img, mask = images[0], masks[0]
    h, w = mask.shape
    rot = cv2.getRotationMatrix2D((w / 2, h / 2), 33, 1.0)
    variants = [
        (img, mask),
        (img[:, ::-1], mask[:, ::-1]),
        (img[::-1], mask[::-1]),
        (
            cv2.resize(np.rot90(img), (w, h), interpolation=cv2.INTER_AREA),
            cv2.resize(np.rot90(mask), (w, h), interpolation=cv2.INTER_NEAREST),
        ),
        (cv2.warpAffine(img, rot, (w, h)), cv2.warpAffine(mask, rot, (w, h), flags=cv2.INTER_NEAREST)),
    ]
    batch_images = np.concatenate([np.stack([np.ascontiguousarray(v[0]) for v in variants]), images])
    batch_masks = np.concatenate([np.stack([np.ascontiguousarray(v[1]) for v in variants]), masks])
    groups = group_ids(batch_images, batch_masks, [species[0]] * len(variants) + species)
    assert len(set(groups[: len(variants)])) == 1


def test_pair_quality_by_hand():
    assert pair_quality([0, 0, 1, 1], [0, 0, 1, 1]) == (1.0, 1.0)
    assert pair_quality([0, 0, 0, 0], [0, 0, 1, 1]) == (2 / 6, 1.0)
    assert pair_quality([0, 1, 2, 3], [0, 0, 1, 1]) == (1.0, 0.0)


def test_straddling_pairs_by_hand():
    assert straddling_pairs([0, 0, 0, 1], ["train", "train", "test", "val"]) == 2
    assert straddling_pairs([0, 0, 1, 1], ["train", "train", "test", "test"]) == 0
    assert straddling_pairs([0, 0, 0], ["train", "val", "test"]) == 3
