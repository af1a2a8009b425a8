"""Build segmentation models: one factory, by name, from params."""

from __future__ import annotations

import os
from pathlib import Path

import segmentation_models_pytorch as smp
from torch import nn

from fishseg.errors import FishsegError
from fishseg.model.weights import PACKAGED_WEIGHTS, load_encoder_weights, resolve_encoder_weights
from fishseg.params import ModelParams


def architectures() -> list[str]:
    """Architecture names smp accepts (``Unet``, ``FPN``, ...)."""
    return sorted(cls.__name__ for cls in smp.MODEL_ARCHITECTURES_MAPPING.values())


def _is_timm_universal(encoder: str) -> bool:
    """``tu-<name>``: any timm model, through smp's universal timm encoder."""
    if not encoder.startswith("tu-"):
        return False
    import timm

    return encoder[3:] in timm.list_models()


def build_model(params: ModelParams) -> nn.Module:
    """``smp.create_model(arch, encoder, weights, classes=1)`` with errors that list the choices."""
    archs = {name.lower(): name for name in architectures()}
    if params.arch.lower() not in archs:
        raise FishsegError(
            f"model.arch = {params.arch!r} is unknown; choose one of: {', '.join(archs.values())}"
        )
    encoders = smp.encoders.get_encoder_names()
    if params.encoder not in encoders and not _is_timm_universal(params.encoder):
        close = [e for e in encoders if params.encoder.split("-")[0].split("_")[0] in e][:10]
        hint = f" (similar: {', '.join(close)})" if close else ""
        raise FishsegError(f"model.encoder = {params.encoder!r} is unknown to smp{hint}")
    weights = resolve_encoder_weights(params.encoder_weights, params.encoder)
    local_file = isinstance(weights, Path)
    if local_file and not weights.is_file():
        raise FishsegError(f"model.encoder_weights = {str(weights)!r}: no such file")
    try:
        model = smp.create_model(
            archs[params.arch.lower()],
            encoder_name=params.encoder,
            encoder_weights=None if local_file else weights,
            in_channels=3,
            classes=1,
        )
    except KeyError as exc:  # smp: "Wrong pretrained weights `x` for encoder `y`. Available options ..."
        raise FishsegError(f"model.encoder_weights = {weights!r}: {exc.args[0]}") from None
    except OSError as exc:  # the hub is unreachable, or HF_HUB_OFFLINE=1 and nothing is cached
        offline = " (HF_HUB_OFFLINE is set)" if os.environ.get("HF_HUB_OFFLINE") else ""
        packaged = "".join(f"{name} (for {fits[0]}), " for name, (_, _, fits) in PACKAGED_WEIGHTS.items())
        raise FishsegError(
            f"model.encoder_weights = {weights!r}: cannot download the weights for {params.encoder}"
            f"{offline}: {exc.__class__.__name__}. Offline, use a local weights file "
            f"(model.encoder_weights: /path/to/encoder.pth or .safetensors), {packaged}"
            "or null to train from scratch"
        ) from None
    if local_file:
        load_encoder_weights(model, weights)
    if params.freeze_encoder:
        for p in model.encoder.parameters():
            p.requires_grad_(False)
    return model


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
