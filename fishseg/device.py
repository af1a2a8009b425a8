"""Device selection and reproducibility switches: the one place that decides where we run."""

from __future__ import annotations

import logging
import os
import random

import numpy as np
import torch

from fishseg.errors import FishsegError

log = logging.getLogger(__name__)


def select_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when present, else CPU. Under torchrun each rank takes its own GPU."""
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "auto" and not torch.cuda.is_available():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise FishsegError(f"train.device = {spec!r} but no CUDA GPU is visible; use auto or cpu")
    if local_rank is not None:
        if local_rank >= torch.cuda.device_count():
            raise FishsegError(
                f"process {local_rank} has no GPU of its own ({torch.cuda.device_count()} visible); "
                "lower train.nproc_per_node (torchrun --nproc_per_node) or use train.device: cpu"
            )
        return torch.device("cuda", local_rank)
    device = torch.device("cuda" if spec == "auto" else spec)
    if device.index is not None and device.index >= torch.cuda.device_count():
        raise FishsegError(f"train.device = {spec!r} but only {torch.cuda.device_count()} GPU(s) are visible")
    return device


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype (``None`` = fp32). ``auto``: bf16 on GPUs that have it."""
    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cuda" and precision == "fp16":
        raise FishsegError("train.precision = 'fp16' needs a CUDA GPU; use fp32 or bf16 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, refuse nondeterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        # cuBLAS needs this workspace setting for deterministic matmuls on GPU.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
    else:
        torch.backends.cudnn.benchmark = True


def default_workers(device: torch.device, processes: int = 1) -> int:
    """Loader workers for ``num_workers: auto``: none on CPU (the cores train), several on GPU.

    ``processes`` training processes on this node share its cores.
    """
    if device.type != "cuda":
        return 0
    return max(1, min(8, ((os.cpu_count() or 2) - processes) // processes))
