"""The plot stage's prediction grids: the original photos, with the predictions the evaluate stage scored."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread

from fishseg.errors import FishsegError
from fishseg.evaluation.evaluate import counts_from_probs, evaluate
from fishseg.model.resize import to_original_size
from fishseg.paths import Paths
from fishseg.report.figures import make_figures, original_pair

from .helpers import real_test_project

PICKED = {"Red Mullet": 2, "Trout": 2}


@pytest.fixture(scope="module")
def scored(trained, tmp_path_factory) -> Paths:
    """A project whose test split (real photos, 590x445) the evaluate stage has scored."""
    paths = real_test_project(tmp_path_factory.mktemp("figures"), trained.paths, PICKED)
    evaluate(trained.params, paths, progress=False)
    return paths


def test_the_drawn_prediction_is_the_scored_one(trained, scored):
    """Resizing the saved probabilities as the plot stage does gives the counts evaluate wrote."""
    index = pd.read_csv(scored.index_csv).set_index("id")
    with np.load(scored.predictions_npz) as data:
        ids, probs, counts = [str(i) for i in data["ids"]], data["probs"], data["counts"]
    assert probs.dtype == np.float32 and len(ids) == 4
    for i, id_ in enumerate(ids):
        image, mask = original_pair(scored, index.loc[id_])
        assert image.shape == (445, 590, 3) and mask.shape == (445, 590)
        drawn = to_original_size(probs[i], mask.shape)
        threshold = trained.params.evaluate.threshold
        assert counts_from_probs(drawn[None], mask[None], threshold)[0].tolist() == counts[i].tolist()


def test_grids_are_drawn_from_the_photos(trained, scored):
    make_figures(trained.params, scored)
    dpi = trained.params.plot.dpi
    for kind in ("random", "best", "worst"):
        grid = imread(scored.plots_dir / "png" / f"predictions_{kind}.png")
        # Four panels a row (photo, truth, prediction, zoom) of 3.2 in, two rows of 590x445 photos.
        assert grid.shape[1] == pytest.approx(4 * 3.2 * dpi, rel=0.05)
        assert grid.shape[0] == pytest.approx(2 * (3.2 * 445 / 590 + 0.45) * dpi + 0.6 * dpi, rel=0.1)
        assert grid[..., :3].std() > 0.05


def test_a_missing_photo_is_named(trained, scored, tmp_path):
    copy = Paths(tmp_path / "copy")
    shutil.copytree(scored.root, copy.root, ignore=shutil.ignore_patterns("mlflow.db", "mlartifacts"))
    shutil.rmtree(copy.raw_dir / "images")
    with pytest.raises(FishsegError, match=r"data/raw/images/.*cannot read the test pair.*dvc repro split"):
        make_figures(trained.params, copy)
