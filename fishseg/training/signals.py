"""Stopping on SIGINT/SIGTERM between steps, so the state saved is never half a step.

The first signal asks for a clean stop; a second one (Ctrl-C pressed again) stops at once:
``KeyboardInterrupt`` (exit 130) for SIGINT, exit 128 + signal number for SIGTERM. Every
state file is replaced whole, so the last state saved before it stays usable.
"""

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
            name = signal.Signals(signum).name
            if self.signal is not None:
                log.warning("received %s again: stopping now; the last saved state is kept", name)
                if signum == signal.SIGINT:
                    raise KeyboardInterrupt
                raise SystemExit(128 + signum)
            # Set before logging: a second signal can arrive while this handler still runs.
            self.signal = signum
            log.warning("received %s: stopping after the current step (send it again to stop at once)", name)

        previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
