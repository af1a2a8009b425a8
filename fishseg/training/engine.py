"""The engine: everything an optimisation step needs, built once from params.

The plain model (saved, validated, resumed) and the net that trains (the model, wrapped
by DistributedDataParallel and/or ``torch.compile``), the shared forward pass
(normalisation, memory format, precision), the loss, optimizer, schedule and gradient
scaler.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from fishseg.model.factory import build_model
from fishseg.model.forward import Forward
from fishseg.model.normalize import Normalizer
from fishseg.params import Params
from fishseg.training import optim
from fishseg.training.distributed import Dist
from fishseg.training.losses import build_loss
from fishseg.training.runtime import Runtime


@dataclass
class Engine:
    model: nn.Module
    net: nn.Module
    forward: Forward
    loss_fn: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    accumulate: int  # micro-batches per optimizer step
    dist: Dist

    @property
    def device(self) -> torch.device:
        return self.forward.device

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def grad_sync(self, last_micro_batch: bool) -> contextlib.AbstractContextManager:
        """Around the forward: DDP all-reduces gradients only in the backward of a step's last micro-batch."""
        if last_micro_batch or not self.dist.enabled:
            return contextlib.nullcontext()
        return self.net.no_sync()

    def after_step(self) -> None:
        """Move a per-step schedule on by one optimizer step."""
        if not optim.per_epoch(self.scheduler):
            self.scheduler.step()

    def after_epoch(self, val_iou: float) -> None:
        """Let a plateau schedule see the epoch's val IoU."""
        if optim.per_epoch(self.scheduler):
            self.scheduler.step(val_iou)

    def distribute(self, compile_net: bool) -> None:
        """Wrap the model for training: DDP across processes, then ``torch.compile`` if asked."""
        net = self.model
        if self.dist.enabled:
            device = self.device
            net = nn.parallel.DistributedDataParallel(
                net, device_ids=[device.index] if device.type == "cuda" else None
            )
        self.net = torch.compile(net) if compile_net else net


def build_engine(params: Params, stats: dict, runtime: Runtime, steps_per_epoch: int) -> Engine:
    """The model from ``params.model`` on the device, and what trains it, not yet wrapped."""
    train = params.train
    model = build_model(params.model).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    normalizer = Normalizer(stats["mean"], stats["std"]).to(runtime.device)
    optimizer = optim.build_optimizer(model, train)
    return Engine(
        model=model,
        net=model,
        forward=Forward(normalizer, runtime.device, runtime.amp_dtype, runtime.channels_last),
        loss_fn=build_loss(train.loss),
        optimizer=optimizer,
        scheduler=optim.build_scheduler(optimizer, train, steps_per_epoch),
        # Loss scaling keeps small fp16 gradients from flushing to zero; bf16 and fp32 need none.
        scaler=torch.amp.GradScaler(runtime.device.type, enabled=runtime.amp_dtype == torch.float16),
        accumulate=train.accumulate,
        dist=runtime.dist,
    )
