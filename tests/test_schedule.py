"""Learning-rate schedules and early stopping."""

import pytest
import torch

from fishseg.training import fit, optim
from fishseg.training.state import STATE_FILE
from fishseg.training.train import train

from .helpers import tiny, write_prepared

STEPS = 5  # optimizer steps per epoch


def _lrs(scheduler_name: str, epochs: int = 10, warmup: int = 2, lr: float = 0.1) -> list[float]:
    """The lr of every optimizer step, as the engine's scheduler sets it."""
    tp = tiny(train={"epochs": epochs, "lr": lr, "warmup_epochs": warmup, "scheduler": scheduler_name}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = optim.build_scheduler(optimizer, tp, STEPS)
    lrs = []
    for _ in range(epochs * STEPS):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def test_cosine_warms_up_then_decays_to_one_percent():
    lrs = _lrs("cosine")
    warmup, rest = lrs[: 2 * STEPS + 1], lrs[2 * STEPS :]
    assert lrs[0] == pytest.approx(0.01)  # warmup starts at 10% of lr
    assert all(b > a for a, b in zip(warmup, warmup[1:], strict=False))
    assert max(lrs) == pytest.approx(0.1) and rest[0] == pytest.approx(0.1)
    assert all(b < a for a, b in zip(rest, rest[1:], strict=False))
    assert 0.01 * 0.1 < lrs[-1] < 0.02 * 0.1  # the last step is close to the 1% floor


def test_none_is_constant_after_warmup():
    lrs = _lrs("none")
    assert lrs[0] < lrs[STEPS] < lrs[2 * STEPS]
    assert lrs[2 * STEPS :] == pytest.approx([0.1] * (len(lrs) - 2 * STEPS))


def test_onecycle_peaks_at_lr():
    lrs = _lrs("onecycle", warmup=0)
    peak = lrs.index(max(lrs))
    assert max(lrs) == pytest.approx(0.1, rel=1e-3)
    assert 0.2 < peak / len(lrs) < 0.4  # OneCycle's default: 30% of the steps rising
    assert lrs[0] == pytest.approx(0.1 / 25) and lrs[-1] < 1e-3


def test_plateau_halves_on_stagnation():
    tp = tiny(train={"scheduler": "plateau", "lr": 0.1}).train
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    scheduler = optim.build_scheduler(optimizer, tp, STEPS)
    for val_iou in (0.1, 0.2, 0.3, 0.4):  # improving: unchanged
        scheduler.step(val_iou)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    lrs = []
    for _ in range(6):  # stuck at 0.4
        scheduler.step(0.4)
        lrs.append(optimizer.param_groups[0]["lr"])
    assert lrs == pytest.approx([0.1, 0.1, 0.05, 0.05, 0.05, 0.025])


def test_early_stopping_stops_after_patience_epochs(tmp_path, monkeypatch):
    """Val IoU pinned to its first value: no gain, so patience=1 stops after epoch 2 of 5."""
    real = fit.validate
    first = []

    def no_gain(*args, **kwargs):
        meter = real(*args, **kwargs)
        first.append(meter.sums.clone())
        meter.sums = first[0].clone()
        return meter

    monkeypatch.setattr(fit, "validate", no_gain)
    paths = write_prepared(tmp_path, counts={"train": 8, "val": 4, "test": 2})
    result = train(tiny(train={"epochs": 5, "patience": 1}), paths, progress=False)
    assert result["epochs_run"] == 2 and result["best_epoch"] == 1
    state = torch.load(paths.last_dir / STATE_FILE, weights_only=True)
    assert state["progress"]["completed"] is True and state["progress"]["stale_epochs"] == 1
