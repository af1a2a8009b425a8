"""The real-photo cross-validation benchmark: folds keep groups whole, and a tiny run scores."""

import importlib.util
import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from .helpers import REPO

BENCHMARKS = REPO / "benchmarks"
PHOTOS = REPO / "datasets" / "realfish"


def _load_benchmark():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location("real_photos_cv", BENCHMARKS / "real_photos_cv.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules["real_photos_cv"] = module  # dataclasses look their module up here
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS))
    return module


cv = _load_benchmark()


def test_folds_keep_groups_whole_and_balance_each_species():
    species = np.array(["a"] * 20 + ["b"] * 12)
    groups = np.array(
        [0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15] + list(range(16, 28))
    )
    folds = cv.group_folds(species, groups, k=4, seed=3)
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    for name, n in (("a", 20), ("b", 12)):
        per_fold = np.bincount(folds[species == name], minlength=4)
        assert per_fold.sum() == n and per_fold.max() - per_fold.min() <= 3
    assert not np.array_equal(folds, cv.group_folds(species, groups, k=4, seed=4))


def test_roles_hold_out_the_fold_and_take_val_from_the_rest():
    photos = cv.Photos(ids=[], species=np.array(["a"] * 40), images=None, masks=None, mask_files=[])
    groups = np.arange(40) // 2
    folds = cv.group_folds(photos.species, groups, k=4, seed=0)
    params = cv.config_params(cv.base_params(cv.build_parser().parse_args([])), {"split.val": 0.2})
    roles = cv.fold_roles(photos, groups, folds, 1, params.split)
    assert (roles == "test").sum() == (folds == 1).sum() == 10
    assert set(roles[folds != 1]) == {"train", "val"}
    assert (roles == "val").sum() == 8  # 0.2 of all 40, whole groups
    for g in np.unique(groups):
        assert len(set(roles[groups == g])) == 1


def test_largest_component_drops_specks_and_fills_holes():
    mask = np.zeros((40, 60), bool)
    mask[5:30, 5:45] = True
    mask[10:15, 10:15] = False  # a hole
    mask[35:38, 50:55] = True  # a speck
    out = cv.largest_component(mask)
    assert out[5:30, 5:45].all() and out.sum() == 25 * 40


@pytest.mark.slow
def test_a_tiny_cross_validation_writes_rows_and_resumes(tmp_path):
    photos = tmp_path / "photos"
    for species in ("Trout", "Shrimp"):
        for kind, suffix in (("images", ".jpg"), ("masks", ".png")):
            (photos / kind / species).mkdir(parents=True)
            for stem in sorted(p.stem for p in (PHOTOS / "images" / species).glob("*.jpg"))[:8]:
                shutil.copy(PHOTOS / kind / species / f"{stem}{suffix}", photos / kind / species)
    results = tmp_path / "rows.csv"
    command = [
        sys.executable,
        str(BENCHMARKS / "real_photos_cv.py"),
        *("--photos", str(photos), "--work", str(tmp_path / "work"), "--results", str(results)),
        *("--folds", "2", "--only-folds", "1", "--threads", "1"),
        *("--set", "data.image_size=[32,32]", "--set", "train.epochs=1", "--set", "train.batch_size=4"),
        *("--config", "", "--config", "train.lr=0.01"),
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    first = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = pd.read_csv(results)
    assert list(rows["fold"]) == [1, 1] and rows["config"].nunique() == 2
    assert rows["n_test"].iloc[0] + rows["n_train"].iloc[0] + rows["n_val"].iloc[0] == 16
    assert rows[["iou", "iou_tta", "iou_largest"]].apply(lambda c: c.between(0, 1)).all().all()
    assert "held-out fold IoU" in first.stdout
    again = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert again.returncode == 0 and len(pd.read_csv(results)) == 2  # nothing rerun
