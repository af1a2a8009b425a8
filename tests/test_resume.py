"""The resume state and the stops around it: unusable state files, a second Ctrl-C, runs of killed processes."""

from __future__ import annotations

import signal
import socket
import subprocess
import time

import mlflow
import pytest
import torch

from fishseg.tracking.liveness import HOST_TAG, PID_TAG, STARTED_TAG, close_abandoned_runs, process_started
from fishseg.training import runtime
from fishseg.training.engine import build_engine
from fishseg.training.state import STATE_FILE, Checkpoint, Progress, copy_weights, resume

from .helpers import start_stage, tiny, write_params, write_prepared

ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # stage processes share a small machine with the test run


@pytest.fixture
def engine():
    params = tiny()
    stats = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.2, 0.2]}
    return build_engine(params, stats, runtime.start(params.train), steps_per_epoch=4)


def _saved_state(engine, path) -> dict:
    """A real state of ``engine`` after epoch 1 (fingerprint "fp"), as the loop saves it, read back."""
    Checkpoint(path, "fp").save(
        engine, Progress(epoch=1, best_epoch=1, best_val_iou=0.5), copy_weights(engine.model)
    )
    return torch.load(path, weights_only=True)


def test_a_matching_state_resumes_with_its_best_weights(engine, tmp_path):
    path = tmp_path / STATE_FILE
    state = _saved_state(engine, path)
    start = resume(Checkpoint(path, "fp"), engine)
    assert start.progress.epoch == 1 and start.progress.best_val_iou == 0.5
    assert start.best.keys() == state["model"].keys()
    assert all(torch.equal(start.best[k], state["best"][k]) for k in state["best"])


@pytest.mark.parametrize(
    "content, problem",
    [
        ([1, 2, 3], "holds a list"),
        ("not a state", "holds a str"),
        ({"fingerprint": "fp", "progress": {"epoch": 1, "completed": False}}, "lacks best, model, optimizer"),
        ("drop:best", "lacks best"),  # a state of an older version: no best weights to write
        ("progress:{'epochs_left': 3}", "progress record"),
    ],
)
def test_a_state_that_loads_but_is_no_usable_state_starts_fresh(engine, tmp_path, caplog, content, problem):
    path = tmp_path / STATE_FILE
    if content == "drop:best":
        content = _saved_state(engine, path)
        del content["best"]
    elif isinstance(content, str) and content.startswith("progress:"):
        content = {**_saved_state(engine, path), "progress": {"epoch": 1, "epochs_left": 3}}
    torch.save(content, path)
    with caplog.at_level("WARNING"):
        start = resume(Checkpoint(path, "fp"), engine)
    assert start.progress == Progress() and start.best == {} and start.sums is None
    assert problem in caplog.text and "starting fresh" in caplog.text


def test_partial_state_writes_left_by_a_kill_are_removed(engine, tmp_path, caplog):
    path = tmp_path / STATE_FILE
    _saved_state(engine, path)
    partial = tmp_path / f".{STATE_FILE}.k2j4x.tmp"
    partial.write_bytes(b"cut short")
    other = tmp_path / "notes.txt"
    other.write_text("mine")
    with caplog.at_level("WARNING"):
        assert resume(Checkpoint(path, "fp"), engine).progress.epoch == 1
    assert not partial.exists() and other.read_text() == "mine"
    assert "left by an interrupted write" in caplog.text


# --------------------------------------------------------------------------- runs of killed processes


def _process_tags(pid: int, started: str | None) -> dict[str, str]:
    return {HOST_TAG: socket.gethostname(), PID_TAG: str(pid), STARTED_TAG: started or ""}


def test_only_runs_whose_process_is_gone_are_closed(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # MLflow exports it: gone again after the test
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("fishseg", artifact_location=(tmp_path / "art").as_uri())
    alive = subprocess.Popen(["sleep", "120"])
    gone = subprocess.Popen(["sleep", "120"])
    try:
        gone_started = process_started(gone.pid)
        gone.kill()
        gone.wait()
        alive_started = process_started(alive.pid)
        assert alive_started and gone_started
        tags = {
            "gone": _process_tags(gone.pid, gone_started),
            "alive": _process_tags(alive.pid, alive_started),
            # the pid is in use again, by a process started later than the run's
            "pid_reused": _process_tags(alive.pid, str(int(alive_started) - 1)),
            "other_host": {**_process_tags(gone.pid, gone_started), HOST_TAG: "elsewhere"},
            "untagged": {},
        }
        runs = {name: client.create_run(experiment_id, tags=t).info.run_id for name, t in tags.items()}
        finished = client.create_run(experiment_id, tags=tags["gone"]).info.run_id
        client.set_terminated(finished, "FINISHED")

        closed = close_abandoned_runs(experiment_id)
    finally:
        alive.kill()
        alive.wait()
    assert sorted(closed) == sorted([runs["gone"], runs["pid_reused"]])
    status = {name: client.get_run(run_id).info.status for name, run_id in runs.items()}
    assert status == {
        "gone": "KILLED",
        "alive": "RUNNING",
        "pid_reused": "KILLED",
        "other_host": "RUNNING",
        "untagged": "RUNNING",
    }
    assert client.get_run(finished).info.status == "FINISHED"


def _runs(root) -> tuple[mlflow.MlflowClient, list]:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fishseg")
    return client, client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_a_run_killed_with_sigkill_is_closed_by_the_next_training(tmp_path):
    paths = write_prepared(tmp_path, counts={"train": 8, "val": 4, "test": 2})
    write_params(paths.root, tiny(train={"epochs": 1}))
    proc = start_stage(paths.root, "train", env=ONE_THREAD)
    for line in proc.stdout:
        if "MLflow run" in line:  # the run has started
            proc.kill()  # kill -9: no handler runs, the run cannot be ended
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    _, runs = _runs(paths.root)
    assert [r.info.status for r in runs] == ["RUNNING"]

    again = start_stage(paths.root, "train", env=ONE_THREAD)
    out = again.stdout.read()
    assert again.wait(timeout=300) == 0, out
    assert f"MLflow run {runs[0].info.run_id} was left RUNNING" in out
    _, runs = _runs(paths.root)
    assert [r.info.status for r in runs] == ["KILLED", "FINISHED"]
    assert runs[0].data.tags[PID_TAG] == str(proc.pid)


# --------------------------------------------------------------------------- Ctrl-C twice


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_keeping_the_last_saved_state(tmp_path):
    paths = write_prepared(tmp_path, counts={"train": 16, "val": 4, "test": 2})
    write_params(paths.root, tiny())
    state_file = paths.last_dir / STATE_FILE
    proc = start_stage(paths.root, "train", env=ONE_THREAD)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/2" in line:
            while not state_file.exists():  # epoch 1's state is being written
                time.sleep(0.01)
            proc.send_signal(signal.SIGINT)  # in epoch 2: asks for a clean stop after this step
        elif "received SIGINT" in line:
            proc.send_signal(signal.SIGINT)  # pressed again before that stop is done
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) == 130, out
    assert "received SIGINT again: stopping now" in out
    state = torch.load(state_file, weights_only=True)  # the last state saved is whole
    assert state["progress"]["epoch"] == 1 and not state["progress"]["trained"]
    _, runs = _runs(paths.root)
    assert [r.info.status for r in runs] == ["KILLED"]
    assert [row["epoch"] for row in state["progress"]["history"]] == [1]
    assert not (paths.metrics_dir / "train.json").exists()
