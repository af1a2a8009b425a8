"""Save and load trained models as smp's ``save_pretrained`` directories (safetensors).

Loading trusts nothing in the directory: ``config.json`` must name an smp architecture,
the weights come from ``model.safetensors`` only (a pickled ``.bin``/``.pth`` beside it is
never read), pretrained weights named in the config are never downloaded, and the model
the config describes is first built on the ``meta`` device (no memory) so that a config
asking for a network far larger than its weights file is refused before allocation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import segmentation_models_pytorch as smp
import torch
from torch import nn

from fishseg.errors import FishsegError
from fishseg.model.factory import unwrap

WEIGHTS_FILE = "model.safetensors"
MAX_CONFIG_BYTES = 1 << 16


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


def read_config(model_dir: Path) -> tuple[type[nn.Module], dict[str, Any]]:
    """The smp class ``config.json`` names and its constructor arguments (no weights download)."""
    path = Path(model_dir) / "config.json"
    if not path.is_file():
        raise FishsegError(f"{model_dir}: no model here (config.json missing); run the train stage")
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes")
        config = json.loads(path.read_text(encoding="utf-8"))
        name = config.pop("_model_class")
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as exc:
        raise FishsegError(
            f"{path}: not a model config ({type(exc).__name__}: {exc}); run the train stage again"
        ) from None
    classes = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if name not in classes:
        raise FishsegError(f"{path}: _model_class {name!r} is not an smp architecture ({', '.join(classes)})")
    kwargs = {key: value for key, value in config.items() if not key.startswith("_")}
    kwargs["encoder_weights"] = None  # the weights file holds them; never fetch anything
    return classes[name], kwargs


def _build(cls: type[nn.Module], kwargs: dict[str, Any], path: Path, device: str | torch.device) -> nn.Module:
    try:
        with torch.device(device):
            return cls(**kwargs)
    except Exception as exc:  # smp raises KeyError, ValueError, TypeError, RuntimeError...
        raise FishsegError(
            f"{path}: cannot build the model it describes ({type(exc).__name__}: {str(exc)[:200]})"
        ) from None


def load_model(model_dir: Path, device: torch.device | str = "cpu") -> nn.Module:
    """Load a ``save_pretrained`` directory: safetensors only, sizes checked before allocating."""
    from safetensors.torch import load_model as load_safetensors

    cls, kwargs = read_config(model_dir)
    weights = Path(model_dir) / WEIGHTS_FILE
    if not weights.is_file():
        raise FishsegError(
            f"{weights}: missing; model weights are read from safetensors only (pickled .bin/.pth "
            "files can run code and are never loaded): run the train stage"
        )
    config = Path(model_dir) / "config.json"
    skeleton = _build(cls, kwargs, config, "meta")
    needed = sum(t.numel() * t.element_size() for t in skeleton.state_dict().values())
    if needed > weights.stat().st_size:
        raise FishsegError(
            f"{config}: describes a model of {needed} bytes but {weights} holds {weights.stat().st_size}; "
            "the directory is not one the train stage wrote"
        )
    model = _build(cls, kwargs, config, "cpu")
    try:
        load_safetensors(model, str(weights), strict=True)
    except Exception as exc:  # SafetensorError, RuntimeError (missing keys, shapes), OSError
        raise FishsegError(
            f"{weights}: cannot load it into the model config.json describes "
            f"({type(exc).__name__}: {str(exc)[:200]}); run the train stage again"
        ) from None
    return model.to(device).eval()
