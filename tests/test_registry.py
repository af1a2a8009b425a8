"""Registration and the `champion` alias, against a real SQLite MLflow store."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.models import infer_signature

from fishseg.model.inference import InferenceModel
from fishseg.params import ParamsError, parse_params
from fishseg.tracking import store as tracking
from fishseg.tracking.registry import CHAMPION, SCORE_TAG, maybe_register

from .helpers import REPO, tiny


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory):
    """One SQLite store for the module (creating one takes seconds); each test uses its own names."""
    root = tmp_path_factory.mktemp("registry")
    params = tiny(mlflow={"tracking_uri": f"sqlite:///{root / 'mlflow.db'}", "log_model": True})
    experiment_id = tracking.setup(params.mlflow, root)
    return params, mlflow.MlflowClient(params.mlflow.tracking_uri), experiment_id


@pytest.fixture
def store(shared_store, request):
    """Params registering under a name of this test's own, the client and the experiment id."""
    params, client, experiment_id = shared_store
    tracking.use_store(params.mlflow, Path("."))  # another module may have moved MLflow elsewhere
    name = request.node.name.replace("_", "-")
    mlflow_params = {"tracking_uri": params.mlflow.tracking_uri, "log_model": True, "register_model": name}
    return tiny(mlflow=mlflow_params), client, experiment_id, name


def _run_with_model(experiment_id: str, log_model: bool = True) -> str:
    """A finished run that logged a (tiny) packaged model the way training does: pt2, signature, example."""
    torch.manual_seed(0)
    model = InferenceModel(torch.nn.Conv2d(3, 1, 3, padding=1), [0.2, 0.3, 0.6], [0.2, 0.1, 0.1]).eval()
    example = np.random.default_rng(0).uniform(0, 255, (2, 3, 32, 32)).astype(np.float32)
    with mlflow.start_run(experiment_id=experiment_id) as run:
        if log_model:
            with torch.no_grad():
                output = model(torch.from_numpy(example)).numpy()
            mlflow.pytorch.log_model(
                model,
                name="model",
                signature=infer_signature(example, output),
                input_example=example,
                pip_requirements=["torch"],
            )
    return run.info.run_id


def test_champion_moves_only_to_a_better_test_iou(store):
    params, client, experiment_id, name = store
    first, worse, better = (_run_with_model(experiment_id) for _ in range(3))

    got = maybe_register(params, first, 0.5)
    assert got == {
        "name": name,
        "version": "1",
        "model_uri": f"models:/{name}/1",
        "test_iou": 0.5,
        "champion": True,
        "previous_champion": None,
    }
    got = maybe_register(params, worse, 0.4)
    assert got["version"] == "2" and got["champion"] is False and got["previous_champion"] == "1"
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"

    got = maybe_register(params, better, 0.6)
    assert got["version"] == "3" and got["champion"] is True
    champion = client.get_model_version_by_alias(name, CHAMPION)
    assert str(champion.version) == "3" and champion.run_id == better
    assert champion.tags[SCORE_TAG] == "0.6"
    versions = {str(v.version): v for v in client.search_model_versions(f"name = '{name}'")}
    assert set(versions) == {"1", "2", "3"} and versions["2"].tags[SCORE_TAG] == "0.4"
    assert all(v.current_stage == "None" for v in versions.values())  # aliases, no stages
    # the alias is what consumers load
    loaded = mlflow.pytorch.load_model(f"models:/{name}@{CHAMPION}")
    assert tuple(loaded(torch.zeros(1, 3, 32, 32)).shape) == (1, 1, 32, 32)


def test_reevaluating_a_run_rescores_its_version(store):
    params, client, experiment_id, name = store
    run_id = _run_with_model(experiment_id)
    maybe_register(params, run_id, 0.5)
    again = maybe_register(params, run_id, 0.45)
    assert again["version"] == "1" and again["champion"] is True
    assert len(client.search_model_versions(f"name = '{name}'")) == 1
    assert client.get_model_version(name, "1").tags[SCORE_TAG] == "0.45"


def test_a_champion_chosen_by_hand_stays(store, caplog):
    params, client, experiment_id, name = store
    first, second = _run_with_model(experiment_id), _run_with_model(experiment_id)
    maybe_register(params, first, 0.5)
    client.delete_model_version_tag(name, "1", SCORE_TAG)
    with caplog.at_level(logging.WARNING, logger="fishseg"):
        got = maybe_register(params, second, 0.9)
    assert got["champion"] is False and "has no test_iou tag" in caplog.text
    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "1"


def test_nothing_to_register(store, caplog):
    params, client, experiment_id, name = store
    off = tiny(mlflow={"tracking_uri": params.mlflow.tracking_uri, "log_model": True})
    assert maybe_register(off, _run_with_model(experiment_id, log_model=False), 0.9) is None
    with caplog.at_level(logging.WARNING, logger="fishseg"):
        assert maybe_register(params, _run_with_model(experiment_id, log_model=False), 0.9) is None
        assert maybe_register(params, None, 0.9) is None
    assert "logged no model" in caplog.text
    assert client.search_registered_models(f"name = '{name}'") == []


