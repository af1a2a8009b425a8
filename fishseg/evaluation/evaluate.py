"""Score the trained model on the test split.

Predictions are made at the training size and resized back to each image's original
size: the headline numbers (dataset "micro" IoU, mean per-image IoU, Dice, precision,
recall, pixel accuracy, boundary F1) are at full resolution, with IoU and Dice at the
training size beside them. ``metrics/eval.json`` stays flat and ordered, test IoU and
Dice first, so ``dvc exp show`` and ``dvc metrics diff`` open with them; its names are
those of the MLflow metrics. Per-species, per-image, confusion and worst-image tables
go to ``plots/eval/``; the test probabilities to a compressed file the plot stage
draws from.
"""

from __future__ import annotations

import logging
from typing import Any

import cv2
import numpy as np
import pandas as pd
import torch

from fishseg.dataset.arrays import PreparedSplit, load_split, read_index
from fishseg.dataset.index import read_mask
from fishseg.device import pin_cpu_runtime, resolve_precision, select_device
from fishseg.errors import FishsegError
from fishseg.evaluation.metrics import scores, summarize
from fishseg.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from fishseg.model.forward import Forward
from fishseg.model.inference import load_inference_model
from fishseg.model.resize import to_original_size
from fishseg.params import Params
from fishseg.paths import Paths
from fishseg.progress import progress_bar
from fishseg.tracking.runs import read_run_id

log = logging.getLogger(__name__)

# Full-resolution scores in the order of metrics/eval.json (and of `dvc exp show`'s columns).
HEADLINE = ("iou", "dice", "iou_per_image", "dice_per_image", "precision", "recall")


def per_image_table(ids: list[str], species: list[str], counts: np.ndarray) -> pd.DataFrame:
    each = scores(counts)
    return pd.DataFrame(
        {
            "id": ids,
            "species": species,
            "iou": each["iou"].round(6),
            "dice": each["dice"].round(6),
            "precision": each["precision"].round(6),
            "recall": each["recall"].round(6),
        }
    )


def per_species_table(species: list[str], counts: np.ndarray) -> pd.DataFrame:
    rows = []
    species_arr = np.asarray(species)
    for name in sorted(set(species)):
        sel = counts[species_arr == name]
        total = scores(sel.sum(axis=0))
        rows.append(
            {
                "species": name,
                "n_images": len(sel),
                "iou": round(float(total["iou"][0]), 6),
                "dice": round(float(total["dice"][0]), 6),
            }
        )
    return pd.DataFrame(rows, columns=["species", "n_images", "iou", "dice"])


@torch.no_grad()
def predict_probs(
    net: torch.nn.Module,
    forward: Forward,
    split: PreparedSplit,
    *,
    batch_size: int,
    tta: bool,
    progress: bool,
) -> np.ndarray:
    """Fish probabilities (N,H,W) at the training size; with ``tta``, averaged over flips."""
    net.eval()
    out = np.empty(split.masks.shape, dtype=np.float32)
    views = [(), (3,), (2,)] if tta else [()]
    for start in progress_bar(
        range(0, len(split), batch_size), desc="predict", unit="batch", enabled=progress
    ):
        images = torch.from_numpy(
            np.asarray(split.images[start : start + batch_size]).transpose(0, 3, 1, 2).copy()
        )
        total = torch.zeros((images.shape[0], 1, *images.shape[2:]), device=forward.device)
        for dims in views:
            # Normalisation is per pixel, so flipping before it equals flipping after.
            probs = torch.sigmoid(forward(net, torch.flip(images, dims) if dims else images))
            total += torch.flip(probs, dims) if dims else probs
        out[start : start + batch_size] = (total / len(views))[:, 0].cpu().numpy()
    return out


def counts_from_probs(probs: np.ndarray, masks: np.ndarray, threshold: float) -> np.ndarray:
    """Per-image ``[tp, fp, fn, tn]`` for probability maps against {0,1} masks."""
    pred = probs >= threshold
    truth = masks.astype(bool)
    axes = tuple(range(1, pred.ndim))
    tp = (pred & truth).sum(axes)
    fp = (pred & ~truth).sum(axes)
    fn = (~pred & truth).sum(axes)
    tn = (~pred & ~truth).sum(axes)
    return np.stack([tp, fp, fn, tn], axis=-1).astype(np.int64)


