"""Atomic directory swaps survive a real SIGKILL: the next write cleans up and loses nothing.

Each test starts a real Python process that writes a directory with ``atomic_dir`` and
stops at a known point (it touches a marker file, then sleeps); the test kills it with
SIGKILL there, as the OOM killer or ``kill -9`` would, and looks at what is left.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from fishseg import fsutil
from fishseg.fsutil import atomic_dir

from .helpers import REPO

MARKER_TIMEOUT_S = 30

# Run by the child: write ``target`` atomically, pausing at ``point`` until killed.
CHILD = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    from fishseg import fsutil

    target, marker, point = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]

    def pause():
        marker.touch()
        time.sleep(120)

    if point == "between-renames":
        # The fallback swap (no renameat2 exchange), paused after its first rename.
        fsutil._exchange = lambda a, b: False
        real_replace = os.replace
        def replace(src, dst):
            real_replace(src, dst)
            if str(dst).endswith(".old"):
                pause()
        os.replace = replace
    elif point == "after-exchange":
        real_exchange = fsutil._exchange
        def exchange(a, b):
            done = real_exchange(a, b)
            pause()
            return done
        fsutil._exchange = exchange

    with fsutil.atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("new")
        if point == "body":
            pause()
    """
)


def _paused_at(point: str, target: Path) -> subprocess.Popen:
    """A child writing ``target``, once it has reached ``point`` (where it sleeps)."""
    marker = target.parent / f"marker-{point}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(target), str(marker), point], env=env)
    deadline = time.monotonic() + MARKER_TIMEOUT_S
    while not marker.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the writer did not reach {point} (exit status {proc.wait()})")
        time.sleep(0.05)
    marker.unlink()
    return proc


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=MARKER_TIMEOUT_S) == -signal.SIGKILL


def _killed_at(point: str, target: Path) -> None:
    """Run a writer until it reaches ``point``, then SIGKILL it."""
    _kill(_paused_at(point, target))


def _old_data(tmp_path: Path) -> Path:
    target = tmp_path / "raw"
    target.mkdir()
    (target / "data.txt").write_text("old")
    return target


def _leftovers(target: Path) -> list[str]:
    return sorted(p.name for p in target.parent.iterdir() if p.name.startswith(f".{target.name}."))


def _failed_write(target: Path) -> None:
    """The next run of the stage fails too (say, the download breaks): nothing must be lost."""
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("partial")
        raise RuntimeError("download failed")


def test_temp_folder_of_a_killed_write_is_removed_by_the_next_one(tmp_path):
    target = _old_data(tmp_path)
    _killed_at("body", target)
    assert len(_leftovers(target)) == 1 and _leftovers(target)[0].endswith(".tmp")
    assert (target / "data.txt").read_text() == "old"

    _failed_write(target)
    assert _leftovers(target) == []
    assert (target / "data.txt").read_text() == "old"
    with atomic_dir(target) as tmp:
        (tmp / "data.txt").write_text("newer")
    assert (target / "data.txt").read_text() == "newer" and _leftovers(target) == []


def test_old_copy_is_restored_when_the_two_rename_swap_was_cut(tmp_path):
    target = _old_data(tmp_path)
    _killed_at("between-renames", target)
    # the state a kill between the renames leaves: no data/raw, only the old copy beside it
    assert not target.exists() and ".raw.old" in _leftovers(target)

    _failed_write(target)
    assert (target / "data.txt").read_text() == "old"
    assert _leftovers(target) == []


def test_a_kill_after_the_exchange_leaves_the_new_copy_and_the_old_one_is_removed(tmp_path):
    target = _old_data(tmp_path)
    _killed_at("after-exchange", target)
    # the exchange is one step: data/raw is already the complete new copy
    assert (target / "data.txt").read_text() == "new"
    (stale,) = _leftovers(target)
    assert (target.parent / stale / "data.txt").read_text() == "old"

    _failed_write(target)
    assert (target / "data.txt").read_text() == "new" and _leftovers(target) == []


def test_a_live_writers_temp_folder_is_left_alone(tmp_path):
    target = _old_data(tmp_path)
    writer = _paused_at("body", target)
    try:
        fsutil.recover_dir(target)
        (live,) = _leftovers(target)
        assert (target.parent / live / "data.txt").read_text() == "new"
    finally:
        _kill(writer)
    fsutil.recover_dir(target)  # its writer is gone now
    assert _leftovers(target) == [] and (target / "data.txt").read_text() == "old"
