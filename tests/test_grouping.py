"""Near-duplicate grouping: copies made by flips, 90-degree and free rotations of a photo.

Most tests build their own "photos" (fish-like blobs with stripes, a darker back, glare
and noise on a blue surface), each with copies made the way the archive made them:
cv2 flips, np.rot90 then a resize back to the frame, and cv2.warpAffine rotations about
the centre that leave black corners. One test runs on the synthetic generator.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np
import pytest

from fishseg.dataset.grouping import group_ids, pair_quality, straddling_pairs

FRAME = (150, 200)  # (h, w), the archive's 445x590 aspect
SIZE = (96, 128)  # (h, w) the pipeline prepares


def _photo(rng: np.random.Generator, base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A striped, shaded fish with a tail on a noisy blue surface with one glare spot."""
    h, w = FRAME
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    image = np.empty((h, w, 3), np.float32)
    image[:] = (40, 90, 170)
    gx, gy = rng.uniform(0, w), rng.uniform(0, h)
    image += (80 * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * (0.15 * w) ** 2)))[..., None]
    image += rng.normal(0, 12, (h, w, 3))
    mask = np.zeros((h, w), np.uint8)
    cx, cy = rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * h
    a = rng.uniform(0.15, 0.28) * w
    b = a * rng.uniform(0.2, 0.5)
    angle = rng.uniform(-30, 30)
    cv2.ellipse(mask, (round(cx), round(cy)), (round(a), round(b)), angle, 0, 360, 1, -1)
    d = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
    normal = np.array([-d[1], d[0]])
    tip = np.array([cx, cy]) - d * a * 0.9
    tail = np.array([tip, tip - d * a * 0.4 + normal * b * 0.8, tip - d * a * 0.4 - normal * b * 0.8])
    cv2.fillPoly(mask, [tail.round().astype(np.int32)], 1)
    fish = np.empty((h, w, 3), np.float32)
    fish[:] = np.clip(base + rng.normal(0, 15, 3), 0, 255)
    fish += (((xx - cx) * normal[0] + (yy - cy) * normal[1]) / b * 30)[..., None]  # darker back
    fish += (12 * np.sin((xx * d[0] + yy * d[1]) / rng.uniform(3, 8)))[..., None]  # stripes
    fish += rng.normal(0, 8, (h, w, 3))
    image = np.where(mask[..., None] > 0, fish, image)
    return np.clip(image, 0, 255).astype(np.uint8), mask


def _transform(image: np.ndarray, mask: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    h, w = mask.shape
    if name == "identity":
        return image, mask
    if name in ("hflip", "vflip"):
        code = 1 if name == "hflip" else 0
        return cv2.flip(image, code), cv2.flip(mask, code)
    if name in ("rot90", "rot270"):
        k = 1 if name == "rot90" else 3
        return (
            cv2.resize(np.ascontiguousarray(np.rot90(image, k)), (w, h), interpolation=cv2.INTER_LINEAR),
            cv2.resize(np.ascontiguousarray(np.rot90(mask, k)), (w, h), interpolation=cv2.INTER_NEAREST),
        )
    m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), float(name[3:]), 1.0)
    return (
        cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0)),
        cv2.warpAffine(mask, m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0),
    )


