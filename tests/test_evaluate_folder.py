"""`python -m fishseg.evaluate_folder` on real photos with the tests' tiny trained model.

Its numbers must be the evaluate stage's own numbers for the same photos, and the score
of the masks `python -m fishseg.predict` writes for them.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from fishseg.dataset.index import read_mask
from fishseg.evaluation.evaluate import HEADLINE, evaluate, score_image
from fishseg.evaluation.folder import main
from fishseg.evaluation.pairs import find_pairs
from fishseg.paths import Paths
from fishseg.serve.predict import main as predict_main

from .helpers import real_test_project, tiny, write

# Two species, two photos each: stems repeat across the species folders.
PICKED = {"Shrimp": 2, "Sea Bass": 2}
METRIC_KEYS = (*HEADLINE, "boundary_f1", "n_images")


@pytest.fixture(scope="module")
def project(trained, tmp_path_factory) -> Paths:
    """The trained project with real photos as its test split, under data/raw/images + masks."""
    return real_test_project(tmp_path_factory.mktemp("project"), trained.paths, PICKED)


@pytest.fixture(scope="module")
def real_pairs(project) -> Path:
    """``images/<Species>/<stem>.jpg`` + ``masks/<Species>/<stem>.png``: real photos, 590x445."""
    return project.raw_dir


def _evaluate_folder(trained, images: Path, masks: Path, out: Path, *extra: str) -> int:
    model = str(trained.paths.model_dir)
    return main([str(images), str(masks), "--model", model, "--out", str(out), "--no-progress", *extra])


def test_numbers_equal_the_evaluate_stage_on_the_same_photos(trained, project, real_pairs, tmp_path):
    out = tmp_path / "out"
    assert _evaluate_folder(trained, real_pairs / "images", real_pairs / "masks", out) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    per_image = pd.read_csv(out / "per_image.csv")
    assert metrics["n_images"] == len(per_image) == 4 and metrics["n_problems"] == 0
    assert sorted(per_image["id"]) == ["Sea Bass/00001", "Sea Bass/00003", "Shrimp/00003", "Shrimp/00005"]

    # One image per forward pass, as predict runs: the very same probabilities, so equal numbers.
    stage = evaluate(tiny(train={"batch_size": 1}), project, progress=False)
    assert {k: metrics[k] for k in METRIC_KEYS} == {k: stage[k] for k in METRIC_KEYS}
    # Every number eval.json and metrics.json share is equal (eval.json adds training-size scores).
    shared = set(metrics) & set(stage)
    assert len(shared) == len(METRIC_KEYS) and all(metrics[k] == stage[k] for k in shared)
    stage_per_image = pd.read_csv(project.plots_dir / "eval" / "per_image.csv").set_index("id")
    columns = ["species", "iou", "dice", "precision", "recall", "boundary_f1"]
    ours = per_image.set_index("id")[columns]
    pd.testing.assert_frame_equal(ours, stage_per_image.loc[ours.index, columns])
    per_species = pd.read_csv(out / "per_species.csv")
    pd.testing.assert_frame_equal(per_species, pd.read_csv(project.plots_dir / "eval" / "per_species.csv"))
    # Batched, the convolutions round differently (probabilities ~1e-7 apart): a pixel at the
    # threshold may flip, nothing more.
    batched = evaluate(trained.params, project, progress=False)
    assert trained.params.train.batch_size > 1
    for key in METRIC_KEYS:
        assert batched[key] == pytest.approx(metrics[key], abs=1e-5), key
    # Not a degenerate comparison: the tiny model finds some fish and misses some.
    assert 0.0 < metrics["iou"] < 1.0 and per_image["iou"].nunique() > 1


def test_numbers_are_the_score_of_predicts_masks(trained, real_pairs, tmp_path):
    out = tmp_path / "scores"
    assert _evaluate_folder(trained, real_pairs / "images", real_pairs / "masks", out) == 0
    per_image = pd.read_csv(out / "per_image.csv").set_index("image")
    predicted = tmp_path / "predicted"
    model = str(trained.paths.model_dir)
    assert (
        predict_main([str(real_pairs / "images"), "--model", model, "--out", str(predicted), "--no-progress"])
        == 0
    )
    rows = pd.read_csv(predicted / "predictions.csv", keep_default_na=False)
    assert len(rows) == len(per_image) == 4
    for row in rows.itertuples():
        truth, _ = read_mask(Path(row.input.replace("/images/", "/masks/")).with_suffix(".png"))
        mask = cv2.imread(row.mask, cv2.IMREAD_GRAYSCALE)
        counts, bf1 = score_image((mask / 255.0).astype(np.float32), truth, 0.5, 2)
        tp, fp, fn, _ = counts
        assert per_image.loc[row.input, "iou"] == pytest.approx(tp / (tp + fp + fn), abs=1e-6)
        assert per_image.loc[row.input, "boundary_f1"] == pytest.approx(bf1, abs=1e-6)


def test_missing_and_unreadable_pairs_are_listed_and_exit_1(trained, real_pairs, tmp_path, caplog):
    root = tmp_path / "data"
    shutil.copytree(real_pairs, root)
    photo = sorted((root / "images" / "Shrimp").glob("*.jpg"))[0]
    write(root / "images" / "Shrimp" / "lonely.jpg", photo.read_bytes())  # no mask
    write(
        root / "masks" / "Shrimp" / "orphan.png",
        (root / "masks" / "Shrimp" / f"{photo.stem}.png").read_bytes(),
    )
    (root / "masks" / "Sea Bass" / "00001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    small = np.zeros((10, 12), np.uint8)
    assert cv2.imwrite(str(root / "masks" / "Sea Bass" / "00003.png"), small)  # not the image's size
    out = tmp_path / "out"
    assert _evaluate_folder(trained, root / "images", root / "masks", out) == 1

    problems = pd.read_csv(out / "problems.csv")
    assert sorted(problems["kind"]) == [
        "image without mask",
        "mask without image",
        "size mismatch",
        "unreadable mask",
    ]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for name in ("lonely.jpg", "orphan.png", "Sea Bass/00001.png", "Sea Bass/00003.png"):
        assert any(name in line for line in errors), (name, errors)
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["n_images"] == 2 and metrics["n_problems"] == 4
    assert sorted(pd.read_csv(out / "per_image.csv")["id"]) == ["Shrimp/00003", "Shrimp/00005"]
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


def test_flat_folders_have_no_species(trained, real_pairs, tmp_path):
    flat = tmp_path / "flat"
    for side, suffix in (("images", ".jpg"), ("masks", ".png")):
        for i, src in enumerate(sorted((real_pairs / side / "Shrimp").glob(f"*{suffix}"))):
            write(flat / side / f"fish{i}{suffix}", src.read_bytes())
    out = tmp_path / "out"
    assert _evaluate_folder(trained, flat / "images", flat / "masks", out, "--threshold", "0.4") == 0
    per_image = pd.read_csv(out / "per_image.csv", keep_default_na=False)
    assert per_image["id"].tolist() == ["fish0", "fish1"] and set(per_image["species"]) == {""}
    assert sorted(p.name for p in out.iterdir()) == ["metrics.json", "per_image.csv", "problems.csv"]


def test_usage_errors_exit_2_and_write_nothing(trained, real_pairs, tmp_path, caplog):
    out = tmp_path / "out"
    images, masks = real_pairs / "images", real_pairs / "masks"
    assert main([str(images), str(masks), "--model", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a model directory" in caplog.text
    assert _evaluate_folder(trained, tmp_path / "missing", masks, out) == 2
    assert "not a folder" in caplog.text
    (tmp_path / "empty").mkdir()
    assert _evaluate_folder(trained, tmp_path / "empty", masks, out) == 2
    assert "no image/mask pairs" in caplog.text
    assert _evaluate_folder(trained, images, images, out) == 2
    assert not out.exists()


def test_pairs_by_relative_path(tmp_path):
    png = cv2.imencode(".png", np.zeros((4, 4), np.uint8))[1].tobytes()
    for rel in ("images/A/x.jpg", "images/A/y.png", "images/B/x.jpg", "images/masks/A/x.png"):
        write(tmp_path / rel, png)
    for rel in ("images/masks/B/x.png", "images/masks/A/y.png", "images/masks/A/y.bmp"):
        write(tmp_path / rel, png)
    # The masks folder inside the images folder is not scanned for images.
    found = find_pairs(tmp_path / "images", tmp_path / "images" / "masks")
    assert [(p.name, p.species) for p in found.pairs] == [("A/x", "A"), ("B/x", "B")]
    assert [p.kind for p in found.problems] == ["ambiguous mask"]
    assert "y.bmp" in found.problems[0].detail and "y.png" in found.problems[0].detail


def test_pixel_cap_lists_the_photos_over_it(trained, real_pairs, tmp_path, caplog):
    out = tmp_path / "out"
    # The photos are 590x445 = 262,550 pixels: all over this cap, so nothing can be scored.
    code = _evaluate_folder(
        trained, real_pairs / "images", real_pairs / "masks", out, "--max-pixels", "200000"
    )
    assert code == 2 and not out.exists()
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert sum("unreadable image" in line and "--max-pixels" in line for line in errors) == 4
    assert "none of the 4 pair(s) could be scored" in errors[-1]
