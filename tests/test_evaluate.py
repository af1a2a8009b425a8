import json

import numpy as np
import pandas as pd
import pytest
import torch

from fishseg.dataset.arrays import load_split
from fishseg.evaluation.evaluate import (
    HEADLINE,
    boundary_f1,
    confusion_rows,
    counts_from_probs,
    evaluate,
    predict_probs,
)
from fishseg.model.forward import Forward
from fishseg.model.inference import load_inference_model

from .helpers import tiny


def test_evaluate_writes_flat_metrics_tables_and_predictions(trained):
    params, paths = trained.params, trained.paths
    metrics = evaluate(params, paths, progress=False)
    on_disk = json.loads((paths.metrics_dir / "eval.json").read_text())
    assert on_disk == metrics
    assert all(isinstance(metrics[k], float) for k in (*HEADLINE, "boundary_f1", "iou_train_size"))
    assert all(not isinstance(v, dict | list) for v in metrics.values())  # flat: one column each
    # Two epochs on the blobs find most of each one, with some spill: what this data reaches.
    assert metrics["iou"] > 0.25 and metrics["recall"] > 0.6 and metrics["pixel_accuracy"] > 0.8
    # Dataset Dice and IoU come from the same summed counts.
    assert metrics["dice"] == pytest.approx(2 * metrics["iou"] / (1 + metrics["iou"]), abs=1e-5)
    # Full resolution (twice the training size here) moves IoU only at the edges.
    assert metrics["iou_train_size"] == pytest.approx(metrics["iou"], abs=0.05)
    per_image = pd.read_csv(paths.plots_dir / "eval" / "per_image.csv")
    assert len(per_image) == metrics["n_images"] == 6
    assert per_image["iou"].mean() == pytest.approx(metrics["iou_per_image"], abs=1e-5)
    per_species = pd.read_csv(paths.plots_dir / "eval" / "per_species.csv")
    assert set(per_species["species"]) == {"Trout", "Shrimp"} and per_species["n_images"].sum() == 6
    worst = pd.read_csv(paths.plots_dir / "eval" / "worst_images.csv")
    assert worst["iou"].tolist() == sorted(per_image["iou"])[: len(worst)]
    confusion = pd.read_csv(paths.plots_dir / "eval" / "confusion.csv")
    assert abs(len(confusion) - 1000) <= 2
    with np.load(paths.predictions_npz) as data:
        assert data["probs"].shape == (6, 32, 32) and data["counts"].shape == (6, 4)
        # As scored, so the plot stage draws exactly the pixels counted here.
        assert data["probs"].dtype == np.float32


def test_tta_changes_predictions_but_not_the_contract(trained):
    plain = evaluate(trained.params, trained.paths, progress=False)
    with_tta = evaluate(tiny(evaluate={"tta": True}), trained.paths, progress=False)
    assert set(with_tta) == set(plain)
    assert with_tta != plain


def test_evaluate_scores_what_the_packaged_model_predicts(trained):
    """The shared forward pass on the packaged model's parts = the packaged model itself."""
    model, _ = load_inference_model(trained.paths.model_dir)
    test = load_split(trained.paths, "test")
    forward = Forward(model.normalize, torch.device("cpu"))
    probs = predict_probs(model.net, forward, test, batch_size=4, tta=False, progress=False)
    with torch.no_grad():
        packaged = model(torch.from_numpy(np.asarray(test.images).transpose(0, 3, 1, 2).copy()).float())
    np.testing.assert_allclose(probs, packaged[:, 0].numpy(), atol=1e-6)


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
