"""Loss functions by name (``train.loss``)."""

from __future__ import annotations

from typing import get_args

import torch
from segmentation_models_pytorch.losses import DiceLoss, FocalLoss
from torch import nn

from fishseg.params import LossName

LOSSES: tuple[str, ...] = get_args(LossName)


class SumOfLosses(nn.Module):
    """Sum of several losses on the same (logits, target)."""

    def __init__(self, *losses: nn.Module) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)


def build_loss(name: str) -> nn.Module:
    """Binary segmentation loss on logits; ``dice_bce`` is Dice + BCE."""
    dice = DiceLoss(mode="binary", from_logits=True)
    if name == "dice_bce":
        return SumOfLosses(dice, nn.BCEWithLogitsLoss())
    if name == "dice":
        return dice
    if name == "bce":
        return nn.BCEWithLogitsLoss()
    if name == "focal_dice":
        return SumOfLosses(dice, FocalLoss(mode="binary"))
    raise ValueError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}")
