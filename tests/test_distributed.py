"""Several processes: the torchrun launch, DDP on CPU (gloo), metrics reduced over ranks."""

import json
import signal
import time
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch

from fishseg.dataset.arrays import load_split
from fishseg.model.io import load_model
from fishseg.model.normalize import Normalizer
from fishseg.params import TrainParams
from fishseg.training import launch
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader
from fishseg.training.train import STATE_FILE, evaluate_loader, train

from .conftest import tiny, write_params, write_prepared
from .test_train import _read, _stage

COUNTS = {"train": 32, "val": 6, "test": 2}


def _runs(root):
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("fishseg").experiment_id])


def test_launch_only_outside_torchrun():
    two = TrainParams(nproc_per_node=2)
    assert launch.needs_launch(two, env={})
    assert not launch.needs_launch(two, env={"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert not launch.needs_launch(TrainParams(nproc_per_node=1), env={})
    args = launch.torchrun_args(2, "stages/train.py", ["--root", "x"], 29999)
    assert args[:2] == ["--nnodes=1", "--nproc_per_node=2"] and "--master_addr=127.0.0.1" in args
    assert Path(args[5]).is_absolute() and args[5].endswith("stages/train.py")
    assert args[6:] == ["--root", "x"]


def test_val_shards_cover_each_item_once():
    shards = [list(EpochSampler(7, shuffle=False, seed=0, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(7))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The train stage on 2 CPU processes (gloo), 2 images per process and step."""
    paths = write_prepared(tmp_path_factory.mktemp("ddp"), counts=COUNTS)
    write_params(paths.root, tiny(train={"nproc_per_node": 2, "batch_size": 2}))
    proc = _stage(paths.root)
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, out
    return paths, out


@pytest.mark.slow
def test_two_processes_train_like_one_with_twice_the_batch(ddp_run, tmp_path):
    paths, out = ddp_run
    assert "starting 2 training processes" in out
    result = _read(paths, "train.json")
    assert out.count("best val IoU") == 1  # rank 0 alone reports and writes
    assert 0.0 <= result["best_val_iou"] <= 1.0 and result["epochs_run"] == 2
    client, runs = _runs(paths.root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_iou")) == 2

    # Val metrics summed over both ranks' shards = one process scoring the whole split.
    stats = json.loads(paths.stats_json.read_text())
    meter, _, _ = evaluate_loader(
        load_model(paths.model_dir),
        make_loader(
            SegmentationDataset(load_split(paths, "val")),
            EpochSampler(COUNTS["val"], shuffle=False, seed=0),
            batch_size=4,
            num_workers=0,
            pin_memory=False,
        ),
        loss_fn=None,
        normalizer=Normalizer(stats["mean"], stats["std"]),
        device=torch.device("cpu"),
        amp_dtype=None,
    )
    assert meter.result()["iou"] == pytest.approx(result["best_val_iou"], abs=1e-5)

    # The same items per step as 1 process x 4 images: close, not equal (batch-norm
    # statistics and the Dice term are per process).
    single = write_prepared(tmp_path / "single", counts=COUNTS)
    train(tiny(train={"batch_size": 4}), single, progress=False)
    ddp = pd.read_csv(paths.plots_dir / "train" / "history.csv")
    one = pd.read_csv(single.plots_dir / "train" / "history.csv")
    assert np.allclose(ddp["lr"], one["lr"])
    assert np.allclose(ddp["train_loss"], one["train_loss"], rtol=0.05)


@pytest.mark.slow
def test_two_processes_resume_to_the_same_result(ddp_run, tmp_path):
    paths = write_prepared(tmp_path / "broken", counts=COUNTS)
    write_params(paths.root, tiny(train={"nproc_per_node": 2, "batch_size": 2}))
    proc = _stage(paths.root)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if "epoch 1/2" in line:
            time.sleep(0.3)  # into epoch 2
            proc.send_signal(signal.SIGTERM)  # to torchrun's agent, which passes it on
            break
    out = "".join(lines) + proc.stdout.read()
    assert proc.wait(timeout=120) != 0, out
    assert "interrupted in epoch 2" in out
    state = torch.load(paths.last_dir / STATE_FILE, weights_only=True)
    assert state["progress"]["completed"] is False and state["progress"]["step"] > 0

    resumed = _stage(paths.root)
    out = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, out
    assert "resuming from" in out
    assert _read(paths, "train.json") == _read(ddp_run[0], "train.json")
    _, runs = _runs(paths.root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
