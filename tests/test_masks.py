"""Masks of every common encoding read as the fish they mark, or are refused with the fix.

Each case is a real file written with OpenCV or PIL the way other tools write masks:
0/255 and 0/1 at 8 and 16 bit, 1-bit, RGB, palette, alpha; the split stage then reports
empty masks and refuses a split without any fish; evaluate scores the same from any
encoding and registers nothing on a test set without fish.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
from PIL import Image

from fishseg.dataset.arrays import read_index
from fishseg.dataset.index import MaskEncodingError, read_mask, read_rgb
from fishseg.dataset.split import prepare
from fishseg.errors import FishsegError
from fishseg.evaluation.evaluate import evaluate
from fishseg.params import DataParams, SplitParams
from fishseg.paths import Paths
from fishseg.tracking import store as tracking
from fishseg.tracking.logged_model import log_inference_model
from fishseg.tracking.registry import CHAMPION, champion
from fishseg.tracking.runs import write_run_record

from .helpers import SHAPE, fish_dataset, tiny, write_prepared

FISH = np.zeros(SHAPE, np.uint8)
FISH[3:9, 4:13] = 1  # the mask every encoding below stores
FIX = "0 background, 255 (or 1) fish"


def _cv2(pixels: np.ndarray, ext: str = ".png"):
    def write(path: Path) -> Path:
        path = path.with_suffix(ext)
        assert cv2.imwrite(str(path), pixels)
        return path

    return write


def _pil(image: Image.Image, **options):
    def write(path: Path) -> Path:
        image.save(path.with_suffix(".png"), **options)
        return path.with_suffix(".png")

    return write


def _palette(colours: list[int]) -> Image.Image:
    image = Image.fromarray(FISH, mode="P")
    image.putpalette(colours + [0] * (768 - len(colours)))
    return image


def _photo_with_alpha() -> np.ndarray:
    rgba = np.random.default_rng(0).integers(0, 256, (*SHAPE, 4), dtype=np.uint8)
    rgba[..., 3] = FISH * 255
    return rgba


ENCODINGS = {
    "grey 0/255": _cv2(FISH * 255),
    "grey 0/1": _cv2(FISH),
    "16-bit 0/1": _cv2(FISH.astype(np.uint16)),
    "16-bit 0/65535": _cv2(FISH.astype(np.uint16) * 65535),
    "16-bit 0/255": _cv2(FISH.astype(np.uint16) * 255),
    "16-bit 0/1 tiff": _cv2(FISH.astype(np.uint16), ".tif"),
    "1-bit": _pil(Image.fromarray(FISH.astype(bool))),
    "bmp 0/255": _cv2(FISH * 255, ".bmp"),
    "RGB white on black": _cv2(np.repeat(FISH[..., None] * 255, 3, axis=2)),
    "RGB red on black": _cv2(np.dstack([FISH * 0, FISH * 0, FISH * 255])),
    "palette 0/1, dark red fish": _pil(_palette([0, 0, 0, 128, 0, 0])),
    "palette 0/1, black and white": _pil(_palette([0, 0, 0, 255, 255, 255])),
    "palette, transparent background": _pil(_palette([0, 0, 0, 255, 255, 255]), transparency=0),
    "alpha only (RGBA)": _cv2(np.dstack([FISH * 0] * 3 + [FISH * 255])),
    "alpha only (grey + alpha)": _pil(Image.fromarray(np.dstack([FISH * 0, FISH * 255]), mode="LA")),
    "cut-out photo (RGBA)": _cv2(_photo_with_alpha()),
}


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_reads_as_its_fish(tmp_path, encoding):
    path = ENCODINGS[encoding](tmp_path / "mask")
    mask, grey = read_mask(path)
    assert mask.dtype == np.uint8 and grey == 0.0
    np.testing.assert_array_equal(mask, FISH)


def test_noisy_jpeg_and_anti_aliased_edges_are_cut_at_half_scale(tmp_path):
    big = cv2.resize(FISH * 255, (160, 120), interpolation=cv2.INTER_NEAREST)
    jpeg = tmp_path / "mask.jpg"
    assert cv2.imwrite(str(jpeg), big, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert len(np.unique(cv2.imread(str(jpeg), cv2.IMREAD_UNCHANGED))) > 2  # noisy, not two levels
    mask, grey = read_mask(jpeg)
    assert grey < 0.01 and np.mean(mask != big // 255) < 0.01
    soft = cv2.GaussianBlur(big.astype(np.uint16) * 257, (3, 3), 0)  # 16-bit, anti-aliased
    assert cv2.imwrite(str(tmp_path / "soft.png"), soft)
    mask, grey = read_mask(tmp_path / "soft.png")
    assert 0 < grey < 0.05 and np.mean(mask != big // 255) < 0.01


def test_exif_orientation_turns_the_mask_with_its_image(tmp_path):
    """OpenCV turns a JPEG by its EXIF orientation when reading images; masks must follow."""
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when shown
    photo = np.random.default_rng(1).integers(0, 256, (*SHAPE, 3), dtype=np.uint8)
    Image.fromarray(photo).save(tmp_path / "image.jpg", exif=exif)
    Image.fromarray(FISH * 255).save(tmp_path / "mask.jpg", exif=exif, quality=100)
    mask, _ = read_mask(tmp_path / "mask.jpg")
    assert mask.shape == read_rgb(tmp_path / "image.jpg").shape[:2] == SHAPE[::-1]
    np.testing.assert_array_equal(mask, np.rot90(FISH, -1))


REFUSED = {
    "two colours, neither black": (
        _cv2(np.where(FISH[..., None], (0, 0, 255), (255, 255, 255))),
        "neither black",
    ),
    "class labels 0/1/2": (_cv2(FISH + (np.arange(SHAPE[1]) > 13).astype(np.uint8) * 2), "class labels"),
    "float pixels": (_cv2(FISH.astype(np.float32), ".tif"), "float32 pixels"),
}


@pytest.mark.parametrize("case", REFUSED)
def test_encodings_that_cannot_say_which_pixels_are_fish_are_refused(tmp_path, case):
    write, reason = REFUSED[case]
    with pytest.raises(MaskEncodingError, match=reason) as exc:
        read_mask(write(tmp_path / "mask"))
    assert FIX in str(exc.value)


def _masks_dir(paths: Paths, species: str) -> Path:
    return paths.raw_dir / "Fish_Dataset" / "Fish_Dataset" / species / f"{species} GT"


def _reencode(paths: Paths, species: str, encoding: str) -> None:
    """Rewrite every mask of ``species`` in another encoding, keeping its pixels."""
    for mask_file in sorted(_masks_dir(paths, species).iterdir()):
        pixels = cv2.imread(str(mask_file), cv2.IMREAD_GRAYSCALE) // 255
        mask_file.unlink()
        if encoding == "16-bit 0/1":
            cv2.imwrite(str(mask_file), pixels.astype(np.uint16))
        elif encoding == "palette":
            image = Image.fromarray(pixels, mode="P")
            image.putpalette([0, 0, 0, 128, 0, 0] + [0] * 762)
            image.save(mask_file)
        else:  # alpha only
            cv2.imwrite(str(mask_file), np.dstack([pixels * 0] * 3 + [pixels * 255]))


def test_split_prepares_the_same_arrays_from_any_encoding(tmp_path):
    species = {"Trout": 5, "Shrimp": 5, "Sea Bass": 5}
    reference, mixed = Paths(tmp_path / "a"), Paths(tmp_path / "b")
    for paths in (reference, mixed):
        fish_dataset(paths.raw_dir, species)
    for name, encoding in zip(species, ("16-bit 0/1", "palette", "alpha"), strict=True):
        _reencode(mixed, name, encoding)
    data, split = DataParams(image_size=(32, 32)), SplitParams(val=0.2, test=0.2)
    expected = prepare(data, split, reference, progress=False)
    got = prepare(data, split, mixed, progress=False)
    assert got["fg_frac"].tolist() == expected["fg_frac"].tolist() and (got["fg_frac"] > 0).all()
    assert got["split"].tolist() == expected["split"].tolist()
    for name in ("train", "val", "test"):
        a, b = reference.prepared_split(name) / "masks.npy", mixed.prepared_split(name) / "masks.npy"
        np.testing.assert_array_equal(np.load(a), np.load(b))
    assert json.loads(mixed.validation_json.read_text())["empty_masks"] == []


def _empty(mask_file: Path) -> None:
    assert cv2.imwrite(str(mask_file), np.zeros(SHAPE, np.uint8))


def test_empty_masks_are_listed_in_the_validation_report(tmp_path):
    paths = Paths(tmp_path)
    fish_dataset(paths.raw_dir, {"Trout": 6, "Shrimp": 6})
    empty = _masks_dir(paths, "Shrimp") / "00002.png"
    _empty(empty)
    index = prepare(DataParams(image_size=(32, 32)), SplitParams(), paths, progress=False)
    assert len(index) == 12  # valid pairs: a photo may show no fish
    report = json.loads(paths.validation_json.read_text())
    assert report["empty_masks"] == [empty.relative_to(paths.root).as_posix()]
    assert report["problems"] == []


def test_a_split_whose_masks_are_all_empty_is_refused(tmp_path):
    paths = Paths(tmp_path)
    fish_dataset(paths.raw_dir, {"Trout": 6, "Shrimp": 6})
    for species in ("Trout", "Shrimp"):
        for mask_file in _masks_dir(paths, species).iterdir():
            _empty(mask_file)
    with pytest.raises(FishsegError, match=r"every mask of the \w+ split .* is empty") as exc:
        prepare(DataParams(image_size=(32, 32)), SplitParams(), paths, progress=False)
    assert "validation.json" in str(exc.value) and FIX in str(exc.value)
    assert not paths.prepared_dir.exists() and not paths.index_csv.exists()
    assert len(json.loads(paths.validation_json.read_text())["empty_masks"]) == 12


def test_a_refused_encoding_is_reported_with_the_file_and_the_fix(tmp_path):
    paths = Paths(tmp_path)
    fish_dataset(paths.raw_dir, {"Trout": 6})
    bad = _masks_dir(paths, "Trout") / "00001.png"
    bad.unlink()
    assert cv2.imwrite(str(bad), np.where(FISH[..., None], (0, 0, 255), (255, 255, 255)).astype(np.uint8))
    with pytest.raises(FishsegError) as exc:
        prepare(DataParams(image_size=(32, 32)), SplitParams(), paths, progress=False)
    line = next(line for line in str(exc.value).splitlines() if "00001.png" in line)
    assert "mask encoding" in line and "neither black" in line and FIX in line


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory):
    """A project of its own with the session's trained model (the same data), logged to the
    project's store the way training logs it, so that evaluate can register it."""
    params = tiny(mlflow={"log_model": True})
    paths = write_prepared(tmp_path_factory.mktemp("masks_evaluate"))
    shutil.copytree(trained.paths.model_dir, paths.model_dir)
    experiment_id = tracking.setup(params.mlflow, paths.root)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        log_inference_model(paths.model_dir, params.data.image_size)
    write_run_record(paths.run_json, run)
    return params, paths


