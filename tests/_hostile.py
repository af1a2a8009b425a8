"""Hostile-input cases run as the user runs them: a real process, its exit status, its one
error line, its peak memory, and the outputs it must leave alone.

``run_command`` starts the command from a small Python launcher that reaps it with
``os.wait4``, whose resource usage is that process's alone: ``ru_maxrss`` is its peak
resident memory. (Forked straight from pytest, the child would count pytest's own memory,
torch included, until it execs.)
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from tests.helpers import snapshot

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Peak resident memory allowed to a command refusing hostile input: its imports and a little
# more (README "Reliability" has the figures measured per case). A bomb decoded would need
# 1.2 GB (the 20000x20000 PNG as RGB) to 15 GB (predict on it without the cap).
STAGE_BOUND_MB = 400  # download and split: no torch (they peak at 40-190 MB)
TORCH_BOUND_MB = 1500  # predict, export and evaluate: torch loaded (they peak at 0.9-1.0 GB)
MLFLOW_BOUND_MB = 2000  # the train stage, or predict from a tracking store: torch, MLflow, its SQL store


# Runs argv[2:], then writes "<exit status> <peak RSS in KB>" of that process to argv[1].
_LAUNCHER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as fh:
    fh.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


@dataclass
class Outcome:
    code: int
    out: str  # stdout and stderr, interleaved
    peak_mb: float

    @property
    def errors(self) -> list[str]:
        return [line for line in self.out.splitlines() if " ERROR " in line]


def run_command(
    argv: list[str],
    cwd: Path,
    *,
    env: dict | None = None,
    timeout: float = 300,
    file_limit: int | None = None,
) -> Outcome:
    """Run ``argv`` (``python`` = this interpreter); its exit status, output and peak memory.

    ``file_limit``: RLIMIT_FSIZE in bytes, so that writes past it fail with EFBIG as on a
    full disk. A command still running after ``timeout`` seconds is killed (a hang fails).
    """
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}

    def limit() -> None:
        if file_limit is not None:
            import resource

            resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    with tempfile.TemporaryFile() as log, tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result"
        proc = subprocess.Popen(
            [PYTHON, "-c", _LAUNCHER, str(result), PYTHON if argv[0] == "python" else argv[0], *argv[1:]],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=full_env,
            preexec_fn=limit if file_limit is not None else None,
            start_new_session=True,  # a timeout kills the launcher and the command together
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.seek(0)
        out = log.read().decode("utf-8", "replace")
        if not result.is_file():
            return Outcome(-9, out + "\n[killed after the timeout]", 0.0)
        code, peak_kb = map(int, result.read_text().split())
    return Outcome(code, out, peak_kb / 1024)


def assert_refused(outcome: Outcome, *needles: str, code: int = 2, bound_mb: float = STAGE_BOUND_MB) -> str:
    """Exit ``code``, exactly one ERROR line holding every needle, no traceback, memory bounded."""
    assert outcome.code == code, outcome.out
    assert "Traceback" not in outcome.out, outcome.out
    assert len(outcome.errors) == 1, outcome.out
    (line,) = outcome.errors
    for needle in needles:
        assert needle in line, (needle, line)
    assert outcome.peak_mb < bound_mb, f"peak {outcome.peak_mb:.0f} MB: {line}"
    return line


def scratch_project(root: Path, **params: dict) -> Path:
    """A project folder for the stage scripts: dvc.yaml and the real params.yaml with ``params`` merged."""
    from tests.helpers import merge

    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    (root / "params.yaml").write_text(yaml.safe_dump(merge(raw, params)))
    return root


def stage(name: str, root: Path, **kwargs) -> Outcome:
    """``python stages/<name>.py --root <root>``, run from ``root``."""
    return run_command(["python", str(REPO / "stages" / f"{name}.py"), "--root", str(root)], root, **kwargs)


def untouched(folder: Path, before: dict) -> bool:
    """``folder`` as it was, and nothing left beside it (no temp folders)."""
    siblings = sorted(p.name for p in folder.parent.iterdir() if p.name.startswith("."))
    return snapshot(folder) == before and not [s for s in siblings if s.startswith(f".{folder.name}")]


def bomb_png(path: Path, side: int = 20_000) -> Path:
    """A real decompression bomb: a valid grey PNG of ``side`` x ``side`` zeros (400 MB decoded,
    1.2 GB as RGB) in about 400 KB, written row by row in constant memory."""
    import struct

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    packer = zlib.compressobj(9)
    row = bytes(side + 1)  # filter byte 0, then the pixels
    idat = b"".join(packer.compress(row) for _ in range(side)) + packer.flush()
    header = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path
