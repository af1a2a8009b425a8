"""End to end: the real `dvc repro`, `dvc exp run`, `dvc metrics diff` and MLflow store.

The repository is copied into a temp dir with a fresh git history and shrunk params
(tiny synthetic images, one or two epochs); every stage then runs as users run it.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
import yaml

from .helpers import BIN, copy_repo, dvc, generic_dataset, run_tool, tiny, write_params, zip_tree

pytestmark = pytest.mark.slow


def _stages_run(output: str) -> list[str]:
    return [line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("project")
    copy_repo(root)
    # The model logging runs here once end to end (tests/test_server.py reads one back).
    write_params(root, tiny(data={"synthetic": {"width": 80, "height": 60}}, mlflow={"log_model": True}))
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "baseline"]):
        run_tool(["git", *cmd], cwd=root)
    return root


def test_repro_runs_every_stage_and_writes_outputs(project):
    out = dvc("repro", cwd=project).stdout
    assert _stages_run(out) == ["download", "split", "stats", "train", "evaluate", "plot"]
    metrics = json.loads((project / "metrics" / "eval.json").read_text())
    data = json.loads((project / "metrics" / "data.json").read_text())
    assert data["n_images"] == 9 * 2 * 3 and data["straddling_pairs"] == 0
    # Evaluate scored the whole test split, and its scores come from one set of counts.
    assert metrics["n_images"] == data["split"]["test"] > 0
    assert metrics["dice"] == pytest.approx(2 * metrics["iou"] / (1 + metrics["iou"]), abs=1e-5)
    assert {p.name for p in (project / "plots" / "png").iterdir()} >= {
        "curves.png",
        "predictions_worst.png",
        "species_iou.png",
        "confusion.png",
    }
    run_tool(["git", "add", "-A"], cwd=project)
    run_tool(["git", "commit", "-qm", "reference run"], cwd=project)


def test_second_repro_is_a_no_op(project):
    out = dvc("repro", cwd=project).stdout
    assert _stages_run(out) == []


def test_plot_params_rerun_only_plot(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["plot"]["dpi"] = 41
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=project).stdout
    assert _stages_run(out) == ["plot"]
    # Back to the committed state: plot outputs are in git (cache: false), dvc.lock too.
    run_tool(["git", "checkout", "--", "params.yaml", "dvc.lock", "plots/png"], cwd=project)
    assert "up to date" in dvc("status", cwd=project).stdout


def test_experiment_with_scientific_lr_and_comparison(project):
    # The model logging is the baseline run's (and test_server's) to check: skipped here.
    out = dvc("exp", "run", "-S", "train.lr=1e-4", "-S", "mlflow.log_model=false", cwd=project).stdout
    assert _stages_run(out) == ["train", "evaluate", "plot"]
    shown = json.loads(dvc("exp", "show", "--json", cwd=project).stdout)
    lrs = []
    for baseline in shown:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs", []):
                data = (rev.get("data") or {}).get("params", {}).get("params.yaml", {}).get("data", {})
                lrs.append(data.get("train", {}).get("lr"))
    assert 1e-4 in lrs and all(isinstance(v, float) for v in lrs if v is not None)

    diff = json.loads(dvc("metrics", "diff", "HEAD", "--json", cwd=project).stdout)
    assert "metrics/eval.json" in diff and "iou" in diff["metrics/eval.json"]


def test_runs_are_in_the_project_store_with_lineage_tags(project):
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("fishseg")
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"])
    assert len(runs) >= 2
    first, last = runs[0], runs[-1]
    assert "test_iou" in first.data.metrics and "best_val_iou" in first.data.metrics
    assert last.data.params["train.lr"] == "0.0001"
    assert last.data.tags.get("dvc.exp_name")
    head = run_tool(["git", "rev-parse", "HEAD"], cwd=project).stdout.strip()
    assert last.data.tags["mlflow.source.git.commit"] == head
    run_json = json.loads((project / "models" / "run.json").read_text())
    assert run_json["run_id"] == last.info.run_id
    assert experiment.artifact_location.startswith((project / "mlartifacts").as_uri())


def test_bad_param_stops_with_the_key(project):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["lr"] = "fast"
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        proc = run_tool([str(BIN / "python"), "stages/train.py"], cwd=project, check=False)
    finally:
        run_tool(["git", "checkout", "params.yaml"], cwd=project)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "train.lr = 'fast'" in errors[0]


def test_temp_experiment_logs_to_the_project_store(project):
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name("fishseg").experiment_id
    before = len(client.search_runs([experiment_id]))
    dvc("exp", "run", "--temp", "-S", "train.epochs=1", "-S", "mlflow.log_model=false", cwd=project)
    runs = client.search_runs([experiment_id], order_by=["attributes.start_time DESC"])
    assert len(runs) == before + 1
    assert runs[0].data.params["train.epochs"] == "1" and runs[0].data.tags.get("dvc.exp_name")
    assert not list((project / ".dvc" / "tmp").rglob("mlflow.db"))


def test_local_archive_source_through_dvc(project, tmp_path):
    """`data.source: <zip>` runs through the same stages; the layout may be the generic one."""
    archive = zip_tree(generic_dataset(tmp_path / "mine", {"Trout": 4, "Shrimp": 4}), tmp_path / "mine.zip")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["data"]["source"] = str(archive)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        out = dvc("repro", "split", cwd=project).stdout
        assert _stages_run(out) == ["download", "split"]
        index = (project / "data" / "index.csv").read_text()
        assert index.count("\n") == 1 + 8 and "Trout/" in index and "Shrimp/" in index
    finally:
        run_tool(["git", "checkout", "params.yaml"], cwd=project)
