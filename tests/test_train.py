import json
import signal
import time

import mlflow
import pandas as pd
import pytest
import torch

from fishseg.training.history import HISTORY_COLUMNS
from fishseg.training.state import STATE_FILE, load_state
from fishseg.training.train import train

from .helpers import read_metrics, start_stage, tiny, write_params, write_prepared


def test_tiny_training_writes_everything_and_logs_to_mlflow(tmp_path, tiny_params):
    paths = write_prepared(tmp_path)
    result = train(tiny_params, paths, progress=False)

    assert result == read_metrics(paths, "train.json")
    history = pd.read_csv(paths.plots_dir / "train" / "history.csv")
    assert list(history.columns) == list(HISTORY_COLUMNS) and history["epoch"].tolist() == [1, 2]
    # The train split's blobs are learnt: loss falls, IoU rises well above a chance overlap.
    assert history["train_loss"].iloc[-1] < 0.85 * history["train_loss"].iloc[0]
    assert history["train_iou"].iloc[-1] > 0.4 > history["train_iou"].iloc[0]
    best = history.loc[history["val_iou"].idxmax()]
    assert result["best_epoch"] == best["epoch"] and result["best_val_iou"] == best["val_iou"] > 0.25
    assert {"config.json", "model.safetensors", "preprocessing.json"} <= {
        p.name for p in paths.model_dir.iterdir()
    }
    # The preprocessing record holds the normalisation and size, not a threshold of its own.
    stats = json.loads(paths.stats_json.read_text())
    assert json.loads((paths.model_dir / "preprocessing.json").read_text()) == {
        "mean": stats["mean"],
        "std": stats["std"],
        "image_size": [32, 32],
    }
    state = torch.load(paths.last_dir / STATE_FILE, weights_only=True)
    assert state["progress"]["completed"] is True

    run_id = json.loads(paths.run_json.read_text())["run_id"]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    run = client.get_run(run_id)
    assert run.data.params["train.lr"] == str(tiny_params.train.lr)
    assert run.data.metrics["best_val_iou"] == pytest.approx(result["best_val_iou"])
    assert len(client.get_metric_history(run_id, "val_iou")) == 2
    artifacts = {a.path for a in client.list_artifacts(run_id, "checkpoint")}
    assert "checkpoint/model.safetensors" in artifacts


def test_training_is_deterministic_on_cpu(tmp_path, tiny_params):
    a = write_prepared(tmp_path / "a")
    b = write_prepared(tmp_path / "b")
    train(tiny_params, a, progress=False)
    train(tiny_params, b, progress=False)
    assert read_metrics(a, "train.json") == read_metrics(b, "train.json")
    assert (a.plots_dir / "train" / "history.csv").read_text() == (
        b.plots_dir / "train" / "history.csv"
    ).read_text()


@pytest.mark.slow
def test_interrupted_training_resumes_to_the_same_result(tmp_path):
    params = tiny(train={"epochs": 3, "batch_size": 2})
    counts = {"train": 24, "val": 4, "test": 4}
    straight = write_prepared(tmp_path / "straight", counts=counts)
    write_params(straight.root, params)
    assert start_stage(straight.root, "train").wait(timeout=300) == 0

    broken = write_prepared(tmp_path / "broken", counts=counts)
    write_params(broken.root, params)
    proc = start_stage(broken.root, "train")
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/3" in line:
            time.sleep(0.3)  # well into epoch 2
            proc.send_signal(signal.SIGTERM)
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) != 0, out
    assert "interrupted" in out and "resume" in out
    state = torch.load(broken.last_dir / STATE_FILE, weights_only=True)
    assert state["progress"]["completed"] is False and state["progress"]["epoch"] == 1
    assert not (broken.metrics_dir / "train.json").exists()

    resumed = start_stage(broken.root, "train")
    out = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, out
    assert "resuming from" in out
    assert read_metrics(broken, "train.json") == read_metrics(straight, "train.json")
    # one MLflow run, continued
    client = mlflow.MlflowClient(f"sqlite:///{broken.root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("fishseg").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_iou")) == 3


def test_stale_state_for_other_params_starts_fresh(tmp_path, tiny_params, caplog):
    paths = write_prepared(tmp_path)
    train(tiny_params, paths, progress=False)
    state = torch.load(paths.last_dir / STATE_FILE, weights_only=True)
    state["progress"]["completed"] = False
    state["progress"]["epoch"] = 1
    torch.save(state, paths.last_dir / STATE_FILE)
    with caplog.at_level("INFO"):
        result = train(tiny(train={"lr": 0.01}), paths, progress=False)
    assert "starting fresh" in caplog.text
    assert result["epochs_run"] == 2


def test_frozen_encoder_stays_as_built_while_the_decoder_learns(tmp_path, monkeypatch):
    from fishseg.model.io import load_model
    from fishseg.training import engine

    built = {}
    real_build = engine.build_model

    def recording_build(model_params):
        model = real_build(model_params)
        built.update({k: v.clone() for k, v in model.state_dict().items()})
        return model

    monkeypatch.setattr(engine, "build_model", recording_build)
    paths = write_prepared(tmp_path, counts={"train": 8, "val": 4, "test": 2})
    train(tiny(model={"freeze_encoder": True}, train={"epochs": 1}), paths, progress=False)
    trained = load_model(paths.model_dir).state_dict()
    encoder = [k for k in trained if k.startswith("encoder.")]
    decoder = [k for k in trained if k.startswith("decoder.") and trained[k].is_floating_point()]
    # Weights and batch-norm statistics alike: a frozen encoder is left exactly as built.
    assert encoder and all(torch.equal(trained[k], built[k]) for k in encoder)
    assert sum(not torch.equal(trained[k], built[k]) for k in decoder) > len(decoder) // 2


def test_a_state_file_holding_code_is_refused_not_run(tmp_path, caplog):
    from pathlib import Path

    marker = tmp_path / "code-ran"

    class Payload:
        def __reduce__(self):
            return (Path.touch, (marker,))

    path = tmp_path / STATE_FILE
    torch.save({"progress": Payload(), "model": {"w": torch.zeros(2)}}, path)
    with caplog.at_level("WARNING"):
        assert load_state(path) is None
    assert "ignoring unreadable resume state" in caplog.text
    assert not marker.exists()
