"""Training options whose effect a CPU can show: precision and gradient accumulation."""

import pandas as pd
import pytest
import torch

from fishseg.device import resolve_precision
from fishseg.errors import FishsegError
from fishseg.training.train import train

from .conftest import tiny, write_prepared


def _history(paths) -> pd.DataFrame:
    return pd.read_csv(paths.plots_dir / "train" / "history.csv")


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) is None  # fp32: autocast off
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("bf16", cpu) is torch.bfloat16
    with pytest.raises(FishsegError, match=r"train.precision = 'fp16' needs a CUDA GPU"):
        resolve_precision("fp16", cpu)


def test_bf16_autocast_trains_and_changes_the_numbers(tmp_path, tiny_params):
    fp32 = write_prepared(tmp_path / "fp32")
    bf16 = write_prepared(tmp_path / "bf16")
    train(tiny_params, fp32, progress=False)
    result = train(tiny(train={"precision": "bf16"}), bf16, progress=False)
    assert 0.0 <= result["best_val_iou"] <= 1.0
    a, b = _history(fp32), _history(bf16)
    assert b["train_loss"].notna().all() and b["train_loss"].iloc[-1] < b["train_loss"].iloc[0]
    # Autocast really ran in bf16: same seed and batches, other rounding.
    assert not a["train_loss"].equals(b["train_loss"])
    assert a["train_loss"].to_numpy() == pytest.approx(b["train_loss"].to_numpy(), rel=0.05)


def test_accumulating_two_half_batches_steps_like_one_full_batch(tmp_path):
    full = write_prepared(tmp_path / "full")
    halves = write_prepared(tmp_path / "halves")
    train(tiny(train={"batch_size": 4, "accumulate": 1}), full, progress=False)
    train(tiny(train={"batch_size": 2, "accumulate": 2}), halves, progress=False)
    a, b = _history(full), _history(halves)
    # One optimizer (and scheduler) step per two micro-batches: the same lr at each epoch end.
    assert a["lr"].tolist() == b["lr"].tolist()
    # Close, not equal: batch-norm statistics and the Dice term are per micro-batch.
    assert a["train_loss"].to_numpy() == pytest.approx(b["train_loss"].to_numpy(), rel=0.05)
