"""Shared fixtures: the real params file, shrunk; tiny prepared datasets on disk."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.pop("MLFLOW_TRACKING_URI", None)
# Under pytest-xdist each worker gets one core's worth of threads, and so do the stage
# processes the tests start (they inherit the variable): n workers x 1 thread, not n x n.
XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "0"))
if XDIST_WORKERS > 1:
    os.environ["OMP_NUM_THREADS"] = "1"

import torch  # noqa: E402

from fishseg.params import Params, load_params  # noqa: E402
from fishseg.paths import SPLITS, Paths  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
torch.set_num_threads(1 if XDIST_WORKERS > 1 else 2)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject addopts): one worker per core this process may use (the
    cgroup/affinity view, not the host's count), at most 8; the slow tests are a few files."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def tiny_overrides() -> dict:
    """The real params, shrunk to run in seconds on a 2-core CPU."""
    return {
        "data": {
            "image_size": [32, 32],
            "synthetic": {"photos_per_species": 2, "copies_per_photo": 3, "width": 64, "height": 48},
        },
        "train": {"epochs": 2, "batch_size": 4, "num_workers": 0, "device": "cpu", "warmup_epochs": 0},
        "plot": {"grid_rows": 2, "dpi": 40},
        "mlflow": {"log_model": False},
    }


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(base.get(k, {}), v) if isinstance(v, dict) else v
    return out


def tiny(**sections: dict) -> Params:
    """The real params file, shrunk (``tiny_overrides``), then ``sections`` merged on top,
    validated: ``tiny(train={"epochs": 3})``."""
    raw = merge(load_params(REPO / "params.yaml").model_dump(), tiny_overrides())
    return Params.model_validate(merge(raw, sections))


def write_params(root: Path, params: Params) -> None:
    """``params`` as the project's params.yaml, for the stage scripts to read."""
    (root / "params.yaml").write_text(yaml.safe_dump(json.loads(params.model_dump_json())))


@pytest.fixture
def tiny_params() -> Params:
    return tiny()


def blob_pairs(n: int, size: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy blue backgrounds with one bright ellipse each: learnable in a few steps."""
    import cv2

    rng = np.random.default_rng(seed)
    h, w = size
    images = np.empty((n, h, w, 3), np.uint8)
    masks = np.zeros((n, h, w), np.uint8)
    for i in range(n):
        bg = np.array([30, 60, 160]) + rng.normal(0, 12, (h, w, 3))
        mask = np.zeros((h, w), np.uint8)
        center = (int(rng.integers(w // 4, 3 * w // 4)), int(rng.integers(h // 4, 3 * h // 4)))
        axes = (int(rng.integers(w // 8, w // 3)), int(rng.integers(h // 10, h // 5)))
        cv2.ellipse(mask, center, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
        fish = np.array([200, 170, 120]) + rng.normal(0, 12, (h, w, 3))
        images[i] = np.clip(np.where(mask[..., None] > 0, fish, bg), 0, 255).astype(np.uint8)
        masks[i] = mask
    return images, masks


def write_prepared(
    root: Path, size: tuple[int, int] = (32, 32), counts: dict | None = None, seed: int = 0
) -> Paths:
    """A project with work/prepared, work/index.csv and work/stats.json, as split+stats write them."""
    import cv2
    import pandas as pd

    from fishseg.dataset.arrays import load_split
    from fishseg.dataset.stats import channel_stats
    from fishseg.fsutil import atomic_write_json

    counts = counts or {"train": 16, "val": 4, "test": 6}
    paths = Paths(root)
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "dvc.yaml").write_text("stages: {}\n")
    species = ["Trout", "Shrimp"]
    rows = []
    for k, split in enumerate(SPLITS):
        images, masks = blob_pairs(counts[split], size, seed + k)
        out = paths.prepared_split(split)
        out.mkdir(parents=True)
        ids = [f"{species[i % 2]}/{split}{i:03d}" for i in range(counts[split])]
        np.save(out / "images.npy", images)
        np.save(out / "masks.npy", masks)
        (out / "ids.json").write_text(json.dumps(ids))
        for i, id_ in enumerate(ids):
            # Originals at twice the training size: evaluate scores at full resolution.
            big = cv2.resize(masks[i] * 255, (2 * size[1], 2 * size[0]), interpolation=cv2.INTER_NEAREST)
            mask_file = root / "raw" / f"{id_}_mask.png"
            mask_file.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(mask_file), big)
            rows.append(
                {
                    "id": id_,
                    "species": species[i % 2],
                    "image": f"raw/{id_}.png",
                    "mask": mask_file.relative_to(root).as_posix(),
                    "width": 2 * size[1],
                    "height": 2 * size[0],
                    "fg_frac": float(masks[i].mean()),
                    "group": len(rows),
                    "split": split,
                }
            )
    pd.DataFrame(rows).to_csv(paths.index_csv, index=False)
    atomic_write_json(paths.stats_json, channel_stats(load_split(paths, "train")))
    return paths
