"""The plot stage's work: read what the earlier stages wrote and draw every figure."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from fishseg.dataset.arrays import load_split, read_index
from fishseg.dataset.index import read_mask, read_rgb
from fishseg.errors import FishsegError
from fishseg.model.resize import to_original_size
from fishseg.params import Params
from fishseg.paths import Paths
from fishseg.report import charts as plots
from fishseg.tracking.runs import read_run_id

log = logging.getLogger(__name__)


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        return pd.read_csv(path)
    except FileNotFoundError:
        raise FishsegError(f"{path}: missing; run the stage that writes it (dvc repro)") from None


def load_predictions(paths: Paths) -> dict[str, np.ndarray]:
    try:
        with np.load(paths.predictions_npz) as data:
            return {k: data[k] for k in data.files}
    except FileNotFoundError:
        raise FishsegError(
            f"{paths.predictions_npz}: missing; run the evaluate stage (dvc repro evaluate)"
        ) from None


def original_pair(
    paths: Paths, row: pd.Series, max_pixels: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """A test pair as the photo and {0,1} mask under ``data/raw`` that the evaluate stage scored."""
    try:
        image = read_rgb(paths.root / row["image"], max_pixels)
        return image, read_mask(paths.root / row["mask"], max_pixels)[0]
    except (OSError, ValueError) as exc:
        raise FishsegError(
            f"{row['image']} / {row['mask']}: cannot read the test pair ({exc}); rerun dvc repro split"
        ) from None


def _prediction_grids(
    params: Params, paths: Paths, index: pd.DataFrame, preds: dict[str, np.ndarray], target: Callable
) -> None:
    """Random, best and worst test images at full resolution, with the predictions evaluate scored."""
    ids = [str(i) for i in preds["ids"]]
    rows = index.set_index("id").loc[ids]
    ious = _read_csv(paths.plots_dir / "eval" / "per_image.csv").set_index("id").loc[ids, "iou"].to_numpy()
    chosen = plots.select_examples(ious, params.plot.grid_rows, params.plot.seed)
    for kind, picks in chosen.items():
        images, masks, probs = [], [], []
        for i in picks:
            image, mask = original_pair(paths, rows.iloc[i], params.data.max_image_pixels)
            images.append(image)
            masks.append(mask)
            # Resized exactly as evaluate resized them to score: the drawn pixels are the counted ones.
            probs.append(to_original_size(preds["probs"][i], mask.shape))
        plots.plot_prediction_grid(
            images,
            masks,
            probs,
            # Ids are "<species>/<stem>": the species is already in them.
            [f"{ids[i]}  IoU {ious[i]:.3f}" for i in picks],
            target(f"predictions_{kind}.png"),
            params.plot.dpi,
            threshold=params.evaluate.threshold,
        )


def make_figures(params: Params, paths: Paths) -> list[Path]:
    """Write every PNG into ``plots/png/`` and return their paths."""
    out = paths.plots_dir / "png"
    dpi, pp = params.plot.dpi, params.plot
    written: list[Path] = []

    def target(name: str) -> Path:
        written.append(out / name)
        return out / name

    plots.plot_curves(_read_csv(paths.plots_dir / "train" / "history.csv"), target("curves.png"), dpi)
    per_species = _read_csv(paths.plots_dir / "eval" / "per_species.csv")
    plots.plot_species_bars(per_species, target("species_iou.png"), dpi)

    preds = load_predictions(paths)
    counts = preds["counts"].sum(axis=0)
    tp, fp, fn, tn = (int(v) for v in counts)
    plots.plot_confusion(np.array([[tn, fp], [fn, tp]]), target("confusion.png"), dpi)

    index = read_index(paths)
    _prediction_grids(params, paths, index, preds, target)

    stats = json.loads(paths.stats_json.read_text()) if paths.stats_json.is_file() else None
    plots.plot_dataset_overview(index, target("dataset_overview.png"), dpi, stats=stats)
    train = load_split(paths, "train")
    rng = np.random.default_rng(pp.seed)
    picks = np.sort(rng.choice(len(train), size=min(len(train), 2 * pp.grid_rows), replace=False))
    plots.plot_sample_pairs(
        [np.asarray(train.images[i]) for i in picks],
        [np.asarray(train.masks[i]) for i in picks],
        [f"{train.ids[i]}" for i in picks],
        target("samples.png"),
        dpi,
    )
    _log_to_mlflow(params, paths, written)
    return written


def _log_to_mlflow(params: Params, paths: Paths, files: list[Path]) -> None:
    import mlflow

    from fishseg.tracking import store as tracking

    experiment_id = tracking.setup(params.mlflow, paths.root)
    with tracking.reopen_run(read_run_id(paths.run_json), experiment_id, paths.root):
        for f in files:
            mlflow.log_artifact(str(f), artifact_path="plots")
