"""Score the trained model on the test split.

Dataset ("micro") IoU, mean per-image IoU, Dice, precision, recall and pixel accuracy
go to ``metrics/eval.json``; per-species and per-image scores to ``plots/eval/``; the
test probabilities to a compressed file the plot stage draws from.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np
import pandas as pd

from fishseg.data import EpochSampler, Normalizer, SegmentationDataset, make_loader
from fishseg.device import select_device
from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_write_bytes, atomic_write_json, atomic_write_text
from fishseg.inference import read_preprocessing
from fishseg.metrics import scores, summarize
from fishseg.model import load_model
from fishseg.params import Params
from fishseg.paths import Paths
from fishseg.prepared import load_split, read_index
from fishseg.train import evaluate_loader, resolve_precision

log = logging.getLogger(__name__)

HEADLINE = ("iou", "iou_per_image", "dice", "dice_per_image", "precision", "recall", "pixel_accuracy")


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


def evaluate(params: Params, paths: Paths, *, progress: bool = True) -> dict[str, Any]:
    """Score ``models/model`` on the test split and write metrics, tables and predictions."""
    test = load_split(paths, "test")
    if len(test) == 0:
        raise FishsegError("the test split is empty; raise split.test or add data")
    device = select_device(params.train.device)
    pre = read_preprocessing(paths.model_dir)
    model = load_model(paths.model_dir, device)
    normalizer = Normalizer(pre["mean"], pre["std"]).to(device)
    loader = make_loader(
        SegmentationDataset(test),
        EpochSampler(len(test), shuffle=False, seed=0),
        batch_size=params.train.batch_size,
        num_workers=0,
        pin_memory=device.type == "cuda",
    )
    _, counts, probs = evaluate_loader(
        model,
        loader,
        loss_fn=None,
        normalizer=normalizer,
        device=device,
        amp_dtype=resolve_precision(params.train.precision, device),
        threshold=params.evaluate.threshold,
        keep_probs=True,
        progress=progress,
    )
    index = read_index(paths).set_index("id")
    species = index.loc[test.ids, "species"].tolist()
    summary = summarize(counts)
    metrics = {k: round(summary[k], 6) for k in HEADLINE}
    metrics["n_images"] = len(test)

    per_image = per_image_table(test.ids, species, counts)
    per_species = per_species_table(species, counts)
    eval_dir = paths.plots_dir / "eval"
    atomic_write_json(paths.metrics_dir / "eval.json", metrics)
    atomic_write_text(eval_dir / "per_image.csv", per_image.to_csv(index=False))
    atomic_write_text(eval_dir / "per_species.csv", per_species.to_csv(index=False))
    _save_predictions(paths, test.ids, probs, counts)

    _log_to_mlflow(params, paths, metrics, per_species)
    return metrics


def _save_predictions(paths: Paths, ids: list[str], probs: np.ndarray, counts: np.ndarray) -> None:
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, ids=np.asarray(ids), probs=probs, counts=counts)
    atomic_write_bytes(paths.predictions_npz, buffer.getvalue())


def _log_to_mlflow(params: Params, paths: Paths, metrics: dict[str, Any], per_species: pd.DataFrame) -> None:
    import mlflow

    from fishseg import tracking

    run_id = json.loads(paths.run_json.read_text())["run_id"] if paths.run_json.is_file() else None
    experiment_id = tracking.setup(params.mlflow, paths.root)
    with tracking.reopen_run(run_id, experiment_id, paths.root):
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics.items() if k != "n_images"})
        mlflow.log_metrics(
            {f"test_iou.{r.species.replace(' ', '_')}": r.iou for r in per_species.itertuples()}
        )
        mlflow.log_artifact(str(paths.plots_dir / "eval" / "per_species.csv"), artifact_path="eval")
        mlflow.log_artifact(str(paths.plots_dir / "eval" / "per_image.csv"), artifact_path="eval")
        mlflow.log_artifact(str(paths.metrics_dir / "eval.json"), artifact_path="eval")