def test_registration_needs_a_logged_model_in_params():
    with pytest.raises(ParamsError, match="register_model needs mlflow.log_model: true"):
        parse_params({"mlflow": {"register_model": "fish", "log_model": False}})
    with pytest.raises(ParamsError, match="mlflow.register_model"):
        parse_params({"mlflow": {"register_model": "  "}})
    assert parse_params({}).mlflow.register_model is None


# Another evaluate, in its own process, that is slow to move the alias: it stops right
# before its first move until the file ``release`` appears.
SLOW_EVALUATE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import mlflow
    from fishseg.params import Params
    from fishseg.tracking.registry import maybe_register

    uri, name, run_id, score, paused, release = sys.argv[1:7]
    params = Params.model_validate({"mlflow": {"log_model": True, "register_model": name}})
    move = mlflow.MlflowClient.set_registered_model_alias

    def slow_move(self, *args, **kwargs):
        if not Path(paused).exists():
            Path(paused).touch()
            while not Path(release).exists():
                time.sleep(0.05)
        return move(self, *args, **kwargs)

    mlflow.MlflowClient.set_registered_model_alias = slow_move
    mlflow.set_tracking_uri(uri)
    print(maybe_register(params, run_id, float(score)))
    """
)


def test_a_slow_worse_evaluate_cannot_leave_the_alias_on_its_model(store, tmp_path):
    """Two evaluates at once: the worse one decides first but moves the alias last."""
    params, client, experiment_id, name = store
    worse, better = _run_with_model(experiment_id), _run_with_model(experiment_id)
    paused, release = tmp_path / "paused", tmp_path / "release"
    argv = [mlflow.get_tracking_uri(), name, worse, "0.7", str(paused), str(release)]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    slow = subprocess.Popen(
        [sys.executable, "-c", SLOW_EVALUATE, *argv], env=env, text=True, stdout=subprocess.PIPE
    )
    try:
        deadline = time.monotonic() + 120
        while not paused.exists():  # it has registered, seen no better model, and is about to move
            assert slow.poll() is None and time.monotonic() < deadline, "the slow evaluate did not get there"
            time.sleep(0.05)
        got = maybe_register(params, better, 0.8)
        assert got["champion"] is True and got["version"] == "2"
    finally:
        release.touch()
        out, _ = slow.communicate(timeout=120)
    assert slow.returncode == 0 and "'version': '1'" in out
    holder = client.get_model_version_by_alias(name, CHAMPION)
    assert str(holder.version) == "2" and holder.run_id == better


# What a tracking server answered when two evaluates inserted the alias row at once.
ALIAS_RACE = {
    "error_code": "BAD_REQUEST",
    "message": "(sqlite3.IntegrityError) UNIQUE constraint failed: registered_model_aliases.workspace, "
    "registered_model_aliases.name, registered_model_aliases.alias",
}


def test_an_alias_write_that_collides_with_another_evaluate_is_read_again(store, monkeypatch, caplog):
    """The other evaluate sets the alias first, this one's insert fails: it re-reads and settles."""
    from mlflow.exceptions import RestException

    params, client, experiment_id, name = store
    worse, better = _run_with_model(experiment_id), _run_with_model(experiment_id)
    first = maybe_register(params, worse, 0.6)
    assert first["champion"] is True
    client.delete_registered_model_alias(name, CHAMPION)  # as if neither had moved it yet
    move = mlflow.MlflowClient.set_registered_model_alias
    collided = []

    def colliding_move(self, model, alias, version):
        if not collided:  # the other evaluate's move lands first; this insert then fails
            collided.append(version)
            move(self, model, alias, first["version"])
            raise RestException(ALIAS_RACE)
        return move(self, model, alias, version)

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", colliding_move)
    with caplog.at_level(logging.INFO, logger="fishseg.tracking.registry"):
        got = maybe_register(params, better, 0.8)
    assert collided and got["champion"] is True
    assert "moved it at the same moment" in caplog.text
    holder = client.get_model_version_by_alias(name, CHAMPION)
    assert str(holder.version) == got["version"] and holder.run_id == better


def test_other_alias_errors_are_not_taken_for_a_collision(store, monkeypatch):
    from mlflow.exceptions import RestException

    params, client, experiment_id, name = store
    run_id = _run_with_model(experiment_id)

    def refused(self, model, alias, version):
        raise RestException({"error_code": "PERMISSION_DENIED", "message": "no write access to models"})

    monkeypatch.setattr(mlflow.MlflowClient, "set_registered_model_alias", refused)
    with pytest.raises(RestException, match="no write access"):
        maybe_register(params, run_id, 0.5)
