"""Several processes opening one new SQLite store at the same moment, as queued experiments do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import mlflow
import pytest

from .helpers import REPO

pytestmark = pytest.mark.slow  # three processes importing MLflow: ~30 s on 2 busy cores

PROCESSES = 3

# Waits for the file ``go``, then sets up the store the way every stage does.
OPEN_STORE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from fishseg.params import MlflowParams
    from fishseg.tracking import store

    uri, go = sys.argv[1], Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.01)
    print(store.setup(MlflowParams(tracking_uri=uri), Path.cwd()))
    """
)


def test_processes_starting_together_on_a_new_sqlite_store_all_succeed(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    go = tmp_path / "go"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("MLFLOW_TRACKING_URI", None)
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_STORE, uri, str(go)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    time.sleep(3)  # every process has imported MLflow and waits
    go.touch()
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    for code, _, err in results:
        assert code == 0, err
    assert len({out.strip() for _, out, _ in results}) == 1  # one experiment, the same id for all
    experiments = mlflow.MlflowClient(uri).search_experiments()
    assert [e.name for e in experiments if e.name != "Default"] == ["fishseg"]
