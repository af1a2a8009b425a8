"""MLflow set-up: the one place that decides where runs go and what they are tagged with.

Default store: ``sqlite:///<project>/mlflow.db``, with artifacts in ``<project>/mlartifacts``,
where ``<project>`` is the real project even when a stage runs in DVC's temp copy
(``dvc exp run --temp/--queue``). ``MLFLOW_TRACKING_URI`` (or ``mlflow.tracking_uri``)
points runs at any other store or server.

A URI may carry a password (``postgresql://user:pw@db/mlflow``, ``https://user:token@host``):
only ``MLFLOW_TRACKING_URI`` may hold one (params refuse it), and the URI is shown
everywhere with the password masked (:func:`shown`), MLflow's own "View run at <URL>"
line included.
"""

from __future__ import annotations

import fcntl
import logging
import os
import subprocess
import warnings
from pathlib import Path

from fishseg.errors import FishsegError
from fishseg.params import MlflowParams
from fishseg.paths import store_root
from fishseg.redact import redact_text, redact_uri, uri_secrets
from fishseg.tracking.liveness import process_tags

log = logging.getLogger(__name__)

# MLflow's SQL store warns about SQLAlchemy internals on every use; nothing to act on.
warnings.filterwarnings("ignore", category=DeprecationWarning, module="sqlalchemy")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


# How a store reports two writes that raced: a row both inserted (a tracking server's
# get-or-create of a dataset or an alias), or a busy SQLite file.
CONCURRENT_WRITE = ("unique constraint", "integrityerror", "duplicate", "database is locked")


def concurrent_write(exc: BaseException) -> bool:
    """Whether an MLflow error is another process's write colliding with ours (worth one more try)."""
    return any(mark in str(exc).lower() for mark in CONCURRENT_WRITE)


def tracking_uri(params: MlflowParams, root: Path) -> str:
    """``MLFLOW_TRACKING_URI`` wins, then ``mlflow.tracking_uri``, then the project's SQLite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking_uri
    if uri:
        return uri
    return f"sqlite:///{store_root(root) / 'mlflow.db'}"


def shown(uri: str) -> str:
    """The URI as logs and messages may show it: user name kept, password masked."""
    return redact_uri(uri)


def unusable(uri: str, exc: BaseException) -> FishsegError:
    """One line for a store that cannot be reached or used, with any secret masked."""
    reason = redact_text(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}", uri)
    return FishsegError(
        f"MLflow store {shown(uri)} cannot be used ({reason[:300]}); check MLFLOW_TRACKING_URI "
        "or mlflow.tracking_uri, and that the server or database is up"
    )


def _is_local_store(uri: str) -> bool:
    return uri.startswith(("sqlite:", "postgresql", "mysql", "mssql"))


# SQLite stores this process has seen with all their tables.
_READY_SQLITE: set[str] = set()


def _ready_sqlite_store(uri: str) -> None:
    """Create a SQLite store's tables, if it has none yet, under a file lock beside it.

    Two queued experiments starting at once against a new store would both run MLflow's
    schema migration, and one fails ("Online migration expected to match one row").
    """
    path = uri[len("sqlite:///") :].split("?")[0] if uri.startswith("sqlite:///") else ""
    if not path or uri in _READY_SQLITE:
        return
    import mlflow

    db = Path(path)
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(f"{db.name}-lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
        client = mlflow.MlflowClient(uri, registry_uri=uri)
        client.search_experiments(max_results=1)  # the tracking store creates its tables
        client.search_registered_models(max_results=1)  # and the registry's store checks them
    _READY_SQLITE.add(uri)


def use_store(params: MlflowParams, root: Path) -> str:
    """Point MLflow at the store (the registry follows it) without creating anything; return the URI."""
    import mlflow

    uri = tracking_uri(params, root)
    if uri_secrets(uri):
        # MLflow prints "View run at <store URL>" after each run, password included.
        os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"
    previous = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    # MLflow exports the URI to the environment, where it would outrank the params of the
    # next setup in this process: leave the environment as the user set it.
    if previous is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = previous
    return uri


def setup(params: MlflowParams, root: Path) -> str:
    """Point MLflow at the store and return the experiment id (created if missing)."""
    import mlflow

    uri = use_store(params, root)
    _ready_sqlite_store(uri)
    try:
        experiment = mlflow.get_experiment_by_name(params.experiment)
    except Exception as exc:  # the store's own errors: HTTP, SQL drivers, missing packages
        raise unusable(uri, exc) from None
    if experiment is not None:
        return experiment.experiment_id
    # A database store would put artifacts under the *current* directory: pin them to the
    # project instead, so temp-dir experiments and the workspace share one location.
    location = (store_root(root) / "mlartifacts").as_uri() if _is_local_store(uri) else None
    try:
        return mlflow.create_experiment(params.experiment, artifact_location=location)
    except mlflow.exceptions.MlflowException:
        # Another process (a queued experiment) created it first.
        return mlflow.get_experiment_by_name(params.experiment).experiment_id


def git_commit(root: Path) -> str | None:
    """The commit the code runs at (``None`` outside git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def run_tags(root: Path) -> dict[str, str]:
    """Lineage tags: git commit, the DVC experiment this run belongs to, if any, and the process writing it."""
    tags = {"mlflow.source.type": "PROJECT", "mlflow.source.name": "dvc repro", **process_tags()}
    commit = git_commit(root)
    if commit:
        tags["mlflow.source.git.commit"] = commit
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV", "dvc.exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
            if env == "DVC_EXP_NAME":
                tags["mlflow.source.name"] = "dvc exp run"
    return tags


def reopen_run(run_id: str | None, experiment_id: str, root: Path):
    """Continue ``run_id`` (evaluate and plot add to training's run); a new run if it is gone."""
    import mlflow

    if run_id:
        try:
            mlflow.get_run(run_id)
            # This process takes the run over before it is RUNNING again: a check for runs
            # abandoned by dead processes never sees it running under its previous process.
            tags = [mlflow.entities.RunTag(k, v) for k, v in process_tags().items()]
            mlflow.MlflowClient().log_batch(run_id, tags=tags)
            return mlflow.start_run(run_id=run_id)
        except mlflow.exceptions.MlflowException:
            log.warning(
                "MLflow run %s is not in %s; logging to a new run", run_id, shown(mlflow.get_tracking_uri())
            )
    from fishseg.tracking.lineage import run_name

    run = mlflow.start_run(
        experiment_id=experiment_id, run_name=run_name(experiment_id, root), tags=run_tags(root)
    )
    if run_id:
        mlflow.set_tag("fishseg.training_run_id", run_id)
    return run
