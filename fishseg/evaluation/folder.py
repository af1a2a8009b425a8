"""Score a model on any folder of labelled photos, with the numbers the evaluate stage reports.

    python -m fishseg.evaluate_folder photos/images photos/masks --model models/model --out scores/
    python -m fishseg.evaluate_folder photos/images photos/masks --model models:/fishseg@champion

Images pair with masks by their path relative to IMAGES and MASKS:
``images/Sea Bass/00005.jpg`` with ``masks/Sea Bass/00005.png`` (the embedded dataset's
layout; any image suffix on either side), or ``images/a.jpg`` with ``masks/a.png`` in flat
folders. The folder under IMAGES is the species: with species folders the scores are
also given per species. Each pair passes the split stage's checks (readable, under the
pixel cap, a mask of a clear encoding, binary, of its image's size).

Each image goes through predict's path (``python -m fishseg.predict``: the same model
loading, resizing and threshold), and the full-resolution masks are scored with the
evaluate stage's code: dataset IoU and Dice from summed pixel counts, the means of
per-image IoU and Dice, precision, recall, pixel accuracy and boundary F1. The numbers
are logged and, with ``--out``, written atomically: ``metrics.json`` (the full-resolution
keys of ``metrics/eval.json``, plus ``n_problems``), ``per_image.csv``,
``per_species.csv`` (with species folders) and ``problems.csv`` (pairs not scored).

--model takes what predict takes: ``models/model`` (the default), ``runs:/<run_id>/model``,
``models:/<name>@<alias>``, ``models:/<name>/<version>`` or ``models:/<model_id>``.
Exit status: 0 every pair scored, 1 some images or masks missing or unreadable (listed;
the rest is scored), 2 usage errors (no model, no pairs, nothing scorable).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from fishseg.cli import run_tool
from fishseg.dataset.index import Problem, read_pair
from fishseg.errors import FishsegError
from fishseg.evaluation.evaluate import headline_metrics, per_image_table, per_species_table, score_image
from fishseg.evaluation.pairs import FolderPairs, LabelledPair, find_pairs
from fishseg.fsutil import atomic_write_json, atomic_write_text, write_error
from fishseg.model.inference import predict_image
from fishseg.params import EvaluateParams
from fishseg.paths import find_root
from fishseg.redact import redact_uri
from fishseg.serve.predict import Predictor, _device, _positive, _threshold, load_predictor, project_params

log = logging.getLogger(__name__)

PROBLEM_COLUMNS = ["kind", "path", "detail"]


@dataclass
class FolderScores:
    """Full-resolution ``[tp, fp, fn, tn]`` counts and boundary F1 of each scored pair."""

    pairs: list[LabelledPair] = field(default_factory=list)
    counts: list[np.ndarray] = field(default_factory=list)
    bf1: list[float] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


def score_folder(
    predictor: Predictor,
    found: FolderPairs,
    *,
    threshold: float,
    tolerance: int,
    max_pixels: int | None = None,
    progress: bool = True,
) -> FolderScores:
    """Predict each pair's image as ``predict`` does and score it as the evaluate stage does.

    Pairs are checked as the split stage checks them (:func:`read_pair`); those that fail
    are logged and listed in the result's problems.
    """
    scores = FolderScores(problems=list(found.problems))
    with logging_redirect_tqdm():
        for pair in tqdm(found.pairs, desc="evaluate", unit="image", disable=not progress):
            read = read_pair(pair.image, pair.mask, max_pixels, knob="--max-pixels")
            if isinstance(read, Problem):
                log.error("%s", read)
                scores.problems.append(read)
                continue
            image, truth = read
            prob = predict_image(predictor.model, image, predictor.image_size)
            counts, bf1 = score_image(prob, truth, threshold, tolerance)
            scores.pairs.append(pair)
            scores.counts.append(counts)
            scores.bf1.append(bf1)
    return scores


def result_tables(scores: FolderScores) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame | None]:
    """Headline metrics, the per-image table and, with species folders, the per-species table."""
    counts = np.asarray(scores.counts, dtype=np.int64).reshape(-1, 4)
    bf1 = np.asarray(scores.bf1, dtype=np.float64)
    metrics = headline_metrics(counts, bf1)
    metrics["n_problems"] = len(scores.problems)
    names = [p.name for p in scores.pairs]
    species = [p.species for p in scores.pairs]
    per_image = per_image_table(names, species, counts)
    per_image["boundary_f1"] = bf1.round(6)
    per_image["image"] = [str(p.image) for p in scores.pairs]
    per_image["mask"] = [str(p.mask) for p in scores.pairs]
    per_species = per_species_table(species, counts) if any(species) else None
    return metrics, per_image, per_species


def write_outputs(
    out_dir: Path,
    metrics: dict[str, Any],
    per_image: pd.DataFrame,
    per_species: pd.DataFrame | None,
    problems: list[Problem],
) -> None:
    """The result files under ``out_dir``, each written atomically."""
    atomic_write_json(out_dir / "metrics.json", metrics)
    atomic_write_text(out_dir / "per_image.csv", per_image.to_csv(index=False))
    if per_species is not None:
        atomic_write_text(out_dir / "per_species.csv", per_species.to_csv(index=False))
    rows = pd.DataFrame([[p.kind, p.path, p.detail] for p in problems], columns=PROBLEM_COLUMNS)
    atomic_write_text(out_dir / "problems.csv", rows.to_csv(index=False))


def log_summary(metrics: dict[str, Any], per_species: pd.DataFrame | None) -> None:
    log.info(
        "%d image(s): IoU %.4f (per image %.4f), Dice %.4f (per image %.4f), precision %.4f, "
        "recall %.4f, pixel accuracy %.4f, boundary F1 %.4f",
        metrics["n_images"],
        *(metrics[k] for k in ("iou", "iou_per_image", "dice", "dice_per_image", "precision")),
        *(metrics[k] for k in ("recall", "pixel_accuracy", "boundary_f1")),
    )
    if per_species is not None:
        log.info("per species:\n%s", per_species.to_string(index=False, float_format="%.4f"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fishseg.evaluate_folder",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", type=Path, help="folder of photos (species subfolders optional)")
    parser.add_argument(
        "masks", type=Path, help="folder of masks, laid out as IMAGES (0 background, 255 fish)"
    )
    parser.add_argument(
        "--model",
        default="models/model",
        help="models/model (default), runs:/<run_id>/model, models:/<name>@<alias>, "
        "models:/<name>/<version> or models:/<model_id>",
    )
    parser.add_argument("--out", type=Path, default=None, help="folder for the result files (default: none)")
    parser.add_argument(
        "--threshold",
        type=_threshold,
        default=0.5,
        help="probability cut for fish (default: 0.5, as predict)",
    )
    tolerance = EvaluateParams().boundary_tolerance
    parser.add_argument(
        "--boundary-tolerance",
        type=int,
        default=tolerance,
        help=f"pixels a boundary may be off for boundary F1 (default: {tolerance}, as evaluate)",
    )
    parser.add_argument(
        "--max-pixels",
        type=_positive,
        default=None,
        help="list images and masks with more pixels as problems, read from the header before decoding "
        "(default: data.max_image_pixels of the project's params.yaml, 50 Mpx outside a project)",
    )
    parser.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    parser.add_argument(
        "--root",
        type=Path,
        default=None,
        help="project root for the MLflow store and params.yaml (default: found from cwd)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser


def run(args: argparse.Namespace) -> int:
    """Pair, predict, score, report; the exit status (FishsegError for usage errors)."""
    if args.boundary_tolerance < 0:
        raise FishsegError(f"--boundary-tolerance {args.boundary_tolerance}: must be 0 or more")
    found = find_pairs(args.images, args.masks)
    for problem in found.problems:
        log.error("%s", problem)
    if not found.pairs:
        raise FishsegError(f"no image/mask pairs in {args.images} and {args.masks} (same relative paths)")
    device = _device(args.device)
    root = (args.root or find_root()).resolve()
    predictor = load_predictor(args.model, device, root)
    log.info(
        "model %s (input %dx%d) on %s", redact_uri(predictor.source), *predictor.image_size[::-1], device
    )
    scores = score_folder(
        predictor,
        found,
        threshold=args.threshold,
        tolerance=args.boundary_tolerance,
        max_pixels=args.max_pixels or project_params(root).data.max_image_pixels,
        progress=not args.no_progress,
    )
    if not scores.pairs:
        raise FishsegError(f"none of the {len(found.pairs)} pair(s) could be scored (listed above)")
    metrics, per_image, per_species = result_tables(scores)
    log_summary(metrics, per_species)
    if args.out is not None:
        try:
            write_outputs(args.out, metrics, per_image, per_species, scores.problems)
        except OSError as exc:
            raise write_error(Path(exc.filename or args.out), exc, "choose another --out") from None
        log.info("wrote the results to %s", args.out)
    if scores.problems:
        log.error("%d image(s) or mask(s) could not be scored (listed above)", len(scores.problems))
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_tool(args, run)
