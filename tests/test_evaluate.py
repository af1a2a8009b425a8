import json

import numpy as np
import pandas as pd
import pytest

from fishseg.evaluation.evaluate import HEADLINE, boundary_f1, confusion_rows, counts_from_probs, evaluate
from fishseg.training.train import train

from .conftest import tiny, write_prepared


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    params = tiny()
    paths = write_prepared(tmp_path_factory.mktemp("evaluate"))
    train(params, paths, progress=False)
    return params, paths


def test_evaluate_writes_flat_metrics_tables_and_predictions(trained):
    params, paths = trained
    metrics = evaluate(params, paths, progress=False)
    on_disk = json.loads((paths.metrics_dir / "eval.json").read_text())
    assert on_disk == metrics
    for key in (*HEADLINE, "boundary_f1", "pixel_accuracy", "iou_train_size", "dice_train_size"):
        assert isinstance(metrics[f"test_{key}"], float) and 0.0 <= metrics[f"test_{key}"] <= 1.0, key
    assert all(not isinstance(v, dict | list) for v in metrics.values())  # flat: one column each
    # The file's order is the column order of `dvc exp show`: test IoU and Dice open it.
    assert list(json.loads((paths.metrics_dir / "eval.json").read_text()))[:2] == ["test_iou", "test_dice"]
    per_image = pd.read_csv(paths.plots_dir / "eval" / "per_image.csv")
    assert len(per_image) == metrics["test_images"] == 6
    per_species = pd.read_csv(paths.plots_dir / "eval" / "per_species.csv")
    assert set(per_species["species"]) == {"Trout", "Shrimp"} and per_species["n_images"].sum() == 6
    worst = pd.read_csv(paths.plots_dir / "eval" / "worst_images.csv")
    assert worst["iou"].tolist() == sorted(per_image["iou"])[: len(worst)]
    confusion = pd.read_csv(paths.plots_dir / "eval" / "confusion.csv")
    assert abs(len(confusion) - 1000) <= 2
    with np.load(paths.predictions_npz) as data:
        assert data["probs"].shape == (6, 32, 32) and data["counts"].shape == (6, 4)


def test_tta_changes_predictions_but_not_the_contract(trained):
    params, paths = trained
    plain = evaluate(params, paths, progress=False)
    tta = params.model_copy(update={"evaluate": params.evaluate.model_copy(update={"tta": True})})
    with_tta = evaluate(tta, paths, progress=False)
    assert set(with_tta) == set(plain)
    assert with_tta != plain


def test_counts_and_boundary_f1_by_hand():
    truth = np.zeros((1, 10, 10), np.uint8)
    truth[0, 2:8, 2:8] = 1
    probs = truth.astype(np.float32) * 0.9
    assert counts_from_probs(probs, truth, 0.5).tolist() == [[36, 0, 0, 64]]
    assert boundary_f1(truth[0], truth[0], 0) == 1.0
    shifted = np.roll(truth[0], 1, axis=1)
    assert boundary_f1(shifted, truth[0], 0) < 1.0 <= boundary_f1(shifted, truth[0], 1) + 1e-9
    assert boundary_f1(np.zeros((5, 5)), np.zeros((5, 5)), 1) == 1.0
    assert boundary_f1(np.zeros((5, 5)), truth[0, :5, :5], 1) == 0.0


def test_confusion_rows_are_proportional():
    rows = confusion_rows(np.array([[100, 50, 50, 800]]))
    counts = rows.value_counts().to_dict()
    assert counts[("fish", "fish")] == 100 and counts[("background", "background")] == 800
    assert counts[("background", "fish")] == 50 and counts[("fish", "background")] == 50
