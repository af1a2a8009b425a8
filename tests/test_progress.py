"""Progress bars only on a terminal; the time-left line across epochs."""

from __future__ import annotations

import io
import subprocess
import sys

from fishseg.progress import Eta, duration, progress_bar

from .helpers import REPO, tiny, write_params


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_draws_on_a_terminal_only():
    piped, terminal = io.StringIO(), _Terminal()
    assert list(progress_bar(range(3), file=piped, desc="x")) == [0, 1, 2]
    assert piped.getvalue() == ""
    list(progress_bar(range(3), file=terminal, desc="x"))
    assert "\r" in terminal.getvalue() and "3/3" in terminal.getvalue()
    silent = _Terminal()
    list(progress_bar(range(3), file=silent, enabled=False))
    assert silent.getvalue() == ""


def test_stage_output_through_a_pipe_has_no_carriage_returns(tmp_path):
    """What `dvc queue logs` shows: a stage's stderr is a file there, so no bar updates."""
    root = tmp_path / "project"
    root.mkdir()
    (root / "dvc.yaml").write_text("stages: {}\n")
    write_params(root, tiny())
    done = subprocess.run(
        [sys.executable, str(REPO / "stages" / "download.py"), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert "work/raw ready" in done.stderr
    assert "\r" not in done.stderr + done.stdout


def test_duration_reads_well():
    assert [duration(s) for s in (0, 42.4, 185, 3720, -3)] == [
        "0 s",
        "42 s",
        "3 min 05 s",
        "1 h 02 min",
        "0 s",
    ]


def test_eta_from_the_epochs_run_here():
    now = [100.0]
    eta = Eta(total=10, done=4, clock=lambda: now[0])  # resumed after 4 epochs
    now[0] += 30
    line = eta.epoch_done()
    assert line.startswith("5/10 epochs, 30 s elapsed, about 2 min 30 s left (done ~")
    now[0] += 50  # slower second epoch: the mean (40 s) times 4 epochs left
    assert eta.epoch_done().startswith("6/10 epochs, 1 min 20 s elapsed, about 2 min 40 s left")
