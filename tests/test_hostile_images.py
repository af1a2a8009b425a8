"""Decompression bombs and other hostile images in split, download, evaluate and predict.

The bombs are real: a 20000x20000 PNG of about 400 KB that decodes to 400 MB (1.2 GB as
RGB), a JPEG whose frame header says 65000x65000 (4.2 Gpx), a BMP header asking for
30000x30000. Each is refused from its header, before decoding, naming the file and the
setting that raises the cap; the peak memory of the whole process stays under the bound.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._hostile import (
    REPO,
    TORCH_BOUND_MB,
    assert_refused,
    bomb_png,
    run_command,
    scratch_project,
    stage,
)
from tests.helpers import fish_dataset, generic_dataset, image_bytes, snapshot, tiny, write, write_params

SPECIES = {"Trout": 5, "Shrimp": 5}


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> bytes:
    return bomb_png(tmp_path_factory.mktemp("bomb") / "bomb.png").read_bytes()


def jpeg_bomb() -> bytes:
    """A real 8x8 JPEG whose frame header was changed to 65000x65000."""
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    struct.pack_into(">HH", data, data.find(b"\xff\xc0") + 5, 65000, 65000)
    return bytes(data)


def gif_named_png() -> bytes:
    """A GIF (a format whose header the check does not read): refused, whatever its name."""
    return (
        b"GIF89a" + struct.pack("<HH", 20000, 20000) + b"\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00;"
    )


def bmp_bomb() -> bytes:
    """A BMP header asking for 30000x30000 RGB (2.7 GB), and no pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, 30000, 30000, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 54, 0, 0, 54) + info


# --------------------------------------------------------------------------- split


def split_project(tmp_path: Path, **data: object) -> Path:
    """A project whose data/raw holds valid pairs and whose split already ran once."""
    root = scratch_project(tmp_path / "project", data={"image_size": [32, 32], **data})
    fish_dataset(root / "data" / "raw", SPECIES, levels=2)
    assert stage("split", root).code == 0
    return root


def split_outputs(root: Path) -> dict:
    return {
        "index": (root / "data" / "index.csv").read_bytes(),
        "prepared": snapshot(root / "data" / "prepared"),
    }


RAW = Path("data/raw/Fish_Dataset/Fish_Dataset/Trout")


@pytest.mark.parametrize(
    ("where", "name", "content"),
    [
        ("Trout", "00001.png", "bomb"),  # the image
        ("Trout GT", "00002.png", "bomb"),  # the mask
        ("Trout", "00003.jpg", "jpeg"),  # a JPEG frame header of 4.2 Gpx (its .png removed)
        ("Trout", "00004.png", "gif"),  # a GIF named .png: not a format whose header was checked
    ],
    ids=["png_image", "png_mask", "jpeg_header", "gif_as_png"],
)
def test_split_refuses_bombs(tmp_path: Path, bomb: bytes, where: str, name: str, content: str) -> None:
    root = split_project(tmp_path)
    before = split_outputs(root)
    target = root / RAW / where / name
    (target.parent / f"{target.stem}.png").unlink()
    write(target, {"bomb": bomb, "jpeg": jpeg_bomb(), "gif": gif_named_png()}[content])

    outcome = stage("split", root)

    fix = "data.max_image_pixels" if content in ("bomb", "jpeg") else "not a PNG, JPEG, BMP or TIFF image"
    line = assert_refused(outcome, str(target), fix, "data.on_invalid: skip")
    assert "replace or remove it" in line
    assert split_outputs(root) == before
    report = json.loads((root / "data" / "validation.json").read_text())
    assert [p["path"] for p in report["problems"]] == [str(target)]


def test_split_skips_and_counts_a_bomb_when_asked(tmp_path: Path, bomb: bytes) -> None:
    root = split_project(tmp_path, on_invalid="skip")
    write(root / RAW / "Trout" / "00001.png", bomb)

    outcome = stage("split", root)

    assert outcome.code == 0 and outcome.peak_mb < 400, outcome.out
    assert "skipping 1 bad file(s)" in outcome.out and "00001.png" in outcome.out
    report = json.loads((root / "data" / "validation.json").read_text())
    assert report["valid"] == sum(SPECIES.values()) - 1 and len(report["problems"]) == 1


