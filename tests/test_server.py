"""The pipeline against a real `mlflow server` on 127.0.0.1, read back over its REST API.

The server runs with one worker and no job runner (about 7 s to start, 0.5 GB), SQLite
behind it and artifacts proxied into the test's temp dir. The train and evaluate stages
run as users run them (`python stages/<stage>.py`) with `MLFLOW_TRACKING_URI` pointing at it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import mlflow
import numpy as np
import pytest
import requests
import torch

from fishseg.model.inference import load_inference_model
from fishseg.params import MlflowParams
from fishseg.serve.predict import main as predict_main
from fishseg.tracking import store as tracking

from .helpers import REPO, tiny, write_params, write_prepared

pytestmark = pytest.mark.slow

MODEL_NAME = "fishseg-server-test"


def _stage(name: str, root: Path, url: str) -> subprocess.CompletedProcess:
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=url,
        # fail in seconds, not minutes of retries, if the server is gone
        MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
        MLFLOW_HTTP_REQUEST_TIMEOUT="60",
    )
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / f"{name}.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


@pytest.fixture(scope="module")
def project(server, tmp_path_factory):
    """A tiny project trained and evaluated through the stage scripts, logging to the server."""
    paths = write_prepared(tmp_path_factory.mktemp("project"))
    write_params(paths.root, tiny(mlflow={"log_model": True, "register_model": MODEL_NAME}))
    for stage in ("train", "evaluate"):
        started = time.perf_counter()
        proc = _stage(stage, paths.root, server["url"])
        assert proc.returncode == 0, f"{stage} failed:\n{proc.stdout}\n{proc.stderr}"
        print(f"{stage} stage against the server: {time.perf_counter() - started:.1f} s")
    return paths


def _api(server, method: str, endpoint: str, **kwargs) -> dict:
    response = requests.request(method, f"{server['url']}/api/2.0/mlflow/{endpoint}", timeout=30, **kwargs)
    assert response.status_code == 200, response.text
    return response.json()


def test_run_metrics_and_artifacts_over_rest(server, project):
    experiment = _api(server, "GET", "experiments/get-by-name", params={"experiment_name": "fishseg"})
    experiment_id = experiment["experiment"]["experiment_id"]
    runs = _api(server, "POST", "runs/search", json={"experiment_ids": [experiment_id]})["runs"]
    run_id = json.loads(project.run_json.read_text())["run_id"]
    assert [r["info"]["run_id"] for r in runs] == [run_id]

    run = _api(server, "GET", "runs/get", params={"run_id": run_id})["run"]
    assert run["info"]["status"] == "FINISHED"
    metrics = {m["key"]: m["value"] for m in run["data"]["metrics"]}
    train_json = json.loads((project.metrics_dir / "train.json").read_text())
    eval_json = json.loads((project.metrics_dir / "eval.json").read_text())
    assert metrics["best_val_iou"] == pytest.approx(train_json["best_val_iou"])
    assert metrics["test_iou"] == pytest.approx(eval_json["iou"])
    params = {p["key"]: p["value"] for p in run["data"]["params"]}
    assert params["train.epochs"] == "2" and params["mlflow.register_model"] == MODEL_NAME
    history = _api(server, "GET", "metrics/get-history", params={"run_id": run_id, "metric_key": "val_iou"})
    assert [m["step"] for m in history["metrics"]] == [1, 2]

    listed = _api(server, "GET", "artifacts/list", params={"run_id": run_id, "path": "checkpoint"})
    assert {"checkpoint/model.safetensors", "checkpoint/preprocessing.json"} <= {
        f["path"] for f in listed["files"]
    }
    listed = _api(server, "GET", "artifacts/list", params={"run_id": run_id, "path": "eval"})
    assert "eval/per_species.csv" in {f["path"] for f in listed["files"]}
    # the server stored them where it was told to, not in the project
    assert list(server["artifacts"].rglob("model.safetensors"))
    assert not (project.root / "mlartifacts").exists() and not (project.root / "mlflow.db").exists()


def test_logged_model_is_registered_and_loads_from_the_server(server, project, monkeypatch, tmp_path):
    run_id = json.loads(project.run_json.read_text())["run_id"]
    alias = _api(server, "GET", "registered-models/alias", params={"name": MODEL_NAME, "alias": "champion"})
    version = alias["model_version"]
    eval_json = json.loads((project.metrics_dir / "eval.json").read_text())
    assert version["version"] == "1" and version["run_id"] == run_id
    assert float({t["key"]: t["value"] for t in version["tags"]}["test_iou"]) == pytest.approx(
        eval_json["iou"]
    )

    experiment_id = _api(server, "GET", "runs/get", params={"run_id": run_id})["run"]["info"]["experiment_id"]
    logged = _api(server, "POST", "logged-models/search", json={"experiment_ids": [experiment_id]})["models"]
    assert [m["info"]["source_run_id"] for m in logged] == [run_id]
    assert version["source"] == f"models:/{logged[0]['info']['model_id']}"

    local, pre = load_inference_model(project.model_dir)
    images = torch.from_numpy(
        np.random.default_rng(0).uniform(0, 255, (2, 3, *pre["image_size"])).astype(np.float32)
    )
    photo = tmp_path / "photo.png"
    image = np.full((50, 70, 3), (160, 60, 30), np.uint8)
    cv2.ellipse(image, (35, 25), (20, 10), 0, 0, 360, (120, 170, 200), -1)
    assert cv2.imwrite(str(photo), image)
    out = tmp_path / "out"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", server["url"])
    previous = mlflow.get_tracking_uri()
    try:
        tracking.use_store(MlflowParams(), project.root)  # the variable wins, as in every stage
        served = mlflow.pytorch.load_model(f"models:/{MODEL_NAME}@champion")
        with torch.no_grad():
            assert torch.allclose(served(images), local(images), atol=1e-5)
        argv = [str(photo), "--model", f"runs:/{run_id}/model", "--out", str(out), "--no-progress"]
        assert predict_main(argv) == 0
    finally:
        # Later tests must not talk to a stopped server (this also sets the variable, which
        # monkeypatch restores after the test).
        mlflow.set_tracking_uri(previous)
    assert cv2.imread(str(out / "masks" / "photo.png"), cv2.IMREAD_UNCHANGED).shape == (50, 70)
