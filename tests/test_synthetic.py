"""The built-in synthetic dataset: the archive's layout, deterministic, real augmented copies."""

import hashlib

import cv2
import numpy as np

from fishseg.layout import SPECIES, image_dir, mask_dir
from fishseg.synthetic import generate

ARGS = {"photos_per_species": 2, "copies_per_photo": 3, "width": 64, "height": 48, "progress": False}


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*.png")):
        h.update(p.relative_to(root).as_posix().encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_layout_counts_and_masks(tmp_path):
    records = generate(tmp_path, seed=0, **ARGS)
    assert len(records) == 9 * 6
    for species in SPECIES:
        images = sorted(p.name for p in image_dir(tmp_path, species).glob("*.png"))
        masks = sorted(p.name for p in mask_dir(tmp_path, species).glob("*.png"))
        assert images == masks == [f"{i:05d}.png" for i in range(1, 7)]
    for r in records:
        img = cv2.imread(str(image_dir(tmp_path, r.species) / r.name))
        mask = cv2.imread(str(mask_dir(tmp_path, r.species) / r.name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (48, 64, 3) and mask.shape == (48, 64)
        assert set(np.unique(mask)) <= {0, 255}
        assert 0.01 < (mask > 0).mean() < 0.6
        # the fish differs from the surface it lies on
        fish, ground = img[mask > 0].mean(0), img[mask == 0].mean(0)
        assert np.abs(fish - ground).max() > 10


def test_deterministic_and_seeded(tmp_path):
    generate(tmp_path / "a", seed=0, **ARGS)
    generate(tmp_path / "b", seed=0, **ARGS)
    generate(tmp_path / "c", seed=1, **ARGS)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b") != _digest(tmp_path / "c")


def test_copies_are_transforms_of_one_photo_with_unrevealing_names(tmp_path):
    records = generate(
        tmp_path, photos_per_species=4, copies_per_photo=4, width=64, height=48, seed=2, progress=False
    )
    consecutive = 0
    for species in SPECIES:
        mine = [r for r in records if r.species == species]
        for photo in {r.photo for r in mine}:
            copies = [r for r in mine if r.photo == photo]
            assert len({r.transform for r in copies}) == len(copies)
            numbers = sorted(int(r.name[:5]) for r in copies)
            consecutive += numbers == list(range(numbers[0], numbers[0] + len(numbers)))
            masks = {r.transform: cv2.imread(str(mask_dir(tmp_path, species) / r.name), 0) for r in copies}
            areas = [(m > 0).sum() for m in masks.values()]
            assert max(areas) < 1.6 * min(areas)  # the same fish, turned (edges may crop it)
            if "identity" in masks and "hflip" in masks:
                assert np.array_equal(masks["hflip"], masks["identity"][:, ::-1])
    assert consecutive < 9 * 4 / 2