def _boundary(mask: np.ndarray) -> np.ndarray:
    eroded = cv2.erode(
        mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderType=cv2.BORDER_CONSTANT, borderValue=0
    )
    return mask.astype(bool) & ~eroded.astype(bool)


def boundary_f1(pred: np.ndarray, truth: np.ndarray, tolerance: int) -> float:
    """F1 of boundary pixels matched within ``tolerance`` pixels (1.0 when both are empty)."""
    pb, tb = _boundary(pred), _boundary(truth)
    if not pb.any() and not tb.any():
        return 1.0
    if not pb.any() or not tb.any():
        return 0.0
    # Distance of every pixel to the nearest boundary pixel of the other mask.
    dist_to_truth = cv2.distanceTransform((~tb).astype(np.uint8), cv2.DIST_L2, 3)
    dist_to_pred = cv2.distanceTransform((~pb).astype(np.uint8), cv2.DIST_L2, 3)
    precision = float((dist_to_truth[pb] <= tolerance).mean())
    recall = float((dist_to_pred[tb] <= tolerance).mean())
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def score_image(
    prob: np.ndarray, truth: np.ndarray, threshold: float, tolerance: int
) -> tuple[np.ndarray, float]:
    """``[tp, fp, fn, tn]`` and boundary F1 of one probability map against its {0,1} mask, same size."""
    counts = counts_from_probs(prob[None], truth[None], threshold)[0]
    return counts, boundary_f1(prob >= threshold, truth, tolerance)


