"""Outputs that cannot be written: a full disk, a folder that cannot exist, Ctrl-C.

A full disk is real here: the command runs under RLIMIT_FSIZE, so a write past the limit
fails with EFBIG exactly where a full disk fails with ENOSPC. Each case: one error line
naming the file and the fix, exit 2 (130 for Ctrl-C), nothing half-written, the previous
outputs untouched.
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests._hostile import (
    REPO,
    TORCH_BOUND_MB,
    assert_refused,
    run_command,
    scratch_project,
    stage,
    untouched,
)
from tests.helpers import fish_dataset, generic_dataset, image_bytes, snapshot, write


@pytest.fixture(scope="module")
def model_dir(trained) -> Path:
    return trained.paths.model_dir


def noise_png(path: Path, height: int, width: int) -> Path:
    """An image that does not compress: its PNG (and overlay) is about 3 bytes per pixel."""
    pixels = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return write(path, cv2.imencode(".png", pixels)[1].tobytes())


def predict_argv(model_dir: Path, out: Path, *inputs: Path) -> list[str]:
    return [
        "python",
        "-m",
        "fishseg.predict",
        *map(str, inputs),
        "--model",
        str(model_dir),
        "--out",
        str(out),
    ]


@pytest.mark.slow
def test_predict_into_a_folder_that_cannot_exist(tmp_path: Path, model_dir: Path) -> None:
    blocker = write(tmp_path / "results", b"a file where the folder should go")
    photo = write(tmp_path / "photo.png", image_bytes(1))
    argv = [*predict_argv(model_dir, blocker / "run1", photo), "--no-progress"]
    outcome = run_command(argv, tmp_path, env={"PYTHONPATH": str(REPO)})
    assert_refused(
        outcome, f"--out {blocker / 'run1'}: cannot create it", "writable folder", bound_mb=TORCH_BOUND_MB
    )
    assert blocker.read_bytes() == b"a file where the folder should go"


@pytest.mark.slow
def test_predict_on_a_full_disk_keeps_the_finished_rows(tmp_path: Path, model_dir: Path) -> None:
    small = write(tmp_path / "in" / "small.png", image_bytes(1))
    big = noise_png(tmp_path / "in" / "big.png", 300, 400)  # its overlay: ~360 KB
    out = tmp_path / "out"
    argv = [*predict_argv(model_dir, out, small, big), "--no-progress"]

    outcome = run_command(argv, tmp_path, env={"PYTHONPATH": str(REPO)}, file_limit=100_000)

    overlay = out / "overlays" / "big.png"
    assert_refused(
        outcome,
        f"cannot write {overlay}",
        "free some disk space or choose another --out",
        bound_mb=TORCH_BOUND_MB,
    )
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["small.png"]  # no mask without its overlay
    assert sorted(p.name for p in (out / "overlays").iterdir()) == ["small.png"]
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert [row["input"] for row in rows] == [str(small)]


@pytest.mark.slow
def test_predict_interrupted_keeps_every_finished_row(tmp_path: Path, model_dir: Path) -> None:
    """A real SIGINT (Ctrl-C) mid-run: exit 130, and every row written so far is whole and true."""
    photos = tmp_path / "photos"
    for i in range(300):
        write(photos / f"{i:03d}.png", image_bytes(i % 7))
    out = tmp_path / "out"
    argv = [sys.executable, *predict_argv(model_dir, out, photos)[1:], "--no-progress"]
    proc = subprocess.Popen(
        argv,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    table = out / "predictions.csv"
    deadline = time.monotonic() + 300
    while not (table.is_file() and len(table.read_text().splitlines()) > 3):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=120)[0]

    assert proc.returncode == 130, output
    assert "interrupted" in output and "Traceback" not in output
    rows = list(csv.DictReader(table.open()))
    assert 3 <= len(rows) < 300
    for row in rows:
        assert row["error"] == "" and Path(row["mask"]).is_file() and Path(row["overlay"]).is_file()
    masks = sorted((out / "masks").iterdir())
    assert len(rows) <= len(masks) <= len(rows) + 1  # at most the image between its overlay and its row
    assert len(list((out / "overlays").iterdir())) == len(masks)


@pytest.mark.slow
def test_export_into_a_missing_folder(tmp_path: Path, model_dir: Path) -> None:
    out = tmp_path / "missing" / "model.onnx"
    argv = ["python", "-m", "fishseg.export", "--model", str(model_dir), "--out", str(out)]
    outcome = run_command(argv, tmp_path, env={"PYTHONPATH": str(REPO)})
    assert_refused(
        outcome, f"cannot write {out}", "choose an existing, writable folder", bound_mb=TORCH_BOUND_MB
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_download_on_a_full_disk(tmp_path: Path) -> None:
    src = generic_dataset(tmp_path / "src", None, count=2)
    noise_png(src / "images" / "img_2.png", 200, 200)  # ~120 KB
    write(src / "masks" / "img_2.png", image_bytes(2, mask=True))
    root = scratch_project(tmp_path / "project", data={"source": str(src)})
    raw = root / "data" / "raw"
    before = snapshot(fish_dataset(raw, {"Trout": 2}))

    outcome = stage("download", root, file_limit=100_000)

    assert_refused(outcome, "cannot write", "img_2.png", "free some disk space")
    assert untouched(raw, before)


def test_split_on_a_full_disk(tmp_path: Path) -> None:
    root = scratch_project(tmp_path / "project", data={"image_size": [256, 256]})
    fish_dataset(root / "data" / "raw", {"Trout": 5, "Shrimp": 5})
    assert stage("split", root).code == 0
    before = {name: snapshot(root / "data" / name) for name in ("prepared",)}
    index = (root / "data" / "index.csv").read_bytes()

    outcome = stage("split", root, file_limit=100_000)  # one 256x256 array set is ~2 MB

    assert_refused(outcome, "cannot write", "free some disk space")
    assert {name: snapshot(root / "data" / name) for name in ("prepared",)} == before
    assert (root / "data" / "index.csv").read_bytes() == index
    assert not [p for p in (root / "data").iterdir() if p.name.startswith(".prepared")]
