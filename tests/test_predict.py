"""`python -m fishseg.predict` on real image files with a model the train stage wrote."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.models import infer_signature

from fishseg.dataset.index import read_rgb
from fishseg.model.inference import InferenceModel, load_inference_model, predict_image
from fishseg.params import Params
from fishseg.serve.predict import Input, collect_inputs, main, output_names
from fishseg.tracking import store as tracking

SIZES = {"a.png": (45, 61), "b.jpg": (120, 90), "deep/a.png": (33, 200), "deep/c.bmp": (64, 64)}


@pytest.fixture(scope="module")
def model_dir(trained):
    """``models/model`` from a tiny real training run."""
    return trained.paths.model_dir


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Blue photos with a light ellipse, of several sizes and formats, one nested, two sharing a stem."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(1)
    for name, (h, w) in SIZES.items():
        image = (np.array([160, 60, 30]) + rng.normal(0, 10, (h, w, 3))).clip(0, 255).astype(np.uint8)
        cv2.ellipse(image, (w // 2, h // 2), (w // 4, h // 5), 20, 0, 360, (120, 170, 200), -1)
        (root / name).parent.mkdir(exist_ok=True)
        assert cv2.imwrite(str(root / name), image)  # BGR on disk, as any photo
    (root / "notes.txt").write_text("not an image, not an input")
    return root


def _mask(path):
    mask = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert mask is not None and mask.ndim == 2 and mask.dtype == np.uint8
    return mask


def test_folder_gives_masks_and_overlays_at_each_input_size(model_dir, photos, tmp_path):
    out = tmp_path / "out"
    assert main([str(photos), "--model", str(model_dir), "--out", str(out), "--no-progress"]) == 0

    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert sorted(table["input"]) == sorted(str(photos / n) for n in SIZES)
    masks = {row.input: row.mask for row in table.itertuples()}
    # the folder structure is kept: deep/a.png does not collide with a.png
    for name in SIZES:
        assert masks[str(photos / name)] == str(out / "masks" / Path(name).with_suffix(".png"))
    model, pre = load_inference_model(model_dir)
    for row in table.itertuples():
        h, w = SIZES[str(row.input).removeprefix(f"{photos}/")]
        mask = _mask(row.mask)
        assert mask.shape == (h, w) and (row.width, row.height) == (w, h)
        assert set(np.unique(mask)) <= {0, 255}
        assert row.fg_frac == pytest.approx((mask > 0).mean(), abs=1e-6)
        overlay = cv2.imread(row.overlay)
        assert overlay.shape == (h, w, 3)
        # the same pixels as the library call the evaluate stage trusts
        expected = predict_image(model, read_rgb(Path(row.input)), pre["image_size"])
        assert np.array_equal(mask > 0, expected >= 0.5)


def test_unreadable_inputs_are_named_and_skipped(model_dir, photos, tmp_path, caplog):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    empty = tmp_path / "empty.jpg"
    empty.touch()
    out = tmp_path / "out"
    args = [
        str(photos / "a.png"),
        str(broken),
        str(tmp_path / "missing.jpg"),
        str(empty),
        str(photos / "b.jpg"),
    ]
    assert main([*args, "--model", str(model_dir), "--out", str(out), "--no-progress"]) == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    for bad in (broken, tmp_path / "missing.jpg", empty):
        assert any(f"{bad}: skipped" in line for line in errors), (bad, errors)
    assert sorted(p.name for p in (out / "masks").iterdir()) == ["a.png", "b.png"]
    table = pd.read_csv(out / "predictions.csv", keep_default_na=False)
    assert table["input"].tolist() == args  # in the order given
    assert (table["error"] != "").tolist() == [False, True, True, True, False]


def test_usage_errors_exit_2(model_dir, photos, tmp_path, caplog):
    out = str(tmp_path / "out")
    assert main([str(photos), "--model", str(tmp_path / "nowhere"), "--out", out]) == 2
    assert "nowhere" in caplog.text and "not a model directory" in caplog.text
    (tmp_path / "no_images").mkdir()
    assert main([str(tmp_path / "no_images"), "--model", str(model_dir), "--out", out]) == 2
    assert "no images found" in caplog.text
    for argv in (
        [str(photos), "--model", str(model_dir)],
        ["--out", out],
        [str(photos), "--out", out, "--threshold", "1.5"],
    ):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2


def test_inputs_skip_the_output_folder_and_duplicates(photos, tmp_path):
    shutil.copytree(photos, tmp_path / "photos")
    photos = tmp_path / "photos"
    out = photos / "predictions"  # a rerun must not segment its own masks
    (out / "masks").mkdir(parents=True)
    cv2.imwrite(str(out / "masks" / "a.png"), np.zeros((4, 4), np.uint8))
    found = collect_inputs([str(photos), str(photos / "a.png")], exclude=out)
    assert sorted(i.path.relative_to(photos).as_posix() for i in found) == sorted(SIZES)
    assert sorted(i.name for i in found) == ["a", "b", "deep/a", "deep/c"]  # relative to the folder given
    # a file given by itself is named by its stem; names that one file system would merge get -2, -3
    assert collect_inputs([str(photos / "deep" / "a.png")])[0].name == "a"
    items = [
        Input(photos / n, n.removesuffix(".png"))
        for n in ("x.png", "X.png", "d/x.png", "D/x.png", "e\u0301.png", "\u00e9.png")
    ]
    assert output_names(items) == ["x", "X-2", "d/x", "D/x-2", "e\u0301", "\u00e9-2"]


def test_mlflow_model_uri(tmp_path, photos):
    """``runs:/`` and ``models:/`` URIs load the logged pt2 model; its input size comes from the signature."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    params = Params.model_validate({"mlflow": {"log_model": True}})
    experiment_id = tracking.setup(params.mlflow, tmp_path)  # the project's default SQLite store
    torch.manual_seed(0)
    model = InferenceModel(torch.nn.Conv2d(3, 1, 3, padding=1), [0.6, 0.3, 0.2], [0.1, 0.1, 0.1]).eval()
    example = np.random.default_rng(0).uniform(0, 255, (2, 3, 64, 96)).astype(np.float32)
    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        info = mlflow.pytorch.log_model(
            model, name="model", signature=signature, input_example=example, pip_requirements=["torch"]
        )

    for uri in (f"runs:/{run.info.run_id}/model", info.model_uri):
        out = tmp_path / uri.split(":")[0]
        argv = [
            str(photos / "b.jpg"),
            "--model",
            uri,
            "--out",
            str(out),
            "--root",
            str(tmp_path),
            "--no-progress",
        ]
        assert main(argv) == 0
        expected = predict_image(model, read_rgb(photos / "b.jpg"), (64, 96)) >= 0.5
        assert np.array_equal(_mask(out / "masks" / "b.png") > 0, expected)

    assert (
        main(
            [
                str(photos),
                "--model",
                "runs:/0123abc/model",
                "--out",
                str(tmp_path / "x"),
                "--root",
                str(tmp_path),
            ]
        )
        == 2
    )
