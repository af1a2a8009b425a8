"""The split stage's checks: every bad pair reported at once, nothing half-written."""

import json

import numpy as np
import pytest

from fishseg.dataset.arrays import load_split, read_index
from fishseg.dataset.split import prepare
from fishseg.errors import FishsegError
from fishseg.params import DataParams, SplitParams
from fishseg.paths import Paths

from .helpers import fish_dataset, image_bytes, write

SPECIES = {"Trout": 6, "Shrimp": 6, "Sea Bass": 6}


def _project(tmp_path):
    paths = Paths(tmp_path)
    fish_dataset(paths.raw_dir, SPECIES)
    return paths


def _base(paths, species="Trout"):
    return paths.raw_dir / "Fish_Dataset" / "Fish_Dataset" / species


def _data(**kw):
    return DataParams(image_size=(32, 32), **kw)


def test_good_dataset_indexes_and_prepares(tmp_path):
    paths = _project(tmp_path)
    index = prepare(_data(), SplitParams(val=0.2, test=0.2), paths, progress=False)
    assert len(index) == 18
    assert list(index.columns) == [
        "id",
        "species",
        "image",
        "mask",
        "width",
        "height",
        "fg_frac",
        "group",
        "split",
    ]
    assert index["id"].is_unique and (index["width"] == 16).all() and (index["height"] == 12).all()
    assert (index["fg_frac"] > 0).all()
    assert read_index(paths).equals(index)
    total = 0
    for split in ("train", "val", "test"):
        arrays = load_split(paths, split)
        total += len(arrays)
        assert arrays.images.shape[1:] == (32, 32, 3) and arrays.masks.shape[1:] == (32, 32)
        assert set(np.unique(arrays.masks)) <= {0, 1}
        assert arrays.ids == index.loc[index["split"] == split, "id"].tolist()
    assert total == 18
    assert json.loads(paths.validation_json.read_text())["problems"] == []
    assert not list(paths.prepared_dir.glob("_*.npy"))


def _break_everything(paths):
    trout, shrimp = _base(paths), _base(paths, "Shrimp")
    (trout / "Trout GT" / "00000.png").unlink()  # image without mask
    write(trout / "Trout GT" / "00099.png", image_bytes(1, mask=True))  # mask without image
    good = image_bytes(2)
    write(trout / "Trout" / "00001.png", good[: len(good) // 2])  # truncated
    write(shrimp / "Shrimp" / "00002.png", b"")  # zero-byte
    import cv2

    ok, big = cv2.imencode(".png", np.zeros((20, 20), np.uint8))
    write(shrimp / "Shrimp GT" / "00003.png", big.tobytes())  # size mismatch
    ok, grey = cv2.imencode(".png", np.full((12, 16), 128, np.uint8))
    write(shrimp / "Shrimp GT" / "00004.png", grey.tobytes())  # not binary
    (paths.raw_dir / "Fish_Dataset" / "Fish_Dataset" / "Empty" / "Empty").mkdir(parents=True)  # empty species


EXPECTED = {
    "image without mask": "Trout/00000.png",
    "mask without image": "Trout GT/00099.png",
    "unreadable image": "Trout/00001.png",
    "size mismatch": "Shrimp GT/00003.png",
    "mask not binary": "Shrimp GT/00004.png",
    "empty species": "Empty",
}


def test_every_problem_is_reported_at_once_and_nothing_is_written(tmp_path):
    paths = _project(tmp_path)
    _break_everything(paths)
    with pytest.raises(FishsegError) as exc:
        prepare(_data(), SplitParams(), paths, progress=False)
    message = str(exc.value)
    for kind, name in EXPECTED.items():
        assert kind in message and name in message, (kind, message)
    assert "zero-byte" in message and "Shrimp/00002.png" in message
    assert "data.on_invalid: skip" in message
    assert not paths.prepared_dir.exists() and not paths.index_csv.exists()
    assert not list(paths.root.joinpath("data").glob(".prepared*"))
    report = json.loads(paths.validation_json.read_text())
    assert {p["kind"] for p in report["problems"]} >= set(EXPECTED)


def test_skip_drops_bad_pairs_and_keeps_the_rest(tmp_path):
    paths = _project(tmp_path)
    _break_everything(paths)
    index = prepare(_data(on_invalid="skip"), SplitParams(), paths, progress=False)
    # 18 pairs; lost: missing mask, truncated, zero-byte, size mismatch, grey mask
    assert len(index) == 13
    report = json.loads(paths.validation_json.read_text())
    assert report["valid"] == 13 and len(report["problems"]) == 7


def test_empty_dataset_and_missing_raw(tmp_path):
    paths = Paths(tmp_path)
    with pytest.raises(FishsegError, match="run the download stage"):
        prepare(_data(), SplitParams(), paths, progress=False)
    (paths.raw_dir / "Fish_Dataset" / "Fish_Dataset").mkdir(parents=True)
    with pytest.raises(FishsegError, match="no valid image/mask pairs"):
        prepare(_data(), SplitParams(), paths, progress=False)
    assert not paths.prepared_dir.exists()


def test_previous_prepared_data_survives_a_failed_run(tmp_path):
    paths = _project(tmp_path)
    prepare(_data(), SplitParams(), paths, progress=False)
    before = (paths.prepared_dir / "train" / "ids.json").read_text()
    _break_everything(paths)
    with pytest.raises(FishsegError):
        prepare(_data(), SplitParams(), paths, progress=False)
    assert (paths.prepared_dir / "train" / "ids.json").read_text() == before