def full_resolution_scores(
    paths: Paths,
    mask_files: list[str],
    probs: np.ndarray,
    threshold: float,
    tolerance: int,
    progress: bool,
    max_pixels: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Counts and boundary F1 per image, with predictions resized back to each original mask."""
    counts = np.zeros((len(mask_files), 4), dtype=np.int64)
    bf1 = np.zeros(len(mask_files))
    for i, rel in enumerate(progress_bar(mask_files, desc="full-res", unit="img", enabled=progress)):
        try:
            truth, _ = read_mask(paths.root / rel, max_pixels)
        except (OSError, ValueError) as exc:
            raise FishsegError(f"{rel}: cannot read the test mask ({exc}); rerun dvc repro split") from None
        counts[i], bf1[i] = score_image(to_original_size(probs[i], truth.shape), truth, threshold, tolerance)
    return counts, bf1


def headline_metrics(counts: np.ndarray, bf1: np.ndarray) -> dict[str, Any]:
    """The headline numbers of per-image full-resolution counts and boundary F1s, rounded."""
    summary = summarize(counts)
    metrics: dict[str, Any] = {k: round(summary[k], 6) for k in HEADLINE}
    metrics["boundary_f1"] = round(float(np.mean(bf1)), 6) if len(bf1) else 0.0
    metrics["pixel_accuracy"] = round(summary["pixel_accuracy"], 6)
    metrics["n_images"] = len(counts)
    return metrics


def confusion_rows(counts: np.ndarray, resolution: int = 1000) -> pd.DataFrame:
    """Pixel confusion as ``actual, predicted`` rows for DVC's confusion template.

    DVC counts rows, so each cell gets rows in proportion to its share of all pixels
    (``resolution`` rows in total: per mille by default).
    """
    tp, fp, fn, tn = (int(v) for v in counts.sum(axis=0))
    total = max(tp + fp + fn + tn, 1)
    cells = [
        ("fish", "fish", tp),
        ("background", "fish", fp),
        ("fish", "background", fn),
        ("background", "background", tn),
    ]
    rows = []
    for actual, predicted, n in cells:
        rows += [(actual, predicted)] * round(resolution * n / total)
    return pd.DataFrame(rows, columns=["actual", "predicted"])


def evaluate(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Score ``models/model`` on the test split and write metrics, tables and predictions."""
    ep = params.evaluate
    test = load_split(paths, "test")
    if len(test) == 0:
        raise FishsegError("the test split is empty; raise split.test or add data")
    pin_cpu_runtime(params.train.reproducible)
    device = select_device(params.train.device)
    model, _ = load_inference_model(paths.model_dir, device)
    forward = Forward(model.normalize, device, resolve_precision(params.train.precision, device))
    probs = predict_probs(
        model.net, forward, test, batch_size=params.train.batch_size, tta=ep.tta, progress=progress
    )
    index = read_index(paths).set_index("id").loc[test.ids]
    species = index["species"].tolist()

    small = counts_from_probs(probs, np.asarray(test.masks), ep.threshold)
    full, bf1 = full_resolution_scores(
        paths,
        index["mask"].tolist(),
        probs,
        ep.threshold,
        ep.boundary_tolerance,
        progress,
        params.data.max_image_pixels,
    )
    metrics = {f"test_{k}": v for k, v in headline_metrics(full, bf1).items() if k != "n_images"}
    small_summary = summarize(small)
    metrics["test_iou_train_size"] = round(small_summary["iou"], 6)
    metrics["test_dice_train_size"] = round(small_summary["dice"], 6)
    metrics["test_images"] = len(test)

    per_image = per_image_table(test.ids, species, full)
    per_image["boundary_f1"] = bf1.round(6)
    per_species = per_species_table(species, full)
    eval_dir = paths.plots_dir / "eval"
    atomic_write_json(paths.metrics_dir / "eval.json", metrics, sort_keys=False)
    atomic_write_text(eval_dir / "per_image.csv", per_image.to_csv(index=False))
    atomic_write_text(eval_dir / "per_species.csv", per_species.to_csv(index=False))
    atomic_write_text(eval_dir / "confusion.csv", confusion_rows(full).to_csv(index=False))
    worst = per_image.sort_values(["iou", "id"]).head(ep.worst_k)
    atomic_write_text(eval_dir / "worst_images.csv", worst.to_csv(index=False))
    # float32 as scored: the plot stage resizes these to draw exactly the pixels counted here.
    _save_predictions(paths, test.ids, probs, full)

    _log_to_mlflow(params, paths, metrics, per_species)
    if params.mlflow.register_model and not full[:, [0, 2]].any():
        # No fish in the test masks: an empty prediction scores IoU 1.0 there and would be
        # crowned for good. The split stage refuses such a split; this holds for older data too.
        log.warning(
            "the test masks hold no fish pixels: the model is not registered (test IoU means nothing)"
        )
    elif params.mlflow.register_model:
        from fishseg.tracking.registry import maybe_register

        maybe_register(params, read_run_id(paths.run_json), metrics["test_iou"], root=paths.root)
    return metrics


def _save_predictions(paths: Paths, ids: list[str], probs: np.ndarray, counts: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=np.asarray(ids), probs=probs, counts=counts)
    atomic_write_bytes(paths.predictions_npz, buffer.getvalue())


def _log_to_mlflow(params: Params, paths: Paths, metrics: dict[str, Any], per_species: pd.DataFrame) -> None:
    import mlflow

    from fishseg.tracking import store as tracking

    experiment_id = tracking.setup(params.mlflow, paths.root)
    with tracking.reopen_run(read_run_id(paths.run_json), experiment_id, paths.root):
        mlflow.log_metrics({k: v for k, v in metrics.items() if k != "test_images"})
        mlflow.log_metrics(
            {f"test_iou.{r.species.replace(' ', '_')}": r.iou for r in per_species.itertuples()}
        )
        mlflow.log_metrics(
            {f"test_dice.{r.species.replace(' ', '_')}": r.dice for r in per_species.itertuples()}
        )
        for name in ("per_species.csv", "per_image.csv", "worst_images.csv"):
            mlflow.log_artifact(str(paths.plots_dir / "eval" / name), artifact_path="eval")
        mlflow.log_artifact(str(paths.metrics_dir / "eval.json"), artifact_path="eval")
