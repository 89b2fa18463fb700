"""Failures of user code, logged with their traceback but never in a flood."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("zcluster.callbacks")


class ErrorLog:
    """Logs a failing callback or handler with its traceback, at most once per
    ``interval_s``; the failures in between are counted and told with the next report
    (a handler that fails on every message must not bury the log). Safe from any thread.
    """

    def __init__(self, interval_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = -float("inf")
        self._held = 0
        self._lock = threading.Lock()

    def report(self, what: str, exc: BaseException, *, traceback: bool = True) -> None:
        """``what`` (e.g. "handler 'orders' (a request from n2)") raised ``exc``."""
        now = self._clock()
        with self._lock:
            if now < self._next_at:
                self._held += 1
                return
            self._next_at = now + self._interval_s
            held, self._held = self._held, 0
        more = f" ({held} more failure(s) since the last report, not shown)" if held else ""
        log.error(
            "%s raised %s: %s%s",
            what,
            type(exc).__name__,
            exc,
            more,
            exc_info=exc if traceback else None,
        )
