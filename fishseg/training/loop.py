"""One epoch of training and one pass of validation: the loop, top to bottom."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from fishseg.evaluation.metrics import EpochMeter, confusion_counts
from fishseg.fsutil import fault_point
from fishseg.model.factory import set_train_mode
from fishseg.model.forward import Forward
from fishseg.training import distributed
from fishseg.training.engine import Engine
from fishseg.training.signals import StopFlag


def train_one_epoch(
    engine: Engine, loader: DataLoader, meter: EpochMeter, *, first_step: int, stop: StopFlag, show_bar: bool
) -> int | None:
    """Optimizer steps from ``first_step`` to the epoch's end; the step reached if a stop signal came first."""
    set_train_mode(engine.net)
    micro = engine.accumulate
    done = first_step * micro  # a resumed epoch's loader starts past the micro-batches already done
    total = done + len(loader)
    step = first_step
    engine.optimizer.zero_grad(set_to_none=True)
    steps = math.ceil(total / micro)
    bar = tqdm(total=steps, initial=step, desc="train", unit="step", leave=False, disable=not show_bar)
    with bar:
        for i, (images, masks) in enumerate(loader, start=done):
            masks = masks.to(engine.device, non_blocking=True).float()
            last_micro = (i + 1) % micro == 0 or i + 1 == total  # this micro-batch completes a step
            with engine.grad_sync(last_micro):  # DDP: exchange gradients once a step, not per micro-batch
                logits = engine.forward(engine.net, images)
            loss = engine.loss_fn(logits, masks)
            # Mean over the step's micro-batches; scaled so that small fp16 gradients do not underflow.
            engine.scaler.scale(loss / micro).backward()
            meter.update(loss.detach(), confusion_counts(logits.detach(), masks))
            if not last_micro:
                continue  # keep accumulating gradients
            fault_point("step")  # tests of kill -9 recovery stop here when asked (FISHSEG_FAULT)
            engine.scaler.step(engine.optimizer)  # unscale, then step (skipped if fp16 gradients overflowed)
            engine.scaler.update()  # grow the loss scale, or shrink it after an overflow
            engine.optimizer.zero_grad(set_to_none=True)  # free the gradients now, not at the next backward
            engine.after_step()  # per-step schedules move on; plateau waits for the epoch's val IoU
            step += 1
            bar.update(1)
            if distributed.broadcast_flag(bool(stop), engine.dist):  # every rank stops after the same step
                return step
    return None


@torch.no_grad()
def validate(model: nn.Module, forward: Forward, loss_fn: nn.Module, loader: DataLoader) -> EpochMeter:
    """Loss and scores of ``model`` in eval mode over ``loader`` (this process's shard)."""
    model.eval()
    meter = EpochMeter(forward.device)
    for images, masks in loader:
        masks = masks.to(forward.device, non_blocking=True).float()
        logits = forward(model, images)
        meter.update(loss_fn(logits, masks), confusion_counts(logits, masks))
    return meter
