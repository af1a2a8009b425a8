"""Interrupted training under the real `dvc repro`: stopped by SIGTERM or killed with SIGKILL.

DVC deletes the train stage's outputs (all but the persisted ``models/last``) before it
reruns the stage, so whatever a resume needs must come from the state. Each test
interrupts a training of a real git + DVC project, runs `dvc repro` again and checks
that the stage ends with outputs byte for byte those of an uninterrupted run.
"""

from __future__ import annotations

import json
import math
import signal
import subprocess
from pathlib import Path

import mlflow
import psutil
import pytest
import torch
import yaml

from fishseg.paths import Paths

from .helpers import BIN, copy_repo, dvc, run_tool, tiny, tool_env, write_params

pytestmark = pytest.mark.slow

# One thread per stage process: they share a small machine with the test run.
ENV = tool_env(OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
# patience 1: the run stops after its first epoch without a val IoU gain, so the best
# epoch is never the last one, and an interrupted run has no later best to rewrite it.
PARAMS = tiny(data={"synthetic": {"width": 80, "height": 60}}, train={"epochs": 4, "patience": 1})
# What the train stage writes that must not depend on being interrupted (models/run.json
# names the MLflow run, which differs when a run starts fresh).
OUTPUTS = ("models/model", "metrics/train.json", "plots/train/history.csv")


def _snapshot(root: Path) -> dict[str, bytes]:
    files = {}
    for rel in OUTPUTS:
        path = root / rel
        for p in sorted(path.rglob("*")) if path.is_dir() else [path]:
            files[p.relative_to(root).as_posix()] = p.read_bytes()
    return files


def _locked_hashes(root: Path) -> dict[str, str]:
    """The train stage's output hashes in dvc.lock."""
    outs = yaml.safe_load((root / "dvc.lock").read_text())["stages"]["train"]["outs"]
    return {o["path"]: o["md5"] for o in outs if o["path"] in OUTPUTS}


def _runs(root: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client.search_runs([client.get_experiment_by_name("fishseg").experiment_id])


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A project after an uninterrupted `dvc repro train`, with what it wrote."""
    root = tmp_path_factory.mktemp("resume")
    copy_repo(root)
    write_params(root, PARAMS)
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "baseline"]):
        run_tool(["git", *cmd], cwd=root)
    dvc("repro", "train", cwd=root, env=ENV)
    summary = json.loads((root / "metrics" / "train.json").read_text())
    n_train = len(json.loads((Paths(root).prepared_split("train") / "ids.json").read_text()))
    return {
        "root": root,
        "files": _snapshot(root),
        "hashes": _locked_hashes(root),
        "summary": summary,
        "steps_per_epoch": math.ceil(n_train / PARAMS.train.batch_size),
    }


def _assert_as_uninterrupted(project: dict, out: str) -> None:
    """The stage's outputs and their dvc.lock hashes are the uninterrupted run's; nothing left running."""
    root = project["root"]
    assert _snapshot(root) == project["files"], out
    assert _locked_hashes(root) == project["hashes"]
    # Nothing left by a cut write: no partial state file, no half-written model folder.
    assert sorted(p.name for p in (root / "models").iterdir()) == [".gitignore", "last", "model", "run.json"]
    assert [p.name for p in (root / "models" / "last").iterdir()] == ["state.pt"]
    assert {r.info.status for r in _runs(root)} <= {"FINISHED", "KILLED"}
    run_id = json.loads((root / "models" / "run.json").read_text())["run_id"]
    assert mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}").get_run(run_id).info.status == "FINISHED"
    assert "Data and pipelines are up to date" in dvc("status", "train", cwd=root, env=ENV).stdout


def _stage_process(parent: int, script: str = "stages/train.py") -> psutil.Process:
    """The Python process DVC started for a stage (DVC may run it through a shell)."""
    for child in psutil.Process(parent).children(recursive=True):
        if child.name().startswith("python") and script in " ".join(child.cmdline()):
            return child
    raise AssertionError(f"no {script} process under {parent}")


def test_sigterm_after_the_best_epoch_then_dvc_repro_gives_the_uninterrupted_outputs(project):
    root, best = project["root"], project["summary"]["best_epoch"]
    assert best < project["summary"]["epochs_run"], "these params must stop after a later, worse epoch"

    proc = subprocess.Popen(
        [str(BIN / "dvc"), "repro", "--force", "--single-item", "train"],
        cwd=root,
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f"epoch {best}/" in line:  # the best epoch just closed: stop in the next one
            _stage_process(proc.pid).send_signal(signal.SIGTERM)
    out = "".join(lines)
    assert proc.wait(timeout=300) != 0, out
    assert f"training interrupted in epoch {best + 1}" in out
    progress = torch.load(root / "models" / "last" / "state.pt", weights_only=True)["progress"]
    assert progress["epoch"] == best and progress["step"] > 0 and not progress.get("trained")

    resumed = dvc("repro", "train", cwd=root, env=ENV)
    out = resumed.stdout + resumed.stderr
    assert "resuming from" in out and f"epoch {best}/" not in out  # the epochs done are not run again
    _assert_as_uninterrupted(project, out)


@pytest.mark.parametrize(
    "fault, retrains",
    [
        ("step@1", True),  # in the first step, before any state was saved: starts fresh
        ("step@{after_epoch_1}", True),  # during a step, a state saved at the end of epoch 1
        ("write:state.pt@2", True),  # during the checkpoint write at the end of epoch 2
        ("write:preprocessing.json", False),  # during the model save at the end: training done
        ("write:train.json", False),  # between two outputs: the model written, the metrics not
    ],
)
def test_kill_9_then_dvc_repro_gives_the_uninterrupted_outputs(project, fault, retrains):
    root = project["root"]
    fault = fault.format(after_epoch_1=project["steps_per_epoch"] + 1)
    killed = dvc(
        "repro",
        "--force",
        "--single-item",
        "train",
        cwd=root,
        check=False,
        env={**ENV, "FISHSEG_FAULT": fault},
    )
    assert killed.returncode != 0 and "-9" in killed.stdout + killed.stderr, killed.stdout + killed.stderr

    recovered = dvc("repro", "train", cwd=root, env=ENV)
    out = recovered.stdout + recovered.stderr
    if retrains:
        assert "epoch 2/" in out
    else:
        assert "training done, writing the outputs" in out and "epoch 1/" not in out
    if fault.startswith("write:state.pt"):
        assert "left by an interrupted write of state.pt" in out
    _assert_as_uninterrupted(project, out)
