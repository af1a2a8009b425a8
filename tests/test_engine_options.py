"""Training options: precision, channels_last and gradient accumulation on the CPU; on a GPU
(``requires_cuda``) channels_last with bf16, fp16 loss scaling and pinned-memory loaders."""

import pandas as pd
import pytest
import torch
from torch import nn

from fishseg.device import resolve_precision
from fishseg.errors import FishsegError
from fishseg.model.forward import Forward
from fishseg.training import runtime
from fishseg.training.engine import build_engine
from fishseg.training.loaders import build_loaders, load_training_data
from fishseg.training.state import STATE_FILE
from fishseg.training.train import train

from .helpers import tiny, write_prepared


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
    a, b = _history(fp32), _history(bf16)
    # bf16 learns the blobs as fp32 does: loss falls by a sixth or more, train IoU passes 0.4.
    assert b["train_loss"].notna().all() and b["train_loss"].iloc[-1] < 0.85 * b["train_loss"].iloc[0]
    assert b["train_iou"].iloc[-1] > 0.4 and result["best_val_iou"] == b["val_iou"].max()
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


def test_cpu_convolves_channels_last_and_learns_the_same(tmp_path):
    """train.channels_last: NHWC on the CPU too (oneDNN's faster layout), same maths within rounding."""
    params = tiny()
    rt = runtime.start(params.train)
    assert rt.device.type == "cpu" and rt.channels_last
    engine = build_engine(params, load_training_data(write_prepared(tmp_path / "probe")).stats, rt, 4)
    conv = next(m for m in engine.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    conv.register_forward_hook(lambda _m, args, _out: seen.append(args[0]))
    batch = torch.randint(
        0, 256, (2, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    engine.model.eval()
    logits = engine.forward(engine.model, batch)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)
    # The same weights in the usual layout give the same logits, to rounding.
    engine.model.to(memory_format=torch.contiguous_format)
    reference = Forward(engine.forward.normalizer, rt.device, None, False)(engine.model, batch)
    assert torch.allclose(logits, reference, atol=1e-4)
    # And it trains as the usual layout does (rounding differences grow over the steps).
    nhwc, nchw = write_prepared(tmp_path / "nhwc"), write_prepared(tmp_path / "nchw")
    train(params, nhwc, progress=False)
    train(tiny(train={"channels_last": False}), nchw, progress=False)
    a, b = _history(nhwc), _history(nchw)
    assert a["train_loss"].iloc[-1] < 0.9 * a["train_loss"].iloc[0]
    assert a["train_loss"].to_numpy() == pytest.approx(b["train_loss"].to_numpy(), rel=0.05)


@pytest.mark.requires_cuda
def test_gpu_runs_channels_last_weights_and_inputs_in_bf16(tmp_path):
    params = tiny(train={"device": "cuda"})
    rt = runtime.start(params.train)
    paths = write_prepared(tmp_path)
    engine = build_engine(params, load_training_data(paths).stats, rt, steps_per_epoch=4)
    assert rt.channels_last and rt.amp_dtype in (torch.bfloat16, torch.float16)  # precision: auto
    conv = next(m for m in engine.model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    conv.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
    logits = engine.forward(engine.model, torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    (x, out), *_ = seen
    assert x.is_contiguous(memory_format=torch.channels_last) and out.dtype == rt.amp_dtype  # autocast
    assert logits.dtype == torch.float32 and logits.shape == (2, 1, 32, 32) and logits.is_cuda


@pytest.mark.requires_cuda
def test_gpu_fp16_training_scales_the_loss_and_learns(tmp_path):
    paths = write_prepared(tmp_path)
    result = train(tiny(train={"device": "cuda", "precision": "fp16"}), paths, progress=False)
    history = _history(paths)
    assert history["train_loss"].notna().all()
    assert history["train_loss"].iloc[-1] < 0.85 * history["train_loss"].iloc[0]
    assert history["train_iou"].iloc[-1] > 0.4 and result["best_val_iou"] == history["val_iou"].max()
    # The scaler was on (an off scaler saves an empty state) and kept a finite scale.
    scaler = torch.load(paths.last_dir / STATE_FILE, weights_only=True)["scaler"]
    assert 0 < scaler["scale"] < float("inf")


@pytest.mark.requires_cuda
def test_gpu_loaders_pin_memory_in_worker_processes(tmp_path):
    params = tiny(train={"device": "cuda", "num_workers": 1})
    rt = runtime.start(params.train)
    paths = write_prepared(tmp_path)
    train_loader, val_loader = build_loaders(params, load_training_data(paths), rt)
    assert rt.pin_memory and train_loader.pin_memory and val_loader.pin_memory
    images, masks = next(iter(train_loader))
    assert images.is_pinned() and masks.is_pinned() and images.dtype == torch.uint8
    assert runtime.start(tiny(train={"device": "cuda", "num_workers": "auto"}).train).workers >= 1
