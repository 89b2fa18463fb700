"""What a zcluster receiver counts: warm-up, arrivals, duplicates, order, the last arrival's time.

One tally per topic or handler, fed from the node's callback thread.
Measured messages are numbered from 0 on, burst after burst; warm-up
messages below 0.
"""

from __future__ import annotations

import threading
import time
from typing import Any

#: a receiver that sees no new message this long after the last one stops waiting
IDLE_TIMEOUT_S = 2.0
#: the same when missing messages may still be repaired (guaranteed delivery)
REPAIR_IDLE_TIMEOUT_S = 5.0
_POLL_S = 0.02


class Tally:
    """Counts a stream of ``expected`` numbered messages after ``warmup`` warm-up ones."""

    def __init__(self, expected: int, warmup: int) -> None:
        self.warmup = warmup
        self.warmup_seen = 0
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.last_arrival_s = 0.0
        self._seen = bytearray(expected)
        self._highest = -1
        self.warmed = threading.Event()

    def add(self, message: Any) -> None:
        now_s = time.perf_counter()
        seq = message["id"]
        if seq < 0:
            self.warmup_seen += 1
            if self.warmup_seen >= self.warmup:
                self.warmed.set()
            return
        if self._seen[seq]:
            self.duplicates += 1
            return
        self._seen[seq] = 1
        self.received += 1
        self.last_arrival_s = now_s
        if seq < self._highest:
            self.out_of_order += 1
        self._highest = max(self._highest, seq)

    def on_publication(self, _topic: str, message: Any, _sender: str) -> None:
        self.add(message)

    def on_direct(self, message: Any, _sender: str) -> None:
        self.add(message)

    def wait_received(self, target: int, idle_timeout_s: float, first_timeout_s: float) -> None:
        """Wait until ``target`` messages arrived in all; give up after ``first_timeout_s``
        without a new one at first, or ``idle_timeout_s`` without one after that."""
        start_count = last_count = self.received
        last_change_s = time.monotonic()
        while self.received < target:
            time.sleep(_POLL_S)
            now_s = time.monotonic()
            if self.received != last_count:
                last_count, last_change_s = self.received, now_s
            limit_s = first_timeout_s if last_count == start_count else idle_timeout_s
            if now_s - last_change_s > limit_s:
                return

    def counts(self) -> dict[str, Any]:
        """What arrived so far (the numbers only grow: a burst's are the differences)."""
        return {
            "received": self.received,
            "duplicates": self.duplicates,
            "out_of_order": self.out_of_order,
            "last_arrival_s": self.last_arrival_s,
        }


def burst_counts(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    """What arrived between two ``Tally.counts()``."""
    return {
        **{key: after[key] - before[key] for key in ("received", "duplicates", "out_of_order")},
        "last_arrival_s": after["last_arrival_s"],
    }
