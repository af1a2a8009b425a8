"""Queued experiments two at a time (`dvc queue start -j 2`), with registration on, for real.

Against the project's SQLite store and against a local `mlflow server`: every experiment
succeeds, its MLflow run is complete (params, per-epoch metrics, test metrics, logged
model, artifacts), no lock error reaches the user, and `champion` ends on the best version.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from pathlib import Path

import mlflow
import pytest

from fishseg.tracking.registry import CHAMPION, SCORE_TAG

from .helpers import BIN, copy_repo, dvc, run_tool, tiny, write_params

pytestmark = pytest.mark.slow

MODEL_NAME = "fishseg-parallel"
SEEDS = (1, 2, 3)  # one queued experiment each
QUEUE_TIMEOUT_S = 1500
POLL_S = 5
LOCK_ERRORS = re.compile(r"database is locked|OperationalError|Traceback|RESOURCE_ALREADY_EXISTS", re.I)


def _project(root: Path, tracking_uri: str | None) -> Path:
    """The repository in ``root`` with tiny params that register every evaluated model."""
    copy_repo(root)
    params = tiny(mlflow={"log_model": True, "register_model": MODEL_NAME, "tracking_uri": tracking_uri})
    write_params(root, params)
    run_tool(["git", "init", "-q"], cwd=root)
    dvc("repro", "stats", cwd=root)  # the data, once: the experiments take it from the cache
    for cmd in (["add", "-A"], ["commit", "-qm", "baseline"]):
        run_tool(["git", *cmd], cwd=root)
    return root


def _env() -> dict[str, str]:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def _queue_status(root: Path) -> dict[str, str]:
    """``dvc queue status``: experiment name -> Queued | Running | Success | Failed."""
    out = dvc("queue", "status", cwd=root).stdout
    names = [f"par-{seed}" for seed in SEEDS]
    return {
        words[1]: words[-1]
        for line in out.splitlines()
        if len(words := line.split()) >= 3 and words[1] in names
    }


def _run_queue(root: Path) -> dict[str, str]:
    """Queue one experiment per seed, run them two at a time, wait; the final statuses."""
    for seed in SEEDS:
        dvc("exp", "run", "--queue", "--name", f"par-{seed}", "-S", f"train.seed={seed}", cwd=root)
    started = time.monotonic()
    # The workers it starts keep its stdout and stderr open: a file, not a pipe to wait on.
    with (root.parent / "queue-start.log").open("w") as log:
        cmd = [str(BIN / "dvc"), "queue", "start", "-j", "2"]
        subprocess.run(
            cmd, cwd=root, env=_env(), stdout=log, stderr=subprocess.STDOUT, check=True, timeout=120
        )
    while True:
        status = _queue_status(root)
        if len(status) == len(SEEDS) and all(s in ("Success", "Failed") for s in status.values()):
            print(f"{len(SEEDS)} experiments, 2 at a time: {time.monotonic() - started:.0f} s")
            return status
        assert time.monotonic() - started < QUEUE_TIMEOUT_S, f"queue still busy: {status}"
        time.sleep(POLL_S)


def _experiment_metrics(root: Path) -> dict[str, float]:
    """Test IoU of each experiment, as DVC recorded it."""
    shown = json.loads(dvc("exp", "show", "--json", cwd=root).stdout)
    ious = {}
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = rev.get("data") or {}
                eval_json = (data.get("metrics") or {}).get("metrics/eval.json", {}).get("data", {})
                if rev.get("name") in {f"par-{s}" for s in SEEDS} and "iou" in eval_json:
                    ious[rev["name"]] = eval_json["iou"]
    return ious


def _check_run_is_complete(client: mlflow.MlflowClient, run, test_iou: float) -> None:
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "2" and "train.seed" in run.data.params
    history = client.get_metric_history(run.info.run_id, "val_iou")
    assert [m.step for m in history] == [1, 2]
    assert "best_val_iou" in run.data.metrics
    assert run.data.metrics["test_iou"] == pytest.approx(test_iou)
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "eval")}
    assert "eval/per_species.csv" in logged and "eval/eval.json" in logged
    assert {a.path for a in client.list_artifacts(run.info.run_id, "plots")}  # the plot stage's figures
    assert run.outputs is not None and run.outputs.model_outputs  # the logged model


@pytest.mark.parametrize("store", ["sqlite", "server"])
def test_queued_experiments_two_at_a_time_are_recorded_and_crown_the_best(store, request, tmp_path):
    if store == "server":
        uri = request.getfixturevalue("server")["url"]
        root = _project(tmp_path / "project", uri)
    else:
        root = _project(tmp_path / "project", None)
        uri = f"sqlite:///{root / 'mlflow.db'}"
    try:
        status = _run_queue(root)
    finally:
        dvc("queue", "stop", "--kill", cwd=root, check=False)  # nothing left running, even on failure
    for seed in SEEDS:
        logs = dvc("queue", "logs", f"par-{seed}", cwd=root).stdout
        assert not LOCK_ERRORS.search(logs), f"par-{seed}:\n{logs}"
    assert status == {f"par-{seed}": "Success" for seed in SEEDS}

    ious = _experiment_metrics(root)
    assert set(ious) == {f"par-{seed}" for seed in SEEDS}
    client = mlflow.MlflowClient(uri)
    experiment = client.get_experiment_by_name("fishseg")
    runs = {r.data.tags["dvc.exp_name"]: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == set(ious)
    for name, run in runs.items():
        _check_run_is_complete(client, run, ious[name])

    versions = client.search_model_versions(f"name = '{MODEL_NAME}'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in runs.values())
    for version in versions:
        assert float(version.tags[SCORE_TAG]) == pytest.approx(
            client.get_run(version.run_id).data.metrics["test_iou"]
        )
    best = max(float(v.tags[SCORE_TAG]) for v in versions)
    holder = client.get_model_version_by_alias(MODEL_NAME, CHAMPION)
    assert float(holder.tags[SCORE_TAG]) == best
    print(f"{store}: test IoU {sorted(ious.values())}, champion version {holder.version} ({best})")
