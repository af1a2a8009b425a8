"""The optimizer and the learning-rate schedules (``train.scheduler``)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from fishseg.params import TrainParams


def build_optimizer(model: nn.Module, train: TrainParams) -> torch.optim.Optimizer:
    """AdamW over the trainable parameters (a frozen encoder has none).

    With ``train.reproducible`` the fused kernel does the update: its square root is the
    CPU's own, exact on every CPU, where the per-tensor one goes through MKL's vector
    maths, whose result depends on the CPU even on MKL's portable code path.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    fused = True if train.reproducible else None
    return torch.optim.AdamW(trainable, lr=train.lr, weight_decay=train.weight_decay, fused=fused)


def build_scheduler(optimizer: torch.optim.Optimizer, train: TrainParams, steps_per_epoch: int) -> Any:
    """Per-step schedulers (cosine with linear warmup, onecycle), or per-epoch plateau."""
    total = max(1, train.epochs * steps_per_epoch)
    if train.scheduler == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=train.lr, total_steps=total)
    if train.scheduler == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5, patience=2)
    warmup = min(train.warmup_epochs * steps_per_epoch, total - 1)

    def factor(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / max(1, warmup)
        if train.scheduler == "none":
            return 1.0
        progress = (step - warmup) / max(1, total - warmup)
        return 0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def steps_per_epoch(micro_batches: int, accumulate: int) -> int:
    """Optimizer steps in an epoch of ``micro_batches`` (the last step may take fewer)."""
    return math.ceil(micro_batches / accumulate)


def per_epoch(scheduler: Any) -> bool:
    """Plateau moves once an epoch, on val IoU; the others once an optimizer step."""
    return isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
