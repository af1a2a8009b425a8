"""Fixtures and test-session settings; the helpers they use are in tests/helpers.py."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

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

from .helpers import tiny, write_prepared  # noqa: E402

torch.set_num_threads(1 if XDIST_WORKERS > 1 else 2)


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

START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM to the server's process group (the CLI and its uvicorn worker), SIGKILL if it hangs."""
    if proc.poll() is not None:
        return
    started = time.perf_counter()
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
    print(f"mlflow server stopped in {time.perf_counter() - started:.1f} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A running tracking server; its URL. Always stopped at the end of the module."""
    root = tmp_path_factory.mktemp("mlflow_server")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_file = (root / "server.log").open("w")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "server",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"mlflow server exited ({proc.returncode}):\n{(root / 'server.log').read_text()}")
            try:
                if requests.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.perf_counter() - started > START_TIMEOUT_S:
                pytest.fail(f"mlflow server not healthy after {START_TIMEOUT_S} s")
            time.sleep(0.25)
        print(f"mlflow server ready in {time.perf_counter() - started:.1f} s")
        yield {"url": url, "artifacts": root / "artifacts"}
    finally:
        _stop(proc)
        log_file.close()
