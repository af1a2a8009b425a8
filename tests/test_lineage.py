"""Run names and the data version of a run: real git, a real SQLite MLflow store, real dvc.lock."""

from __future__ import annotations

import subprocess

import mlflow
import pytest
import yaml

from fishseg.paths import Paths
from fishseg.tracking import lineage

from .helpers import tiny


def _git(root, *args):
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def repo(tmp_path, monkeypatch):
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "feature/fish")
    (root / "a.txt").write_text("a")
    _git(root, "add", "a.txt")
    _git(root, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "a")
    return root


def test_run_name_is_the_branch_and_commit_or_the_experiment(repo, tmp_path, monkeypatch):
    short = _git(repo, "rev-parse", "--short", "HEAD")
    assert lineage.base_run_name(repo) == f"feature/fish-{short}"
    _git(repo, "checkout", "-q", "--detach")
    assert lineage.base_run_name(repo) == short
    monkeypatch.setenv("DVC_EXP_NAME", "fishy-gill")
    assert lineage.base_run_name(repo) == "fishy-gill"
    monkeypatch.delenv("DVC_EXP_NAME")
    outside = tmp_path / "not-git"
    outside.mkdir()
    assert lineage.base_run_name(outside) == "run"


def test_run_names_are_unique_in_the_experiment(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("names", artifact_location=(tmp_path / "art").as_uri())
    names = []
    for _ in range(3):
        name = lineage.unique_run_name("main-abc1234", experiment_id)
        mlflow.start_run(experiment_id=experiment_id, run_name=name)
        mlflow.end_run()
        names.append(name)
    # A prefix of another name is no clash, and neither is a name in another experiment.
    assert lineage.unique_run_name("main-abc", experiment_id) == "main-abc"
    assert names == ["main-abc1234", "main-abc1234-2", "main-abc1234-3"]


def _lock(root, raw="a" * 32, prepared="b" * 32):
    lock = {
        "schema": "2.0",
        "stages": {
            "download": {"cmd": "x", "outs": [{"path": "work/raw", "md5": f"{raw}.dir", "hash": "md5"}]},
            "split": {
                "cmd": "y",
                "outs": [
                    {"path": "work/index.csv", "md5": "c" * 32, "hash": "md5"},
                    {"path": "work/prepared", "md5": f"{prepared}.dir", "hash": "md5"},
                ],
            },
        },
    }
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))


def test_data_version_is_the_run_input_and_tags(tmp_path):
    root = tmp_path / "project"
    root.mkdir()
    _lock(root)
    params = tiny()
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("data", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        tags = lineage.log_data_version(params, Paths(root))
    got = mlflow.get_run(run.info.run_id)
    (dataset_input,) = got.inputs.dataset_inputs
    assert dataset_input.dataset.digest == "b" * 32  # the DVC hash of work/prepared, ".dir" cut off
    assert dataset_input.dataset.name == "synthetic (32x32)"
    assert str(root / "work" / "prepared") in dataset_input.dataset.source
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    assert got.data.tags[lineage.RAW_TAG] == "a" * 32 == tags[lineage.RAW_TAG]
    assert got.data.tags[lineage.PARAMS_TAG] == lineage.params_digest(params)


def test_params_digest_follows_values_not_layout():
    a, b = tiny(), tiny()
    assert lineage.params_digest(a) == lineage.params_digest(b)
    assert lineage.params_digest(tiny(train={"lr": 1e-4})) != lineage.params_digest(a)


def test_without_a_lock_no_input_is_logged(tmp_path):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("nolock", artifact_location=(tmp_path / "art").as_uri())
    with mlflow.start_run(experiment_id=experiment_id) as run:
        tags = lineage.log_data_version(tiny(), Paths(tmp_path))
    assert list(tags) == [lineage.PARAMS_TAG]
    assert mlflow.get_run(run.info.run_id).inputs.dataset_inputs == []


def test_a_dataset_row_created_by_a_parallel_run_at_the_same_moment_is_logged_again(tmp_path, monkeypatch):
    """A tracking server's get-or-create of the dataset row raced with another run: one more try."""
    from mlflow.exceptions import RestException

    root = tmp_path / "project"
    root.mkdir()
    _lock(root)
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment_id = mlflow.create_experiment("race", artifact_location=(tmp_path / "art").as_uri())
    log_input, calls = mlflow.log_input, []

    def racing(*args, **kwargs):  # the answer a server gave when two runs inserted one dataset
        calls.append(1)
        if len(calls) == 1:
            raise RestException(
                {
                    "error_code": "BAD_REQUEST",
                    "message": "(sqlite3.IntegrityError) UNIQUE constraint "
                    "failed: datasets.experiment_id, datasets.name, datasets.digest",
                }
            )
        return log_input(*args, **kwargs)

    monkeypatch.setattr(mlflow, "log_input", racing)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        lineage.log_data_version(tiny(), Paths(root))
    (dataset_input,) = mlflow.get_run(run.info.run_id).inputs.dataset_inputs
    assert len(calls) == 2 and dataset_input.dataset.digest == "b" * 32
