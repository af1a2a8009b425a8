"""Which process an MLflow run belongs to, and ending the runs whose process is gone.

A process killed outright (kill -9, the out-of-memory killer) cannot end its run, which
then stays RUNNING. Every run the stages start or reopen is tagged with the host, pid and
start time of the process writing to it; the next training run of the project ends, as
KILLED, the RUNNING runs whose process no longer exists on this host. Runs of live
processes (queued experiments running side by side), of other hosts and without these
tags are left alone.
"""

from __future__ import annotations

import logging
import os
import socket
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

HOST_TAG = "fishseg.host"
PID_TAG = "fishseg.pid"
STARTED_TAG = "fishseg.pid_started"  # tells the process from a later one given the same pid


def process_started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (Linux ``/proc``); ``None`` elsewhere or if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Fields after the command name (which may hold spaces, inside parentheses); starttime is field 22.
    return stat.rsplit(")", 1)[1].split()[19]


def process_tags() -> dict[str, str]:
    """The tags that name this process as the one writing to a run."""
    pid = os.getpid()
    tags = {HOST_TAG: socket.gethostname(), PID_TAG: str(pid)}
    started = process_started(pid)
    if started is not None:
        tags[STARTED_TAG] = started
    return tags


def process_gone(tags: dict[str, str]) -> bool:
    """True when the process named by a run's tags has certainly ended (on this host)."""
    if tags.get(HOST_TAG) != socket.gethostname() or not tags.get(PID_TAG, "").isdigit():
        return False  # another host's, or untagged: no way to tell
    pid = int(tags[PID_TAG])
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # it exists, owned by another user
    started = tags.get(STARTED_TAG)
    now = process_started(pid)
    return started is not None and now is not None and now != started  # the pid was reused


def close_abandoned_runs(experiment_id: str) -> list[str]:
    """End as KILLED the experiment's RUNNING runs whose process is gone; their ids."""
    import mlflow

    client = mlflow.MlflowClient()
    closed = []
    for run in _running_runs(client, experiment_id):
        if process_gone(run.data.tags):
            log.warning(
                "MLflow run %s was left RUNNING by process %s, which is gone: marking it KILLED",
                run.info.run_id,
                run.data.tags[PID_TAG],
            )
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


def _running_runs(client: Any, experiment_id: str) -> list[Any]:
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], filter_string="attributes.status = 'RUNNING'", max_results=500, page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs
