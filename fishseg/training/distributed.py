"""torchrun/DistributedDataParallel plumbing: one process per GPU (or per CPU slot, gloo).

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
without it everything here degrades to a single process.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1  # processes on this node

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def from_env() -> Dist:
    """Read torchrun's environment (single process when absent)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    return Dist(
        int(os.environ["RANK"]),
        world,
        int(os.environ.get("LOCAL_RANK", "0")),
        int(os.environ.get("LOCAL_WORLD_SIZE", "1")),
    )


# Control messages (the per-step stop flag) travel over gloo between CPUs: on NCCL they
# would need a GPU tensor read back every step, a sync that stalls the GPU's queue.
_control_group: Any = None


def init(d: Dist, device: torch.device) -> None:
    """Join the process group: NCCL on GPUs (plus a gloo group for control), gloo on CPU."""
    global _control_group
    if d.enabled and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
            dist.init_process_group("nccl")
            _control_group = dist.new_group(backend="gloo")
        else:
            dist.init_process_group("gloo")


def shutdown(d: Dist) -> None:
    global _control_group
    if d.enabled and dist.is_initialized():
        dist.destroy_process_group()
        _control_group = None


def broadcast_flag(flag: bool, d: Dist) -> bool:
    """True on every rank if it is true on any (a stop request seen by one rank stops all)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_control_group)
    return bool(t.item())


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Give every rank rank 0's buffers (batch-norm statistics).

    DDP copies them from rank 0 *before* each forward, so after the last step every rank
    holds its own update; validation and the saved model must all use rank 0's.
    """
    if d.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_object(obj: Any, d: Dist) -> Any:
    """Rank 0's ``obj`` on every rank (pickled between our own processes, never from a file)."""
    if not d.enabled:
        return obj
    box = [obj if d.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def quiet_other_ranks(d: Dist, logger: str = "fishseg") -> None:
    """Only rank 0 reports progress; the others still log warnings and errors."""
    if not d.is_main:
        logging.getLogger(logger).setLevel(logging.WARNING)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()
