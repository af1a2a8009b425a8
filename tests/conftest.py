"""Fixtures and test-session settings; the helpers they use are in tests/helpers.py."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest

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

from fishseg.params import Params  # noqa: E402
from fishseg.paths import Paths  # noqa: E402

from .helpers import mlflow_process, tiny, write_prepared  # noqa: E402

torch.set_num_threads(1 if XDIST_WORKERS > 1 else 2)


@pytest.fixture(autouse=True)
def _tracking_uri_left_unset():
    """``mlflow.set_tracking_uri`` exports ``MLFLOW_TRACKING_URI``, which outranks every later
    test's store in this process: each test ends with the variable unset, as it started."""
    yield
    os.environ.pop("MLFLOW_TRACKING_URI", None)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject addopts): one worker per core this process may use (the
    cgroup/affinity view, not the host's count), at most 8; the slow tests are a few files."""
    return max(1, min(8, len(os.sched_getaffinity(0))))


def pytest_collection_modifyitems(config, items) -> None:
    """``requires_cuda`` tests run where a CUDA GPU is visible and are skipped elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "requires_cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def tiny_params() -> Params:
    return tiny()


@dataclass(frozen=True)
class Trained:
    params: Params
    paths: Paths


@pytest.fixture(scope="session")
def trained(tmp_path_factory) -> Trained:
    """A tiny project after a real train stage run (``tiny()`` params), trained once per session.

    Shared: tests read its model and may add evaluate's outputs, but never change the model.
    """
    from fishseg.training.train import train

    params = tiny()
    paths = write_prepared(tmp_path_factory.mktemp("trained"))
    train(params, paths, progress=False)
    return Trained(params, paths)


# --------------------------------------------------------------------------- a real tracking server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running tracking server; its URL. Always stopped at the end of the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    artifacts = root / "artifacts"
    store = f"sqlite:///{root / 'mlflow.db'}"
    with mlflow_process(
        "server", store, root / "server.log", "--artifacts-destination", str(artifacts)
    ) as url:
        yield {"url": url, "artifacts": artifacts}
