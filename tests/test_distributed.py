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
from fishseg.evaluation.metrics import EpochMeter
from fishseg.model.forward import Forward
from fishseg.model.io import load_model
from fishseg.model.normalize import Normalizer
from fishseg.training import launch
from fishseg.training.loaders import EpochSampler, SegmentationDataset, make_loader
from fishseg.training.loop import validate
from fishseg.training.losses import build_loss
from fishseg.training.state import STATE_FILE
from fishseg.training.train import train

from .helpers import read_metrics, start_stage, tiny, write_params, write_prepared

COUNTS = {"train": 32, "val": 6, "test": 2}


def _runs(root):
    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    return client, client.search_runs([client.get_experiment_by_name("fishseg").experiment_id])


def test_launch_only_outside_torchrun():
    two = tiny(train={"nproc_per_node": 2}).train
    assert launch.needs_launch(two, env={})
    assert not launch.needs_launch(two, env={"LOCAL_RANK": "0", "WORLD_SIZE": "2"})
    assert not launch.needs_launch(tiny().train, env={})
    args = launch.torchrun_args(2, "stages/train.py", ["--root", "x"], 29999)
    assert args[:2] == ["--nnodes=1", "--nproc_per_node=2"] and "--master_addr=127.0.0.1" in args
    assert Path(args[5]).is_absolute() and args[5].endswith("stages/train.py")
    assert args[6:] == ["--root", "x"]


def test_val_shards_cover_each_item_once():
    shards = [list(EpochSampler(7, shuffle=False, seed=0, rank=r, world_size=3, pad=False)) for r in range(3)]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(7))


def _reduce_in_process(rank: int, init_file: str, per_rank: list, out: str) -> None:
    """One of two gloo processes: its own meter, then the meter reduced over both."""
    torch.distributed.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        meter = EpochMeter()
        loss, counts = per_rank[rank]
        meter.update(torch.tensor(loss), torch.tensor(counts))
        meter.reduce_from_all_processes()
        torch.save(meter.sums, f"{out}.{rank}")
    finally:
        torch.distributed.destroy_process_group()


def test_meter_reduces_itself_across_processes(tmp_path):
    """Two processes, two batches: each ends with the sums of both, as one process seeing all."""
    per_rank = [(0.5, [[3, 1, 0, 4], [0, 0, 2, 6]]), (1.5, [[1, 1, 1, 5]])]
    out = str(tmp_path / "sums")
    torch.multiprocessing.spawn(
        _reduce_in_process, args=(str(tmp_path / "init"), per_rank, out), nprocs=2, join=True
    )
    whole = EpochMeter()
    for loss, counts in per_rank:
        whole.update(torch.tensor(loss), torch.tensor(counts))
    for rank in range(2):
        assert torch.equal(torch.load(f"{out}.{rank}", weights_only=True), whole.sums)
    # 3 images: loss (0.5 * 2 + 1.5) / 3, pixels tp 4, fp 2, fn 3 -> IoU 4 / 9
    assert whole.result()["loss"] == pytest.approx(2.5 / 3) and whole.result()["iou"] == pytest.approx(4 / 9)


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    """The train stage on 2 CPU processes (gloo), 2 images per process and step."""
    paths = write_prepared(tmp_path_factory.mktemp("ddp"), counts=COUNTS)
    write_params(paths.root, tiny(train={"nproc_per_node": 2, "batch_size": 2}))
    proc = start_stage(paths.root, "train")
    out = proc.stdout.read()
    assert proc.wait(timeout=300) == 0, out
    return paths, out


@pytest.mark.slow
def test_two_processes_train_like_one_with_twice_the_batch(ddp_run, tmp_path):
    paths, out = ddp_run
    assert "starting 2 training processes" in out
    result = read_metrics(paths, "train.json")
    assert out.count("best val IoU") == 1  # rank 0 alone reports and writes
    assert result["epochs_run"] == 2
    client, runs = _runs(paths.root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    assert len(client.get_metric_history(runs[0].info.run_id, "val_iou")) == 2

    # Val metrics summed over both ranks' shards = one process scoring the whole split.
    stats = json.loads(paths.stats_json.read_text())
    meter = validate(
        load_model(paths.model_dir),
        Forward(Normalizer(stats["mean"], stats["std"]), torch.device("cpu")),
        build_loss(tiny().train.loss),
        make_loader(
            SegmentationDataset(load_split(paths, "val")),
            EpochSampler(COUNTS["val"], shuffle=False, seed=0),
            batch_size=4,
            num_workers=0,
            pin_memory=False,
        ),
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
    # Both learn the blobs: train IoU well past half by epoch 2 (one process: 0.72 here).
    assert ddp["train_iou"].iloc[-1] > 0.5 and one["train_iou"].iloc[-1] > 0.5


@pytest.mark.slow
def test_two_processes_resume_to_the_same_result(ddp_run, tmp_path):
    paths = write_prepared(tmp_path / "broken", counts=COUNTS)
    write_params(paths.root, tiny(train={"nproc_per_node": 2, "batch_size": 2}))
    proc = start_stage(paths.root, "train")
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

    resumed = start_stage(paths.root, "train")
    out = resumed.stdout.read()
    assert resumed.wait(timeout=300) == 0, out
    assert "resuming from" in out
    assert read_metrics(paths, "train.json") == read_metrics(ddp_run[0], "train.json")
    _, runs = _runs(paths.root)
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
