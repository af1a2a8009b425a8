"""The MLflow UI as a person opens it: `mlflow ui` on 127.0.0.1, a finished run's page in headless Chromium.

The run comes from the pipeline's own code (tiny training with the packaged model logged,
then evaluation); the page is read after the UI's scripts rendered it (``--dump-dom``).
"""

from __future__ import annotations

import json
import subprocess

import mlflow
import pytest

from fishseg.evaluation.evaluate import evaluate
from fishseg.training.train import train

from ._browser import chromium, chromium_or_skip
from .helpers import mlflow_process, tiny, write_prepared

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> dict:
    chromium_or_skip()  # before the training: nothing to look at without a browser
    paths = write_prepared(tmp_path_factory.mktemp("ui_project"))
    # A checkout on a branch of its own: the run is named <branch>-<short commit>.
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    for args in (["init", "-q", "-b", "ui-check"], ["add", "params.yaml"], ["commit", "-qm", "x"]):
        subprocess.run([*git, *args], cwd=paths.root, check=True, capture_output=True)
    params = tiny(mlflow={"log_model": True})
    train(params, paths, progress=False)
    metrics = evaluate(params, paths, progress=False)
    run_id = json.loads(paths.run_json.read_text())["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{paths.root / 'mlflow.db'}")
    run = client.get_run(run_id)
    (model,) = client.search_logged_models([run.info.experiment_id])
    return {"root": paths.root, "run": run, "metrics": metrics, "model_id": model.model_id}


@pytest.fixture(scope="module")
def ui(finished_run):
    """`mlflow ui` on the project's store, bound to 127.0.0.1; its URL. Stopped at the end."""
    root = finished_run["root"]
    with mlflow_process("ui", f"sqlite:///{root / 'mlflow.db'}", root / "ui.log") as url:
        yield url


def test_run_page_shows_name_test_iou_and_logged_model(ui, finished_run, tmp_path):
    run = finished_run["run"]
    page = f"{ui}/#/experiments/{run.info.experiment_id}/runs/{run.info.run_id}"
    dom = chromium(page, tmp_path / "profile", "--dump-dom", budget_ms=20000)

    assert run.info.run_name.startswith("ui-check-") and run.info.run_name in dom  # ours, not a generated one
    assert "test_iou" in dom and str(finished_run["metrics"]["test_iou"]) in dom
    assert "Logged models (1)" in dom and finished_run["model_id"] in dom
