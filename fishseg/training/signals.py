"""Stopping on SIGINT/SIGTERM between steps, so the state saved is never half a step."""

from __future__ import annotations

import contextlib
import logging
import signal
from collections.abc import Iterator
from typing import Any

from fishseg.errors import FishsegError

log = logging.getLogger(__name__)


class Interrupted(FishsegError):
    """Training stopped by a signal after saving its state."""


class StopFlag:
    """Set by SIGINT/SIGTERM; the loop checks it between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __bool__(self) -> bool:
        return self.signal is not None

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopFlag]:
        def handler(signum: int, _frame: Any) -> None:
            if self.signal is None:
                log.warning(
                    "received %s: finishing the current step, then saving", signal.Signals(signum).name
                )
            self.signal = signum

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
