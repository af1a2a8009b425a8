"""Hostile params files and secrets in tracking URIs.

Params: every stage loads the whole file first, so the download stage (the lightest) stands
for all of them: exit 2, one line naming params.yaml and the fix, memory bounded, nothing
written. Secrets: a password in ``MLFLOW_TRACKING_URI`` never reaches the output, the
MLflow run or an error message; in ``params.yaml`` (git, dvc.lock, MLflow params) it is
refused without being echoed.
"""

from __future__ import annotations

import socket
from pathlib import Path

import mlflow
import pytest
import yaml

from tests._hostile import (
    MLFLOW_BOUND_MB,
    REPO,
    assert_refused,
    run_command,
    scratch_project,
    stage,
    untouched,
)
from tests.helpers import make_good_raw, tiny, write_params, write_prepared

SECRET = "S3cret-pw"


def run_with_params(tmp_path: Path, text: str | bytes) -> tuple:
    root = scratch_project(tmp_path / "project")
    path = root / "params.yaml"
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    before = make_good_raw(root / "data" / "raw")
    return stage("download", root, timeout=60), root, before


def billion_laughs() -> str:
    """Nine levels of ten aliases each: 10^9 strings if anything expanded it."""
    lines = ['l0: &l0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for level in range(1, 9):
        refs = ", ".join([f"*l{level - 1}"] * 10)
        lines.append(f"l{level}: &l{level} [{refs}]")
    return "\n".join(lines) + "\ndata:\n  source: *l8\n"


CASES = {
    "alias_bomb": (
        billion_laughs(),
        ("unknown key 'l0'", "data.source = [[[[", "remove it or check its spelling"),
    ),
    "huge_integer": ("train:\n  epochs: " + "9" * 5000 + "\n", ("not a params file", "restore it from git")),
    "deep_nesting": (
        "data:\n  source: " + "[" * 50_000 + "]" * 50_000 + "\n",
        ("not a params file", "restore it from git"),
    ),
    "two_megabytes": (
        "# " + "x" * 2_000_000 + "\n",
        ("not a params file (at most 1048576)", "git checkout params.yaml"),
    ),
    "not_utf8": (b"data:\n  source: \xff\xfe\xfa\n", ("cannot read it", "restore it from git")),
    "image_size_65536": (
        "data:\n  image_size: [65536, 65536]\n",
        ("data.image_size = [65536, 65536]", "multiples of 32 from 32 to 4096"),
    ),
    "password_in_tracking_uri": (
        f"mlflow:\n  tracking_uri: postgresql://mlflow:{SECRET}@db/mlflow\n",
        ("mlflow.tracking_uri = 'postgresql://mlflow:***@db/mlflow'", "export MLFLOW_TRACKING_URI"),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_stage_refuses_a_hostile_params_file(tmp_path: Path, name: str) -> None:
    text, needles = CASES[name]
    outcome, root, before = run_with_params(tmp_path, text)
    assert_refused(outcome, str(root / "params.yaml"), *needles)
    assert SECRET not in outcome.out
    assert untouched(root / "data" / "raw", before)


# --------------------------------------------------------------------------- secrets


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens there once the socket is closed


UNREACHABLE = {
    "http": lambda: f"http://fish:{SECRET}@127.0.0.1:{closed_port()}",
    "postgresql": lambda: f"postgresql://mlflow:{SECRET}@127.0.0.1:{closed_port()}/mlflow",
}
FAST_FAIL = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(UNREACHABLE))
def test_train_with_a_password_in_the_store_uri_never_prints_it(tmp_path: Path, kind: str) -> None:
    paths = write_prepared(tmp_path / "project")
    write_params(paths.root, tiny())
    uri = UNREACHABLE[kind]()

    outcome = stage("train", paths.root, env={"MLFLOW_TRACKING_URI": uri, **FAST_FAIL})

    masked = uri.replace(SECRET, "***")
    assert_refused(
        outcome, f"MLflow store {masked} cannot be used", "MLFLOW_TRACKING_URI", bound_mb=MLFLOW_BOUND_MB
    )
    assert SECRET not in outcome.out


@pytest.mark.slow
def test_predict_from_a_store_with_a_password_never_prints_it(tmp_path: Path) -> None:
    uri = UNREACHABLE["http"]()
    (tmp_path / "photo.png").write_bytes(b"")
    argv = ["python", "-m", "fishseg.predict", str(tmp_path / "photo.png"), "--model", "runs:/0123abcd/model"]
    env = {"PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": uri, **FAST_FAIL}

    outcome = run_command([*argv, "--out", str(tmp_path / "out"), "--root", str(tmp_path)], tmp_path, env=env)

    assert_refused(
        outcome, "--model runs:/0123abcd/model: cannot fetch it", "check the URI", bound_mb=MLFLOW_BOUND_MB
    )
    assert SECRET not in outcome.out and not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_run_logged_through_a_uri_with_a_password_keeps_it_out(tmp_path: Path, server) -> None:  # noqa: F811
    """A real server (which ignores the credentials): the run succeeds, and the password is in
    neither the output (MLflow's own "View run at <URL>" included) nor the run's params and tags."""
    paths = write_prepared(tmp_path / "project")
    write_params(paths.root, tiny())
    uri = server["url"].replace("http://", f"http://fish:{SECRET}@")

    outcome = stage("train", paths.root, env={"MLFLOW_TRACKING_URI": uri, **FAST_FAIL})

    assert outcome.code == 0, outcome.out
    assert SECRET not in outcome.out
    assert f"http://fish:***@{server['url'].removeprefix('http://')}" in outcome.out
    run_id = yaml.safe_load((paths.root / "models" / "run.json").read_text())["run_id"]
    run = mlflow.MlflowClient(server["url"]).get_run(run_id)
    assert run.data.params and SECRET not in repr(run.data.params) + repr(run.data.tags)
