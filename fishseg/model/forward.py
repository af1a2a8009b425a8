"""The one forward pass: uint8 images in, float32 logits out.

Training, validation and the evaluate stage all call it, so normalisation, memory
format and mixed precision are decided in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fishseg.model.normalize import Normalizer


@dataclass(frozen=True)
class Forward:
    """Normalise on the device, lay out, autocast, run ``net``; logits come back in fp32."""

    normalizer: Normalizer
    device: torch.device
    amp_dtype: torch.dtype | None = None  # the autocast dtype; None: fp32, autocast off
    channels_last: bool = False

    def autocast(self) -> torch.autocast:
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.float32, enabled=self.amp_dtype is not None
        )

    def __call__(self, net: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Logits (B,1,H,W) of ``net`` for uint8 (B,3,H,W) ``images`` on any device."""
        x = self.normalizer(images.to(self.device, non_blocking=True))
        if self.channels_last:
            # The model's weights are NHWC too: convolutions then skip the layout conversion.
            x = x.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            return net(x).float()
