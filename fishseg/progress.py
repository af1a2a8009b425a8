"""Progress: bars on a terminal only, and an overall time-left line across epochs.

Bars are tqdm's with ``disable=None``: drawn when stderr is a terminal, left out when it
is a file or a pipe (CI, ``dvc queue logs``, ``dvc exp run --queue``), where every
carriage-return update would become a line. What a log needs instead is one line per
unit of long work: :class:`Eta` writes it for epochs.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from typing import Any

from tqdm import tqdm


def progress_bar(iterable: Iterable | None = None, *, enabled: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar that draws only on a terminal; ``enabled=False`` never draws."""
    return tqdm(iterable, disable=None if enabled else True, **kwargs)


def duration(seconds: float) -> str:
    """``42 s``, ``3 min 05 s``, ``1 h 02 min``: short, and fixed-width enough to scan in a log."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


class Eta:
    """Time left over all epochs, from the mean duration of the epochs run in this process.

    ``done`` epochs were finished before (a resumed run): they count towards the total,
    not towards the mean. The clock is injectable so the arithmetic can be tested.
    """

    def __init__(self, total: int, done: int = 0, clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.done, self.clock = total, done, clock
        self.started = clock()
        self.run_here = 0

    def epoch_done(self) -> str:
        """Record one finished epoch; return the line to log."""
        self.done += 1
        self.run_here += 1
        elapsed = self.clock() - self.started
        left = elapsed / self.run_here * max(0, self.total - self.done)
        finish = (datetime.now() + timedelta(seconds=left)).strftime("%H:%M")
        return (
            f"{self.done}/{self.total} epochs, {duration(elapsed)} elapsed, "
            f"about {duration(left)} left (done ~{finish})"
        )
