import numpy as np
import pytest
import torch

from fishseg.evaluation.metrics import EpochMeter, confusion_counts, scores, summarize


def _logits(pred: np.ndarray) -> torch.Tensor:
    return torch.tensor(np.where(pred, 10.0, -10.0), dtype=torch.float32)[:, None]


def test_confusion_counts_by_hand():
    pred = np.array([[[1, 1], [0, 0]], [[0, 0], [0, 0]]], bool)
    truth = np.array([[[1, 0], [1, 0]], [[0, 0], [0, 0]]], np.float32)
    counts = confusion_counts(_logits(pred), torch.tensor(truth)[:, None])
    assert counts.tolist() == [[1, 1, 1, 1], [0, 0, 0, 4]]


def test_scores_and_micro_vs_per_image():
    counts = np.array([[1, 1, 1, 1], [0, 0, 0, 4]])
    out = summarize(counts)
    assert out["iou"] == pytest.approx(1 / 3)
    # the second image is empty and predicted empty: perfect, not undefined
    assert out["iou_per_image"] == pytest.approx((1 / 3 + 1) / 2)
    assert out["dice"] == pytest.approx(2 / 4)
    assert out["precision"] == pytest.approx(0.5)
    assert out["recall"] == pytest.approx(0.5)
    assert out["pixel_accuracy"] == pytest.approx(6 / 8)
    assert scores(np.array([0, 3, 0, 1]))["iou"][0] == 0.0


def test_epoch_meter_matches_summarize():
    rng = np.random.default_rng(0)
    meter = EpochMeter()
    all_counts = []
    for _ in range(3):
        counts = torch.tensor(rng.integers(0, 50, size=(4, 4)))
        meter.update(torch.tensor(0.5), counts)
        all_counts.append(counts.numpy())
    res = meter.result()
    ref = summarize(np.concatenate(all_counts))
    assert res["loss"] == pytest.approx(0.5)
    assert res["iou"] == pytest.approx(ref["iou"])
    assert res["iou_per_image"] == pytest.approx(ref["iou_per_image"])
