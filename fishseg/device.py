"""Device selection and reproducibility switches: the one place that decides where we run.

Importing this module does not import torch: :func:`pin_cpu_environment` has to run
before torch (and OpenCV, MKL, oneDNN behind it) is first imported.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import MutableMapping
from typing import TYPE_CHECKING

from fishseg.errors import FishsegError

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- CPU numerics
#
# The same fp32 training gives different bits on different x86-64 CPUs because the
# libraries under torch pick their code by the CPU they find: oneDNN's convolution
# kernels (AVX-512 vs AVX2 vector widths change the backward pass), MKL's vector maths
# behind torch.exp/log/sqrt (the Dice loss, AdamW), and the number of threads (how
# reductions are split). Training amplifies the last-bit differences within an epoch.
# ``train.reproducible`` pins each of them to a code path every CPU with AVX2 runs alike.

REPRODUCIBLE_THREADS = 2

CPU_PINS: dict[str, str] = {
    # oneDNN (convolutions): AVX2 kernels, also on AVX-512/AMX CPUs.
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    # ATen's own vectorised kernels: the AVX2 build, also on AVX-512 CPUs.
    "ATEN_CPU_CAPABILITY": "avx2",
    # MKL (vector exp/log/sqrt): the one code path Intel documents as reproducible on
    # Intel and non-Intel CPUs alike (SSE2, no approximate reciprocal instructions).
    "MKL_CBWR": "COMPATIBLE",
    # A fixed thread count, never adjusted at run time (MKL's reproducibility conditions).
    "OMP_NUM_THREADS": str(REPRODUCIBLE_THREADS),
    "MKL_NUM_THREADS": str(REPRODUCIBLE_THREADS),
    "OMP_DYNAMIC": "FALSE",
    "MKL_DYNAMIC": "FALSE",
    # OpenCV (augmentation): its AVX2 code on every CPU, without IPP's per-CPU dispatch.
    "OPENCV_CPU_DISABLE": "AVX512-SKX",
    "OPENCV_IPP": "disabled",
}


def pin_cpu_environment(environ: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Put :data:`CPU_PINS` into ``environ`` (``os.environ``); return the values replaced.

    The libraries read these once, when torch/OpenCV are imported or first used, so the
    stage front door calls this before importing them; child processes (torchrun
    workers, loader workers) inherit them.
    """
    environ = os.environ if environ is None else environ
    replaced = {k: environ[k] for k, v in CPU_PINS.items() if k in environ and environ[k] != v}
    for key, old in replaced.items():
        log.info("train.reproducible: %s=%s replaced by %s", key, old, CPU_PINS[key])
    environ.update(CPU_PINS)
    return replaced


def prepare_cpu_numerics(reproducible: bool) -> None:
    """The stage scripts' first step before importing torch: pin the environment when asked."""
    if reproducible:
        pin_cpu_environment()


def pin_cpu_runtime(reproducible: bool) -> str:
    """Apply the in-process half of ``train.reproducible``; return how numerics run, for the record.

    ``"avx2-pinned"`` when pinned, else ``"native-<capability>-<threads>t"``. Raises when
    the option is on but the environment was not pinned before torch was imported.
    """
    import torch

    if not reproducible:
        return f"native-{torch.backends.cpu.get_cpu_capability().lower()}-{torch.get_num_threads()}t"
    missing = sorted(k for k, v in CPU_PINS.items() if os.environ.get(k) != v)
    if missing:
        raise FishsegError(
            f"train.reproducible: {', '.join(missing)} not set before torch was imported; run the "
            "stage scripts (dvc repro, python stages/train.py), or call "
            "fishseg.device.pin_cpu_environment() before importing torch"
        )
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "AVX2":
        raise FishsegError(
            f"train.reproducible: torch runs its {capability} kernels, not AVX2; this CPU lacks AVX2 "
            "or torch was imported before the environment was pinned. Set train.reproducible: false"
        )
    torch.set_num_threads(REPRODUCIBLE_THREADS)
    # NNPACK (no-grad convolutions of batches >= 16) has its own CPU dispatch.
    torch.backends.nnpack.set_flags(False)
    return "avx2-pinned"


def select_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """``auto``: CUDA when present, else CPU. Under torchrun each rank takes its own GPU."""
    import torch

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
    import torch

    if precision == "fp32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type != "cuda" and precision == "fp16":
        raise FishsegError("train.precision = 'fp16' needs a CUDA GPU; use fp32 or bf16 on CPU")
    return torch.bfloat16 if precision == "bf16" else torch.float16


def seed_everything(seed: int, deterministic: bool) -> None:
    """Seed Python, NumPy and torch; with ``deterministic``, refuse nondeterministic kernels."""
    import numpy as np
    import torch

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
