"""Near-duplicate grouping: copies of a photo, shots of one scene, and of one specimen.

Most copy tests build their own "photos" (fish-like blobs with stripes, a darker back,
glare and noise on a blue surface), each with copies made the way the archive made them:
cv2 flips, np.rot90 then a resize back to the frame, and cv2.warpAffine rotations about
the centre that leave black corners. One test runs on the synthetic generator. The
same-scene and same-specimen tests use real photos from datasets/realfish.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from fishseg.dataset import grouping as G
from fishseg.dataset.grouping import group_ids, pair_quality, straddling_pairs
from fishseg.dataset.index import Pair, decode_pairs

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


# --------------------------------------------------------------------------- same scene
# Real photos from datasets/realfish, decoded and resized as the split stage does.

REALFISH = Path(__file__).resolve().parents[1] / "datasets" / "realfish"


def _realfish(*names: str, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The named photos ("Species/stem") as (images, masks, species) at ``size``."""
    pairs = []
    for name in names:
        species, stem = name.split("/")
        pairs.append(
            Pair(
                species,
                REALFISH / "images" / species / f"{stem}.jpg",
                REALFISH / "masks" / species / f"{stem}.png",
            )
        )
    problems: list = []
    decoded = list(decode_pairs(pairs, size, problems))
    assert not problems and len(decoded) == len(names)
    return (
        np.stack([d.image for d in decoded]),
        np.stack([d.mask for d in decoded]),
        [d.species for d in decoded],
    )


# Near-duplicates judged by eye (benchmarks/realfish_near_duplicates.txt): shots one after
# another, the camera or the fish moved a little; and photos of other specimens or places.
SAME_SCENE = [("Hourse Mackerel/00011", "Hourse Mackerel/00012"), ("Shrimp/00014", "Shrimp/00042"),
              ("Shrimp/00018", "Shrimp/00019")]  # fmt: skip
DISTINCT = ["Hourse Mackerel/00001", "Hourse Mackerel/00003", "Hourse Mackerel/00022", "Hourse Mackerel/00024",
            "Hourse Mackerel/00031", "Hourse Mackerel/00041", "Shrimp/00035", "Sea Bass/00001", "Sea Bass/00020",
            "Sea Bass/00025", "Sea Bass/00028", "Red Sea Bream/00018", "Red Sea Bream/00025",
            "Red Sea Bream/00032"]  # fmt: skip


def test_real_shots_of_one_scene_join_and_other_photos_stay_apart():
    names = [name for pair in SAME_SCENE for name in pair] + DISTINCT
    images, masks, species = _realfish(*names)
    groups = group_ids(images, masks, species)
    _assert_valid_grouping(groups, species)
    for k in range(len(SAME_SCENE)):
        assert groups[2 * k] == groups[2 * k + 1], SAME_SCENE[k]
    assert len(np.unique(groups)) == len(SAME_SCENE) + len(DISTINCT), dict(zip(names, groups, strict=True))


def test_a_stricter_threshold_never_joins_more():
    images, masks, species = _realfish(*[name for pair in SAME_SCENE for name in pair], *DISTINCT[:6])
    counts = [len(np.unique(group_ids(images, masks, species, threshold=t))) for t in (0.3, 1.0, 3.0)]
    assert counts[0] >= counts[1] >= counts[2], counts
    assert counts[0] > counts[2]  # the threshold does move the cut


def test_scene_detail_ignores_exposure_and_leaves_out_fish_corners_and_stamp():
    images, masks, _ = _realfish("Hourse Mackerel/00011")
    image, mask = images[0].copy(), masks[0].copy()
    image[:, :12] = 0  # a black border, as a free rotation leaves
    text = np.zeros(mask.shape, np.uint8)
    for canvas, colour in ((image, (240, 220, 40)), (text, 255)):  # a yellow date stamp
        cv2.putText(canvas, "01/01/2006", (70, 90), cv2.FONT_HERSHEY_SIMPLEX, 0.3, colour, 1)
    darker = (image * 0.7).astype(np.uint8)
    detail, valid = G._scene_arrays(np.stack([image, darker]), np.stack([mask, mask]))
    assert detail.shape[:2] == (2, 2) and valid.dtype == np.uint8
    work = valid.shape[:0:-1]
    for left_out in (mask, text):  # the fish (with a margin) and the stamp
        assert not valid[0][cv2.resize(left_out, work, interpolation=cv2.INTER_AREA) > 0].any()
    assert not valid[0][:, :6].any()  # and the black border
    assert valid[0].mean() > 0.3
    # Exposure scales the channels alike: the detail, and so the score, hardly move.
    assert G._scene_distances(detail, valid, np.array([0]), np.array([1]))[0] < 0.05


def test_scene_distance_finds_a_shifted_background():
    # Two windows of one photo, 6 and 10 pixels apart: one scene, the camera moved.
    images, masks, _ = _realfish("Shrimp/00014", "Sea Bass/00020", size=(112, 150))
    windows = [(0, 0), (6, 10)]
    crops = np.stack(
        [images[0][y : y + SIZE[0], x : x + SIZE[1]] for y, x in windows] + [images[1][:96, :128]]
    )
    crop_masks = np.stack(
        [masks[0][y : y + SIZE[0], x : x + SIZE[1]] for y, x in windows] + [masks[1][:96, :128]]
    )
    detail, valid = G._scene_arrays(crops, crop_masks)
    same, other = G._scene_distances(detail, valid, np.array([0, 0]), np.array([1, 2]))
    assert same < 0.1 and other > 0.5, (same, other)
    # Spectra once for all or per chunk of pairs: the same numbers.
    both = G._scene_distances(detail, valid, np.array([0, 0]), np.array([1, 2]), all_at_once=True)
    np.testing.assert_allclose(both, [same, other], atol=1e-5)


