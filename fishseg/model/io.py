"""Save and load trained models as smp's ``save_pretrained`` directories (safetensors)."""

from __future__ import annotations

import json
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from fishseg.errors import FishsegError
from fishseg.model.factory import unwrap


def save_model(model: nn.Module, out_dir: Path) -> None:
    """``save_pretrained``: config.json + model.safetensors, reloadable without our code.

    The config records ``encoder_weights: null``: the weights are in the file, and a
    recorded ``imagenet`` would make ``from_pretrained`` download them again.
    """
    model = unwrap(model)
    model.save_pretrained(str(out_dir))
    config_path = out_dir / "config.json"
    config = json.loads(config_path.read_text())
    if config.get("encoder_weights") is not None:
        config["encoder_weights"] = None
        config_path.write_text(json.dumps(config, indent=2) + "\n")


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load a ``save_pretrained`` directory (safetensors: loading never runs code)."""
    if not (Path(model_dir) / "config.json").is_file():
        raise FishsegError(f"{model_dir}: no model here (config.json missing); run the train stage")
    model = smp.from_pretrained(str(model_dir))
    return model.to(device).eval()
