"""Start the train stage on several processes: ``train.nproc_per_node > 1`` means torchrun.

``python stages/train.py`` (what ``dvc repro`` runs) becomes torchrun's agent,
``torchrun --nnodes 1 --nproc_per_node N stages/train.py ...``, when it is not already a
torchrun worker. The rendezvous store listens on 127.0.0.1 only (``--standalone`` would
listen on every interface, with no authentication), and gloo/NCCL talk over loopback. The agent runs in this same process, so Ctrl-C or SIGTERM reach it
directly and it passes them on to every worker (they save the resume state and stop
together); the stage then exits non-zero like a one-process run.

Multi-node runs start torchrun by hand on each node (see the README); the workers then
find ``WORLD_SIZE``/``LOCAL_RANK`` in their environment and nothing is relaunched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from fishseg.errors import FishsegError
from fishseg.params import TrainParams

log = logging.getLogger(__name__)

# Set by torchrun (and by other launchers speaking the same env:// protocol) for each worker.
LAUNCHER_VARS = ("LOCAL_RANK", "WORLD_SIZE", "TORCHELASTIC_RUN_ID")


def under_launcher(env: Mapping[str, str] | None = None) -> bool:
    """True inside a torchrun worker (or any env:// launcher)."""
    env = os.environ if env is None else env
    return any(var in env for var in LAUNCHER_VARS)


def needs_launch(train: TrainParams, env: Mapping[str, str] | None = None) -> bool:
    """More than one process asked for, and we are not one of them yet."""
    return train.nproc_per_node > 1 and not under_launcher(env)


def torchrun_args(nproc_per_node: int, script: str | Path, args: Sequence[str], port: int) -> list[str]:
    """torchrun's command line for one node, meeting at the loopback store on ``port``."""
    return [
        "--nnodes=1",
        f"--nproc_per_node={nproc_per_node}",
        "--rdzv_backend=static",
        "--master_addr=127.0.0.1",
        f"--master_port={port}",
        str(Path(script).resolve()),
        *args,
    ]


@contextlib.contextmanager
def loopback_store() -> Iterator[int]:
    """A TCP store on 127.0.0.1 for torchrun's agent; yields its port.

    torch's TCP store binds every interface unless given a socket; the agent's own store on
    the same port (``multi_tenant``) reuses this one, so nothing listens beyond loopback.
    """
    import torch.distributed as dist

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    port = sock.getsockname()[1]
    # The store takes the descriptor over (and closes it): the Python socket lets go of it.
    store = dist.TCPStore(
        "127.0.0.1",
        port,
        is_master=True,
        multi_tenant=True,
        master_listen_fd=sock.detach(),
        wait_for_workers=False,
    )
    try:
        yield port
    finally:
        del store


def check_devices(train: TrainParams) -> None:
    """Fail before launching when the GPUs asked for are not there (one process per GPU)."""
    import torch

    if train.device == "cpu" or (train.device == "auto" and not torch.cuda.is_available()):
        return
    available = torch.cuda.device_count()
    if train.nproc_per_node > available:
        raise FishsegError(
            f"train.nproc_per_node = {train.nproc_per_node} but {available} GPU(s) are visible; "
            "use at most one process per GPU, or train.device: cpu for CPU processes (gloo)"
        )


def run_torchrun(train: TrainParams, script: str | Path, args: Sequence[str]) -> None:
    """Run ``script`` on ``nproc_per_node`` processes; raise FishsegError when any fails."""
    check_devices(train)
    from torch.distributed.elastic.multiprocessing import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    for variable in ("GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):  # workers talk over loopback
        os.environ.setdefault(variable, "lo")
    with loopback_store() as port:
        argv = torchrun_args(train.nproc_per_node, script, args, port)
        log.info("starting %d training processes: torchrun %s", train.nproc_per_node, " ".join(argv))
        try:
            run(parse_args(argv))
        except SignalException as exc:
            raise FishsegError(
                f"stopped by {exc.sigval.name}; the training processes saved their state. "
                "Run `dvc repro` again to resume."
            ) from None
        except ChildFailedError as exc:
            rank, failure = min(exc.failures.items())
            raise FishsegError(
                f"{len(exc.failures)} of {train.nproc_per_node} training processes failed "
                f"(rank {rank}: exit code {failure.exitcode}); their errors are logged above"
            ) from None
