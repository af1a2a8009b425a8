"""A trained model packaged for use: normalisation, network and sigmoid in one module.

``models/model`` holds smp's ``save_pretrained`` files plus ``preprocessing.json``
(mean, std, training image size), written together by :func:`write_model_dir`;
:func:`load_inference_model` turns that directory into an :class:`InferenceModel` that
maps raw RGB pixels to probabilities. The threshold is not part of the model: the
evaluate stage (``evaluate.threshold``) and ``predict --threshold`` choose it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from fishseg.errors import FishsegError
from fishseg.fsutil import atomic_dir, atomic_write_json
from fishseg.model.io import load_model, save_model
from fishseg.model.normalize import Normalizer
from fishseg.model.resize import to_original_size

PREPROCESSING_FILE = "preprocessing.json"


class InferenceModel(nn.Module):
    """(B,3,H,W) float RGB in [0, 255] -> (B,1,H,W) fish probability."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.normalize = Normalizer(mean, std)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(self.normalize(images)))


def write_model_dir(
    model_dir: Path, model: nn.Module, mean: list[float], std: list[float], image_size: tuple[int, int]
) -> None:
    """The network and its preprocessing record, replacing ``model_dir`` as a whole."""
    with atomic_dir(model_dir) as tmp:
        save_model(model, tmp)
        atomic_write_json(
            tmp / PREPROCESSING_FILE, {"mean": mean, "std": std, "image_size": list(image_size)}
        )


def read_preprocessing(model_dir: Path) -> dict:
    """``preprocessing.json``, checked: 3 finite means, 3 positive stds, a sane training size."""
    path = Path(model_dir) / PREPROCESSING_FILE
    if not path.is_file():
        raise FishsegError(f"{path}: missing; {model_dir} was not written by the train stage")
    try:
        if path.stat().st_size > 1 << 16:
            raise ValueError("too large")
        pre = json.loads(path.read_text(encoding="utf-8"))
        mean, std, size = (list(map(float, pre[key])) for key in ("mean", "std", "image_size"))
        if len(mean) != 3 or len(std) != 3 or len(size) != 2:
            raise ValueError("mean and std need 3 values, image_size 2")
        if not all(math.isfinite(v) for v in mean + std) or min(std) <= 0:
            raise ValueError("mean must be finite and std positive")
        if not all(v.is_integer() and 32 <= v <= 4096 and v % 32 == 0 for v in size):
            raise ValueError(f"image_size {size}: multiples of 32 from 32 to 4096")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise FishsegError(
            f"{path}: not a preprocessing record ({type(exc).__name__}: {exc}); run the train stage again"
        ) from None
    return {**pre, "image_size": [int(v) for v in size]}


def load_inference_model(model_dir: Path, device: torch.device | str = "cpu") -> tuple[InferenceModel, dict]:
    """The packaged model and its preprocessing record."""
    pre = read_preprocessing(model_dir)
    model = InferenceModel(load_model(model_dir), pre["mean"], pre["std"]).to(device).eval()
    return model, pre


@torch.no_grad()
def predict_image(model: InferenceModel, image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Probability map at the image's own resolution for one RGB uint8 image."""
    h, w = image.shape[:2]
    small = cv2.resize(image, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    device = next(model.parameters()).device
    x = torch.from_numpy(small.transpose(2, 0, 1).copy()).float()[None].to(device)
    prob = model(x)[0, 0].float().cpu().numpy()
    return to_original_size(prob, (h, w))
