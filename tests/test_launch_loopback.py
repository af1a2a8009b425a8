"""The train stage's own torchrun launch listens on loopback only.

``torchrun --standalone`` binds its rendezvous store to every interface, with no
authentication. Here the real launcher (``run_torchrun``) starts two gloo workers; rank 0
lists every listening TCP socket held by the agent and the workers (from /proc) after
they have talked, and each must be bound to 127.0.0.1 or ::1.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests._hostile import REPO

pytestmark = pytest.mark.slow

WORKER = r"""
import json, os, sys
import torch, torch.distributed as dist

def sockets(pid):
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found

dist.init_process_group("gloo")
value = torch.ones(1)
dist.all_reduce(value)
if dist.get_rank() == 0:
    agent = os.getppid()
    pids = [agent] + [int(p) for t in os.listdir(f"/proc/{agent}/task")
                      for p in open(f"/proc/{agent}/task/{t}/children").read().split()]
    inodes = set().union(*(sockets(pid) for pid in pids))
    listening = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in open(table).read().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                listening.append(fields[1].split(":")[0])
    json.dump({"listening": listening, "sum": value.item()}, open(sys.argv[1], "w"))
dist.barrier()
dist.destroy_process_group()
"""

LAUNCH = """
import sys
from fishseg.params import TrainParams
from fishseg.training.launch import run_torchrun
run_torchrun(TrainParams(nproc_per_node=2, device="cpu"), sys.argv[1], [sys.argv[2]])
"""

LOOPBACK = {"0100007F", "00000000000000000000000001000000", "0000000000000000FFFF00000100007F"}


def test_torchrun_listens_on_loopback_only(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    result = tmp_path / "result.json"
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    env.pop("GLOO_SOCKET_IFNAME", None)
    proc = subprocess.run(
        [sys.executable, "-c", LAUNCH, str(script), str(result)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    found = json.loads(result.read_text())
    assert found["sum"] == 2.0  # the two workers did talk
    assert found["listening"], "no listening socket found: the check would see nothing"
    assert set(found["listening"]) <= LOOPBACK, found["listening"]