def _dataset(
    seed: int, species: int = 3, photos: int = 10, copies: int = 5, size: tuple[int, int] = SIZE
) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Copies of random photos, resized like the pipeline does: (images, masks, species, photo)."""
    rng = np.random.default_rng(seed)
    images, masks, names, truth = [], [], [], []
    for s in range(species):
        base = rng.uniform(60, 220, 3)
        for p in range(photos):
            image, mask = _photo(rng, base)
            ops = ["hflip", "vflip", "rot90", "rot270"]
            ops += [f"rot{rng.uniform(15, 75) * rng.choice([-1, 1]):.1f}" for _ in range(2)]
            rng.shuffle(ops)
            for op in ["identity", *ops][:copies]:
                img, msk = _transform(image, mask, op)
                images.append(cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA))
                masks.append(cv2.resize(msk, size[::-1], interpolation=cv2.INTER_NEAREST))
                names.append(f"species {s}")
                truth.append(s * 1000 + p)
    return np.stack(images), np.stack(masks), names, np.array(truth)


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    return _dataset(seed=0)


def _assert_valid_grouping(groups: np.ndarray, species: list[str]) -> None:
    assert groups.dtype == np.int64
    assert groups.min() == 0 and len(np.unique(groups)) == groups.max() + 1
    for g in np.unique(groups):
        assert len({species[i] for i in np.flatnonzero(groups == g)}) == 1


def test_groups_copies_of_one_photo_together(data):
    images, masks, species, truth = data
    groups = group_ids(images, masks, species)
    _assert_valid_grouping(groups, species)
    precision, recall = pair_quality(groups, truth)
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)


def test_quality_holds_on_another_draw():
    images, masks, species, truth = _dataset(seed=1, species=2, photos=12)
    precision, recall = pair_quality(group_ids(images, masks, species), truth)
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)


def test_many_copies_of_few_photos():
    # Every nearest neighbour is then a copy; the cut must still be found.
    images, masks, species, truth = _dataset(seed=5, species=2, photos=3, copies=7)
    precision, recall = pair_quality(group_ids(images, masks, species), truth)
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)


def test_each_transform_alone_is_recognised(data):
    images, masks, species, _ = data
    image, mask = _photo(np.random.default_rng(7), np.array([200.0, 120.0, 60.0]))
    ops = ["identity", "hflip", "vflip", "rot90", "rot270", "rot33", "rot-70"]
    copies = [_transform(image, mask, op) for op in ops]
    new_images = np.stack([cv2.resize(i, SIZE[::-1], interpolation=cv2.INTER_AREA) for i, _ in copies])
    new_masks = np.stack([cv2.resize(m, SIZE[::-1], interpolation=cv2.INTER_NEAREST) for _, m in copies])
    groups = group_ids(
        np.concatenate([new_images, images]),
        np.concatenate([new_masks, masks]),
        [species[0]] * len(ops) + species,
    )
    assert len(set(groups[: len(ops)])) == 1, dict(zip(ops, groups[: len(ops)], strict=True))
    assert not np.isin(groups[len(ops) :], groups[0]).any()  # and matched with nothing else


def test_larger_inputs_are_grouped_alike():
    images, masks, species, truth = _dataset(seed=3, species=1, photos=8, size=(192, 256))
    precision, recall = pair_quality(group_ids(images, masks, species), truth)
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)


def test_distinct_photos_stay_apart(caplog):
    images, masks, species, truth = _dataset(seed=4, photos=12, copies=1)
    with caplog.at_level(logging.WARNING, logger="fishseg.dataset.grouping"):
        groups = group_ids(images, masks, species)
    # No copies, so no gap between copies and the rest: the conservative fallback applies.
    assert "no clear gap" in caplog.text
    assert len(np.unique(groups)) >= 0.95 * len(groups)


def test_a_giant_group_is_broken_up(data, caplog):
    images, masks, species, _ = data
    # A loose threshold links everything; the guard must still leave a splittable species.
    with caplog.at_level(logging.WARNING, logger="fishseg.dataset.grouping"):
        groups = group_ids(images, masks, species, threshold=50.0, max_group_fraction=0.3)
    _assert_valid_grouping(groups, species)
    for name in set(species):
        sizes = np.bincount(groups[np.array(species) == name])
        assert sizes.max() <= 0.3 * sizes.sum()
    assert "near-duplicate group held" in caplog.text


def test_empty_masks_and_black_images_do_not_break_it(data):
    images, masks, species, _ = data
    images, masks = images[:20].copy(), masks[:20].copy()
    masks[:5] = 0  # no fish: only the photo's frame can match these
    images[5:7] = 0  # all black: nothing valid to compare
    groups = group_ids(images, masks, species[:20])
    _assert_valid_grouping(groups, species[:20])
    assert groups[5] != groups[6]


def test_edge_cases_and_bad_input():
    assert group_ids(np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 8, 8), np.uint8), []).shape == (0,)
    one = group_ids(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8), ["a"])
    assert one.tolist() == [0]
    with pytest.raises(ValueError, match="species labels"):
        group_ids(np.zeros((2, 8, 8, 3), np.uint8), np.zeros((2, 8, 8), np.uint8), ["a"])
    with pytest.raises(ValueError, match="expected images"):
        group_ids(np.zeros((2, 8, 8), np.uint8), np.zeros((2, 8, 8), np.uint8), ["a", "b"])
    with pytest.raises(ValueError, match="threshold"):
        group_ids(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), np.uint8), ["a"], threshold=0)


def test_species_never_share_a_group(data):
    images, masks = data[0][:50], data[1][:50]
    # The same photos under two species names: identical copies, yet separate groups.
    doubled = group_ids(
        np.concatenate([images, images]),
        np.concatenate([masks, masks]),
        ["one"] * len(images) + ["two"] * len(images),
    )
    assert not np.isin(doubled[: len(images)], doubled[len(images) :]).any()


def test_pair_quality_by_hand():
    assert pair_quality([0, 0, 1, 1], [0, 0, 1, 1]) == (1.0, 1.0)
    assert pair_quality([0, 0, 0, 0], [0, 0, 1, 1]) == (2 / 6, 1.0)
    assert pair_quality([0, 1, 2, 3], [0, 0, 1, 1]) == (1.0, 0.0)
    assert pair_quality([5, 5, 9], [1, 2, 2]) == (0.0, 0.0)
    assert pair_quality([0, 1, 2], [3, 4, 5]) == (1.0, 1.0)  # no pairs at all
    assert pair_quality([], []) == (1.0, 1.0)
    # Labels need not be numbers or 0-based.
    assert pair_quality(["a", "a", "b"], [7, 7, 7]) == (1.0, 1 / 3)


def test_straddling_pairs_by_hand():
    assert straddling_pairs([0, 0, 0, 1], ["train", "train", "test", "val"]) == 2
    assert straddling_pairs([0, 0, 1, 1], ["train", "train", "test", "test"]) == 0
    assert straddling_pairs([0, 0, 0], ["train", "val", "test"]) == 3
    assert straddling_pairs([3, 3, 3, 3], ["train", "train", "val", "val"]) == 4
    assert straddling_pairs([], []) == 0


def test_synthetic_archive(tmp_path):
    from fishseg.sources.layout import image_dir, mask_dir
    from fishseg.sources.synthetic import generate

    records = generate(
        tmp_path, photos_per_species=3, copies_per_photo=4, width=200, height=150, seed=3, progress=False
    )
    images, masks = [], []
    for r in records:
        img = cv2.cvtColor(cv2.imread(str(image_dir(tmp_path, r.species) / r.name)), cv2.COLOR_BGR2RGB)
        mask = cv2.imread(str(mask_dir(tmp_path, r.species) / r.name), cv2.IMREAD_GRAYSCALE) > 127
        images.append(cv2.resize(img, SIZE[::-1], interpolation=cv2.INTER_AREA))
        masks.append(cv2.resize(mask.astype(np.uint8), SIZE[::-1], interpolation=cv2.INTER_NEAREST))
    species = [r.species for r in records]
    groups = group_ids(np.stack(images), np.stack(masks), species)
    _assert_valid_grouping(groups, species)
    precision, recall = pair_quality(groups, [f"{r.species}/{r.photo}" for r in records])
    assert recall >= 0.95 and precision >= 0.9, (precision, recall)