def test_the_fish_must_keep_its_size():
    images, masks, _ = _realfish("Hourse Mackerel/00011")
    image, mask = images[0], masks[0]
    # The same photo with the fish 1.5 times longer (area 2.25 times): not one specimen.
    h, w = mask.shape
    zoom = cv2.getRotationMatrix2D((w / 2, h / 2), 0, 1.5)
    big = cv2.warpAffine(image, zoom, (w, h), borderMode=cv2.BORDER_REFLECT)
    big_mask = cv2.warpAffine(mask, zoom, (w, h), flags=cv2.INTER_NEAREST)
    pairs = np.array([0, 0]), np.array([1, 2])
    scores, random_scores = G._fish_distances(
        np.stack([image, image, big]), np.stack([mask, mask, big_mask]), *pairs
    )
    assert scores[0] < 1e-3  # the same fish (fish cuts on real photos are about 0.04)
    assert np.isinf(scores[1])  # resized
    assert len(random_scores) > 0


def test_background_cut_from_other_species():
    names = [
        "Shrimp/00014",
        "Shrimp/00042",
        "Shrimp/00035",
        "Sea Bass/00001",
        "Sea Bass/00020",
        "Trout/00001",
    ]
    images, masks, species = _realfish(*names)
    detail, valid = G._scene_arrays(images, masks)
    thumbs = G._scene_thumbnails(detail, valid)
    np.testing.assert_allclose(np.linalg.norm(thumbs, axis=1), 1, atol=1e-5)
    one_species = G._scene_cut(detail, valid, thumbs, np.array(["Shrimp"] * len(names)))
    assert one_species == G._SCENE_MAX_CUT
    cut = G._scene_cut(detail, valid, thumbs, np.array(species))
    assert G._SCENE_MIN_CUT <= cut <= G._SCENE_MAX_CUT


# Shots of one specimen where the camera moved or zoomed between shots (judged by eye and
# by point matches on the fish), among photos of other specimens of the same species.
CAMERA_MOVED = [("Sea Bass/00013", "Sea Bass/00014"), ("Trout/00014", "Trout/00015"),
                ("Gilt-Head Bream/00020", "Gilt-Head Bream/00021"),
                ("Striped Red Mullet/00014", "Striped Red Mullet/00017")]  # fmt: skip
OTHER_SPECIMENS = ["Sea Bass/00001", "Sea Bass/00020", "Sea Bass/00028", "Trout/00001", "Trout/00005",
                   "Gilt-Head Bream/00009", "Gilt-Head Bream/00025", "Striped Red Mullet/00002",
                   "Striped Red Mullet/00030", "Red Sea Bream/00018", "Hourse Mackerel/00022",
                   "Hourse Mackerel/00031"]  # fmt: skip


def test_real_shots_with_the_camera_moved_join_as_one_specimen():
    names = [name for pair in CAMERA_MOVED for name in pair] + OTHER_SPECIMENS
    images, masks, species = _realfish(*names)
    groups = group_ids(images, masks, species)
    _assert_valid_grouping(groups, species)
    for k, pair in enumerate(CAMERA_MOVED):
        assert groups[2 * k] == groups[2 * k + 1], pair
    assert len(np.unique(groups)) == len(CAMERA_MOVED) + len(OTHER_SPECIMENS), dict(
        zip(names, groups, strict=True)
    )
    # Sea Bass 13/14: the camera moved too far for the background alone; the fish's detail links them.
    links = G.candidate_links(images, masks, np.array(species))
    pair = (links.first == 0) & (links.second == 1) & (links.ratio < 1)
    assert [G.LINK_KINDS[k] for k in links.kind[pair]] == ["specimen"]


def test_a_zoomed_background_is_found_as_the_fish_sizes_say():
    # A photo, and the same view with the camera zoomed in by 1.1: the fish 1.21 times larger.
    images, masks, _ = _realfish("Shrimp/00014", "Sea Bass/00020")
    h, w = SIZE
    zoom = cv2.getRotationMatrix2D((w / 2, h / 2), 0, 1.1)
    photos = np.stack(
        [images[0], cv2.warpAffine(images[0], zoom, (w, h), borderMode=cv2.BORDER_REFLECT), images[1]]
    )
    fish = np.stack([masks[0], cv2.warpAffine(masks[0], zoom, (w, h), flags=cv2.INTER_NEAREST), masks[1]])
    detail, valid = G._scene_arrays(photos, fish)
    pairs = np.array([0, 0]), np.array([1, 2])
    as_shot = G._scene_distances(detail, valid, *pairs)
    zoomed = G._zoomed_scene_distances(detail, valid, (fish > 0).sum((1, 2)), *pairs)
    assert zoomed[0] < 0.1 < as_shot[0], (zoomed, as_shot)
    # No zoom is tried where the fish have one size, or differ by more than a zoom explains.
    assert np.isinf(G._zoomed_scene_distances(detail, valid, np.array([100, 100, 300]), *pairs)).all()
