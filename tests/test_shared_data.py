"""The team's dataset under DVC: `dvc add data` -> `dvc push` -> a fresh clone -> `dvc pull` -> `dvc repro`.

Real git, real DVC, a real local remote (a folder, as `dvc remote add` sets for S3 or SSH),
the whole pipeline on tiny data: the sequence the README's "Shared data" section gives.
"""

from __future__ import annotations

import filecmp
import json
from pathlib import Path

import pytest
import yaml

from .helpers import copy_repo, dvc, fish_dataset, run_tool, snapshot, stages_run, tiny, write_params

pytestmark = pytest.mark.slow

GIT_USER = ["-c", "user.email=team@fishseg.invalid", "-c", "user.name=team"]


def _commit(root: Path, message: str) -> None:
    run_tool(["git", "add", "-A"], cwd=root)
    run_tool(["git", *GIT_USER, "commit", "-qm", message], cwd=root)


@pytest.fixture(scope="module")
def team(tmp_path_factory) -> dict[str, Path]:
    """The project after someone put a dataset under DVC, ran the pipeline and pushed."""
    base = tmp_path_factory.mktemp("team")
    origin, remote = base / "origin", base / "remote"
    origin.mkdir()
    copy_repo(origin)
    write_params(origin, tiny(data={"synthetic": {"width": 80, "height": 60}}))
    run_tool(["git", "init", "-q"], cwd=origin)
    _commit(origin, "project")

    # The dataset a teammate got once (here: a small one in the archive's layout).
    fish_dataset(origin / "data" / "fish", {"Trout": 8, "Shrimp": 8, "Sea Bass": 8})
    run_tool(["git", "rm", "-r", "-q", "--cached", "data"], cwd=origin)
    dvc("add", "data", cwd=origin)
    dvc("remote", "add", "-d", "-f", "storage", str(remote), cwd=origin)
    params = yaml.safe_load((origin / "params.yaml").read_text())
    params["data"]["source"] = "data"
    params["split"].update(val=0.2, test=0.2)
    (origin / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = dvc("repro", cwd=origin).stdout
    assert stages_run(out) == ["download", "split", "stats", "train", "evaluate", "plot"]
    _commit(origin, "the team's dataset, versioned by DVC, and a run on it")
    dvc("push", cwd=origin)
    return {"origin": origin, "remote": remote, "base": base}


def test_data_dvc_tracks_the_dataset_beside_the_pipeline(team):
    origin = team["origin"]
    tracked = yaml.safe_load((origin / "data.dvc").read_text())["outs"]
    assert [o["path"] for o in tracked] == ["data"] and tracked[0]["nfiles"] == 2 * 24 + 1  # + data/README.md
    assert "/data" in (origin / ".gitignore").read_text().splitlines()
    assert not run_tool(["git", "ls-files", "data"], cwd=origin).stdout  # git no longer tracks data/
    lock = yaml.safe_load((origin / "dvc.lock").read_text())["stages"]["download"]
    assert "data" in [d["path"] for d in lock["deps"]]  # the download stage depends on it


def test_a_fresh_clone_pulls_the_data_and_results_and_reruns_nothing(team):
    clone = team["base"] / "clone"
    run_tool(["git", "clone", "-q", str(team["origin"]), str(clone)], cwd=team["base"])
    assert not (clone / ".dvc" / "cache").exists() and not (clone / "data" / "fish").exists()

    dvc("pull", cwd=clone)
    assert snapshot(clone / "data") == snapshot(team["origin"] / "data")
    assert filecmp.cmp(clone / "work" / "index.csv", team["origin"] / "work" / "index.csv", shallow=False)
    assert (clone / "models" / "model" / "model.safetensors").is_file()

    out = dvc("repro", cwd=clone).stdout
    assert stages_run(out) == [] and "up to date" in out
    eval_json = json.loads((clone / "metrics" / "eval.json").read_text())
    assert list(eval_json)[:2] == ["test_iou", "test_dice"]


def test_a_new_version_of_the_data_reaches_the_clone_and_reruns_the_pipeline(team):
    origin, clone = team["origin"], team["base"] / "clone"
    fish_dataset(origin / "data" / "fish", {"Trout": 8, "Shrimp": 8, "Sea Bass": 8, "Red Mullet": 6})
    dvc("add", "data", cwd=origin)
    _commit(origin, "more fish")
    dvc("push", cwd=origin)

    run_tool(["git", "pull", "-q"], cwd=clone)
    dvc("pull", cwd=clone)
    assert (clone / "data" / "fish" / "Fish_Dataset" / "Fish_Dataset" / "Red Mullet").is_dir()
    status = dvc("status", "download", cwd=clone).stdout
    assert "modified:" in status and "data" in status  # the download stage sees the new data
    out = dvc("repro", "stats", cwd=clone).stdout
    assert stages_run(out) == ["download", "split", "stats"]
    assert json.loads((clone / "metrics" / "data.json").read_text())["pairs"] == 30