def test_download_keeps_a_bomb_undecoded_and_split_names_it(tmp_path: Path) -> None:
    """A BMP to convert whose header asks for 2.7 GB: download copies it without decoding it
    (as any file it cannot convert), and split refuses it."""
    src = generic_dataset(tmp_path / "src", None, count=3)
    (src / "images" / "img_1.png").unlink()
    write(src / "images" / "img_1.bmp", bmp_bomb())
    root = scratch_project(tmp_path / "project", data={"source": str(src), "image_size": [32, 32]})

    download = stage("download", root)
    assert download.code == 0 and download.peak_mb < 400, download.out
    assert "cannot decode" in download.out and "img_1.bmp" in download.out
    split = stage("split", root)
    kept = root / "data/raw/Fish_Dataset/Fish_Dataset/unknown/unknown/img_1.bmp"
    assert_refused(split, str(kept), "30000x30000", "data.max_image_pixels")


# --------------------------------------------------------------------------- predict


@pytest.fixture(scope="module")
def model_dir(trained) -> Path:
    return trained.paths.model_dir


def predict(tmp: Path, model_dir: Path, *inputs: Path) -> tuple:
    out = tmp / "out"
    argv = [
        "python",
        "-m",
        "fishseg.predict",
        *map(str, inputs),
        "--model",
        str(model_dir),
        "--out",
        str(out),
    ]
    return run_command([*argv, "--no-progress"], tmp, env={"PYTHONPATH": str(REPO)}), out


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["png", "jpeg", "fifo", "gif"])
def test_predict_names_and_skips_a_bad_image(tmp_path: Path, model_dir: Path, bomb: bytes, kind: str) -> None:
    good = write(tmp_path / "photos" / "good.png", image_bytes(3))
    bad = tmp_path / "photos" / f"bad.{'jpg' if kind == 'jpeg' else 'png'}"
    if kind == "fifo":
        os.mkfifo(bad)
    else:
        write(bad, {"png": bomb, "jpeg": jpeg_bomb(), "gif": gif_named_png()}[kind])

    outcome, out = predict(tmp_path, model_dir, good, bad)  # a FIFO given by name would block a reader

    needle = {
        "png": "20000x20000 = 400 Mpx, more than --max-pixels = 50 Mpx",
        "jpeg": "65000x65000",
        "fifo": "not a regular file",
        "gif": "not a PNG, JPEG, BMP or TIFF image",
    }
    assert_refused(outcome, f"{bad}: skipped", needle[kind], code=1, bound_mb=TORCH_BOUND_MB)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["good.png"]
    rows = (out / "predictions.csv").read_text().splitlines()
    assert len(rows) == 3 and rows[2].startswith(str(bad))


# --------------------------------------------------------------------------- evaluate


@pytest.mark.slow
def test_evaluate_refuses_a_bomb_test_mask(tmp_path: Path, model_dir: Path, bomb: bytes) -> None:
    root = tmp_path / "project"
    shutil.copytree(model_dir.parents[1], root)
    write_params(root, tiny())
    (root / "metrics").mkdir(exist_ok=True)
    (root / "metrics" / "eval.json").write_text('{"iou": 0.5}\n')  # the previous run's result
    index = (root / "data" / "index.csv").read_text().splitlines()
    mask = next(line.split(",")[3] for line in index if line.endswith(",test"))
    write(root / mask, bomb)

    outcome = stage("evaluate", root)

    assert_refused(
        outcome, mask, "cannot read the test mask", "data.max_image_pixels", bound_mb=TORCH_BOUND_MB
    )
    assert (root / "metrics" / "eval.json").read_text() == '{"iou": 0.5}\n'
    assert not (root / "models" / "test_predictions.npz").exists()
