"""Probabilities predicted at the training size, back at a photo's own size.

One function for every place that needs it: ``predict`` (the masks users get), the
evaluate stage (the scores) and the plot stage (the prediction grids), so what is
drawn and what is scored are the same pixels. Only NumPy and OpenCV: the plot stage
imports it without loading torch.
"""

from __future__ import annotations

import cv2
import numpy as np


def to_original_size(prob: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A float32 (H, W) probability map resized to ``shape`` = (height, width), bilinearly."""
    height, width = shape
    return cv2.resize(np.asarray(prob, dtype=np.float32), (width, height), interpolation=cv2.INTER_LINEAR)