@contextlib.contextmanager
def _test_masks_rewritten(paths, rewrite):
    """The full-resolution test masks rewritten by ``rewrite(pixels01) -> array to save``, then restored."""
    index = read_index(paths)
    files = [paths.root / rel for rel in index.loc[index["split"] == "test", "mask"]]
    saved = {f: f.read_bytes() for f in files}
    try:
        for f in files:
            assert cv2.imwrite(str(f), rewrite(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) // 255))
        yield
    finally:
        for f, data in saved.items():
            f.write_bytes(data)


def test_masks_in_another_encoding_score_the_same_at_full_resolution(scored):
    params, paths = scored
    expected = evaluate(params, paths, progress=False)
    assert expected["iou"] > 0  # the tiny model finds some fish: a lost mask would show
    with _test_masks_rewritten(paths, lambda fish: fish.astype(np.uint16)):  # 16-bit 0/1
        assert evaluate(params, paths, progress=False) == expected
    with _test_masks_rewritten(paths, lambda fish: np.dstack([fish * 0] * 3 + [fish * 255])):  # alpha
        assert evaluate(params, paths, progress=False) == expected


def test_no_champion_is_crowned_on_a_test_set_without_fish(scored, caplog):
    params, paths = scored
    name = "fishseg-no-fish"
    registering = tiny(mlflow={"log_model": True, "register_model": name})
    client = mlflow.MlflowClient(tracking.use_store(registering.mlflow, paths.root))
    test_masks = paths.prepared_split("test") / "masks.npy"
    arrays = test_masks.read_bytes()
    try:
        np.save(test_masks, np.zeros_like(np.load(test_masks)))
        with _test_masks_rewritten(paths, np.zeros_like), caplog.at_level(logging.WARNING, logger="fishseg"):
            metrics = evaluate(registering, paths, progress=False)
    finally:
        test_masks.write_bytes(arrays)
    assert metrics["n_images"] == 6  # scored and written as usual, only not registered
    assert client.search_registered_models(f"name = '{name}'") == []
    assert champion(client, name) is None
    assert "hold no fish pixels" in caplog.text and "not registered" in caplog.text

    # the same model and store with the fish back: registered and crowned as usual
    evaluate(registering, paths, progress=False)
    holder = client.get_model_version_by_alias(name, CHAMPION)
    assert str(holder.version) == "1"
