"""Build, save and load segmentation models: one factory, by name, from params."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import segmentation_models_pytorch as smp
import torch
from torch import nn

from fishseg.errors import FishsegError
from fishseg.params import ModelParams

log = logging.getLogger(__name__)


def architectures() -> list[str]:
    """Architecture names smp accepts (``Unet``, ``FPN``, ...)."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def build_model(params: ModelParams) -> nn.Module:
    """``smp.create_model(arch, encoder, weights, classes=1)`` with errors that list the choices."""
    archs = {name.lower(): name for name in architectures()}
    if params.arch.lower() not in archs:
        raise FishsegError(
            f"model.arch = {params.arch!r} is unknown; choose one of: {', '.join(archs.values())}"
        )
    encoders = smp.encoders.get_encoder_names()
    if params.encoder not in encoders:
        close = [e for e in encoders if params.encoder.split("-")[0].split("_")[0] in e][:10]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise FishsegError(f"model.encoder = {params.encoder!r} is unknown to smp{hint}")
    weights = params.encoder_weights
    local_file = weights is not None and weights not in ("imagenet",) and Path(weights).suffix != ""
    model = smp.create_model(
        archs[params.arch.lower()],
        encoder_name=params.encoder,
        encoder_weights=None if local_file else weights,
        in_channels=3,
        classes=1,
    )
    if local_file:
        load_encoder_weights(model, Path(weights))
    if params.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load a local encoder state dict (``.pth``/``.pt``/``.safetensors``) without running code."""
    if not path.is_file():
        raise FishsegError(f"model.encoder_weights = {str(path)!r}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    own = model.encoder.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not matching:
        raise FishsegError(f"{path}: none of its tensors match the encoder's keys; is it for model.encoder?")
    model.encoder.load_state_dict(matching, strict=False)
    missing, unexpected = len(own) - len(matching), len(state) - len(matching)
    log.info("loaded encoder weights from %s (%d missing, %d unused keys)", path, missing, unexpected)


def set_train_mode(model: nn.Module) -> None:
    """``model.train()``, but a frozen encoder stays in eval mode.

    A frozen backbone keeps its batch-norm statistics too: updating them under frozen
    weights would shift the features the decoder learns from.
    """
    model.train()
    inner = unwrap(model)
    encoder = getattr(inner, "encoder", None)
    if encoder is not None and not any(p.requires_grad for p in encoder.parameters()):
        encoder.eval()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside DistributedDataParallel and/or ``torch.compile``."""
    while True:
        inner = getattr(model, "_orig_mod", None)
        if inner is None:
            inner = getattr(model, "module", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


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
