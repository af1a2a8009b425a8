"""Load an MLflow-logged model without running code from it.

MLflow loads a ``pytorch`` model in the pickle format with ``torch.load`` and a pickle
module the model folder names (imported first), and it puts a model's ``code`` folder
on ``sys.path``: a model folder anyone could write to a tracking server can run code on
whoever loads it. So, before MLflow sees it, the downloaded folder must be:

- a ``pytorch`` flavor without ``code``, in the ``pt2`` format (``data/model.pt2``; no
  ``model.pth``, no pickle module file);
- a ``model.pt2`` that is a sound zip (no overlapping members, no member expanding more
  than 10 times: pt2 archives are stored, not compressed);

and MLflow then loads it with ``MLFLOW_ALLOW_PICKLE_DESERIALIZATION=false``, which makes
it verify that every record of the archive is pickle-free before ``torch.export.load``.
Every failure is one line naming the model and the fix.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from fishseg.errors import FishsegError
from fishseg.redact import redact_text

PT2_FILE = "model.pt2"
PICKLE_FILES = ("model.pth", "pickle_module_info.txt")
MAX_MLMODEL_BYTES = 1 << 20
_FIX = "log it with fishseg.tracking.logged_model.log_inference_model (pt2 format), or use models/model"


@contextlib.contextmanager
def pickle_refused() -> Iterator[None]:
    """MLflow refuses pickle payloads inside this block (the variable is restored after)."""
    name = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"
    previous = os.environ.get(name)
    os.environ[name] = "false"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


def read_mlmodel(folder: Path, ref: str) -> dict[str, Any]:
    """The ``MLmodel`` file of a downloaded model folder, parsed safely."""
    path = folder / "MLmodel"
    try:
        if path.stat().st_size > MAX_MLMODEL_BYTES:
            raise ValueError(f"{path.stat().st_size} bytes")
        spec = yaml.safe_load(path.read_text(encoding="utf-8"))
        if not isinstance(spec, dict) or not isinstance(spec.get("flavors"), dict):
            raise ValueError("no flavors")
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise FishsegError(
            f"--model {ref}: no readable MLmodel file ({type(exc).__name__}); {_FIX}"
        ) from None
    return spec


def check_pt2_folder(folder: Path, ref: str) -> Path:
    """The folder's ``model.pt2``, after refusing everything that could run code; see the module doc."""
    from fishseg.sources.archive import Limits
    from fishseg.sources.zipsource import ZipTree

    flavor = read_mlmodel(folder, ref)["flavors"].get("pytorch")
    if not isinstance(flavor, dict):
        raise FishsegError(f"--model {ref}: not a PyTorch model (no pytorch flavor); {_FIX}")
    if flavor.get("code"):
        raise FishsegError(f"--model {ref}: it ships code ({flavor['code']!r}), which is never run; {_FIX}")
    data = folder / str(flavor.get("model_data", "data"))
    if not data.resolve().is_relative_to(folder.resolve()):
        raise FishsegError(f"--model {ref}: its model_data points outside the model; {_FIX}")
    pickled = [name for name in PICKLE_FILES if (data / name).exists()]
    if pickled or not (data / PT2_FILE).is_file():
        what = f"a pickled model ({', '.join(pickled)})" if pickled else f"no {PT2_FILE}"
        raise FishsegError(f"--model {ref}: {what}; pickles can run code and are never loaded: {_FIX}")
    pt2 = data / PT2_FILE
    size = pt2.stat().st_size
    try:
        ZipTree(pt2, Limits(max_bytes=2 * size + (1 << 20), max_members=100_000, max_ratio=10.0))
    except FishsegError as exc:
        raise FishsegError(f"--model {ref}: {PT2_FILE} is not a sound archive ({exc}); {_FIX}") from None
    return pt2


def input_size(folder: Path, ref: str) -> tuple[int, int]:
    """(H, W) from the model's signature: one tensor input of shape (B, 3, H, W)."""
    from mlflow.models import Model

    try:
        signature = Model.load(str(folder)).signature
        inputs = signature.inputs.inputs if signature is not None else []
        shape = getattr(inputs[0], "shape", None) if len(inputs) == 1 else None
    except Exception:  # a signature MLflow cannot parse
        shape = None
    if not shape or len(shape) != 4 or min(shape[2:]) <= 0 or max(shape[2:]) > 4096:
        raise FishsegError(
            f"--model {ref}: its signature does not give a fixed input size (B, 3, H, W); {_FIX}"
        )
    return int(shape[2]), int(shape[3])


def load_checked(ref: str, store_uri: str, device: torch.device) -> tuple[nn.Module, tuple[int, int]]:
    """Download (if needed), check and load an MLflow model; return it and its input size."""
    import mlflow

    with tempfile.TemporaryDirectory(prefix="fishseg-model-") as tmp:
        folder = Path(ref)
        if not folder.is_dir():
            try:
                folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=tmp))
            except Exception as exc:  # MlflowException, HTTP and storage errors
                reason = redact_text(
                    f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}", store_uri
                )
                raise FishsegError(
                    f"--model {ref}: cannot fetch it ({reason[:300]}); check the URI"
                ) from None
        check_pt2_folder(folder, ref)
        size = input_size(folder, ref)
        try:
            with pickle_refused():
                model = mlflow.pytorch.load_model(str(folder))
            model = model.to(device)
        except Exception as exc:  # MLflow's pickle refusal, torch.export errors, a device mismatch
            reason = redact_text(f"{type(exc).__name__}: {getattr(exc, 'message', None) or exc}", store_uri)
            raise FishsegError(f"--model {ref}: cannot load it ({reason[:300]}); {_FIX}") from None
    if not isinstance(model, nn.Module):
        raise FishsegError(f"--model {ref}: holds a {type(model).__name__}, not a model; {_FIX}")
    return model, size
