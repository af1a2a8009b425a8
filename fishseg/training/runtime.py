"""Where and how a training process runs: device, process group, seeds, precision, loaders.

Decided once at the start of the train stage, from ``params.train`` and torchrun's
environment; everything after reads the :class:`Runtime` instead of deciding again.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from fishseg.device import (
    default_workers,
    pin_cpu_runtime,
    resolve_precision,
    seed_everything,
    select_device,
)
from fishseg.params import TrainParams
from fishseg.training import distributed
from fishseg.training.distributed import Dist


@dataclass(frozen=True)
class Runtime:
    dist: Dist
    device: torch.device
    amp_dtype: torch.dtype | None  # autocast dtype; None: fp32
    channels_last: bool  # NHWC memory format (cuDNN and oneDNN both convolve it faster)
    workers: int  # loader worker processes
    pin_memory: bool  # page-locked batches: faster, asynchronous copies to the GPU
    cpu_numerics: str  # how CPU kernels were chosen (train.reproducible), for the run record


def start(train: TrainParams) -> Runtime:
    """Pick the device, join the process group, seed, and settle precision and layout."""
    d = distributed.from_env()
    device = select_device(train.device, d.local_rank if d.enabled else None)
    distributed.init(d, device)
    distributed.quiet_other_ranks(d)
    # A seed per rank; DDP gives every rank rank 0's initial weights all the same.
    seed_everything(train.seed + d.rank, train.deterministic)
    cpu_numerics = pin_cpu_runtime(train.reproducible)
    cuda = device.type == "cuda"
    if cuda and not train.deterministic:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    workers = (
        default_workers(device, d.local_world_size) if train.num_workers == "auto" else train.num_workers
    )
    return Runtime(
        dist=d,
        device=device,
        amp_dtype=resolve_precision(train.precision, device),
        channels_last=train.channels_last,
        workers=workers,
        pin_memory=cuda,
        cpu_numerics=cpu_numerics,
    )


def stop(runtime: Runtime) -> None:
    """Leave the process group (nothing to do in one process)."""
    distributed.shutdown(runtime.dist)
