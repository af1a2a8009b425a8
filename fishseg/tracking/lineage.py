"""What a run is called, and which data and params it came from.

Run names: the DVC experiment's name under ``dvc exp run`` (``DVC_EXP_NAME``), else
``<branch>-<short commit>``, with ``-2``, ``-3``, ... when the MLflow experiment already
has a run of that name. MLflow's generated names come from Python's ``random``, which
the training seed fixes: every run would get the same one.

Data version, the MLflow way: the prepared arrays are logged as the run's input dataset
(``mlflow.log_input``) with the DVC hash of ``work/prepared`` as its digest, so the UI's
Datasets panel shows it and two runs on the same data show the same digest. Tags add the
DVC hash of ``work/raw`` and a hash of the params. The DVC hashes are those ``dvc.lock``
records: DVC writes each stage's outputs there as soon as the stage has run, so under
``dvc repro`` and ``dvc exp run`` the train stage finds its inputs' hashes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import warnings
from pathlib import Path
from typing import Any

import yaml

from fishseg.params import Params
from fishseg.paths import Paths, store_root

log = logging.getLogger(__name__)

RAW_TAG = "fishseg.data.raw_md5"
PREPARED_TAG = "fishseg.data.prepared_md5"
PARAMS_TAG = "fishseg.params_md5"


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def base_run_name(root: Path) -> str:
    """``DVC_EXP_NAME``, else ``<branch>-<short commit>`` (``<short commit>`` when detached)."""
    if os.environ.get("DVC_EXP_NAME"):
        return os.environ["DVC_EXP_NAME"]
    commit = _git(root, "rev-parse", "--short", "HEAD")
    if commit is None:
        return "run"  # not a git checkout
    branch = _git(root, "rev-parse", "--abbrev-ref", "HEAD")
    return commit if branch in (None, "HEAD") else f"{branch}-{commit}"


def unique_run_name(base: str, experiment_id: str) -> str:
    """``base``, or ``base-N`` with the lowest N >= 2 not yet taken in the experiment."""
    import mlflow

    escaped = base.replace("'", "\\'")
    runs = mlflow.search_runs(
        experiment_ids=[experiment_id],
        filter_string=f"attributes.run_name LIKE '{escaped}%'",
        output_format="list",
    )
    taken = {r.info.run_name for r in runs}
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


def run_name(experiment_id: str, root: Path) -> str:
    """The name of a new run: see the module docstring."""
    return unique_run_name(base_run_name(root), experiment_id)


def lock_hashes(root: Path) -> dict[str, str]:
    """Output path -> DVC md5 (``.dir`` cut off for folders), from ``dvc.lock``; empty without one."""
    try:
        lock = yaml.safe_load((root / "dvc.lock").read_text()) or {}
    except (OSError, yaml.YAMLError):
        return {}
    hashes = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if out.get("md5"):
                hashes[out["path"]] = str(out["md5"]).removesuffix(".dir")
    return hashes


def params_digest(params: Params) -> str:
    """md5 of the validated params as canonical JSON: equal params, equal digest, whatever the file's layout."""
    canonical = json.dumps(json.loads(params.model_dump_json()), sort_keys=True, separators=(",", ":"))
    return hashlib.md5(canonical.encode()).hexdigest()


def _log_input(dataset: Any) -> None:
    """``mlflow.log_input``, once more when a parallel run created the same dataset row at the same moment."""
    import mlflow

    from fishseg.tracking.store import concurrent_write

    try:
        mlflow.log_input(dataset, context="training")
    except mlflow.exceptions.MlflowException as exc:
        if not concurrent_write(exc):
            raise
        log.info("dataset %s: another run logged it at the same moment; logging it again", dataset.name)
        mlflow.log_input(dataset, context="training")


def log_data_version(params: Params, paths: Paths) -> dict[str, str]:
    """Log the active run's input dataset and lineage tags; return the tags set."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset

    hashes = lock_hashes(paths.root)
    raw_key = paths.raw_dir.relative_to(paths.root).as_posix()
    prepared_key = paths.prepared_dir.relative_to(paths.root).as_posix()
    tags = {PARAMS_TAG: params_digest(params)}
    if raw_key in hashes:
        tags[RAW_TAG] = hashes[raw_key]
    if prepared_key in hashes:
        tags[PREPARED_TAG] = hashes[prepared_key]
        height, width = params.data.image_size
        # The project's folder, not a temp copy's: `dvc exp run --temp` workspaces are removed.
        with warnings.catch_warnings():
            # MLflow registers its local-file source class twice and warns that it picks one.
            warnings.simplefilter("ignore", UserWarning)
            source = resolve_dataset_source(str(store_root(paths.root) / prepared_key))
        name = f"{params.data.source} ({height}x{width})"
        _log_input(MetaDataset(source, name=name, digest=hashes[prepared_key]))
    else:
        log.info("no DVC hash of %s in dvc.lock (not run by DVC?): no input dataset logged", prepared_key)
    mlflow.set_tags(tags)
    return tags
