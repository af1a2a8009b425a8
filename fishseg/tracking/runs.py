"""The training run: started (or reopened on resume) by train, continued by evaluate and plot.

``models/run.json`` records which MLflow run the trained model belongs to; the later
stages read it here and log to the same run.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from fishseg.fsutil import atomic_write_json
from fishseg.params import Params
from fishseg.tracking import store
from fishseg.tracking.liveness import close_abandoned_runs

log = logging.getLogger(__name__)


def start_training_run(params: Params, root: Path, run_id: str | None, extra_params: dict[str, Any]) -> Any:
    """Reopen ``run_id`` (a resumed training), else start a run with the params and ``extra_params``.

    First the runs of the experiment left RUNNING by killed processes are ended (KILLED).
    """
    import mlflow

    experiment_id = store.setup(params.mlflow, root)
    close_abandoned_runs(experiment_id)
    if run_id:
        run = store.reopen_run(run_id, experiment_id, root)
    else:
        run = mlflow.start_run(experiment_id=experiment_id, tags=store.run_tags(root))
        mlflow.log_params(params.flat())
        mlflow.log_params(extra_params)
    log.info("MLflow run %s (%s)", run.info.run_id, store.shown(mlflow.get_tracking_uri()))
    return run


def log_epoch(row: dict[str, float]) -> None:
    """The epoch's history row as metrics at step ``epoch``."""
    import mlflow

    mlflow.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=int(row["epoch"]))


def end_run(run: Any, status: str = "FINISHED") -> None:
    """End ``run`` (when there is one: only rank 0 has it)."""
    if run is not None:
        import mlflow

        mlflow.end_run(status=status)


def write_run_record(path: Path, run: Any) -> None:
    atomic_write_json(path, {"run_id": run.info.run_id, "experiment_id": run.info.experiment_id})


def read_run_id(path: Path) -> str | None:
    """The training run's id from ``models/run.json`` (``None`` without one)."""
    return json.loads(path.read_text())["run_id"] if path.is_file() else None
