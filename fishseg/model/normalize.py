"""Input normalisation, shared by training, evaluation and the packaged inference model."""

from __future__ import annotations

import torch


class Normalizer(torch.nn.Module):
    """uint8 (B,3,H,W) -> float normalised by the train split's mean/std, on the device."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1) * 255.0)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (images.float() - self.mean) / self.std
