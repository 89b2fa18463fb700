"""Calls from other threads to a node's loop: a bounded queue, drained in batches.

The blocking API serializes in the caller's thread and appends here; the
loop is woken once per batch, not once per call, so a burst of publishes
costs one wake-up.
"""

from __future__ import annotations

import asyncio
import collections
import threading

from zcluster.core import events as ev
from zcluster.errors import Backpressure
from zcluster.runtime.driver import Driver


class Submitter:
    """A bounded queue from caller threads to the loop, drained in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop, driver: Driver, max_count: int) -> None:
        self._loop = loop
        self._driver = driver
        self._max_count = max_count
        self._items: collections.deque[ev.Event] = collections.deque()
        self._lock = threading.Lock()
        self._not_full = threading.Condition(self._lock)
        self._scheduled = False

    def submit(self, event: ev.Event, timeout: float | None) -> None:
        with self._lock:
            if len(self._items) >= self._max_count and not self._not_full.wait_for(
                lambda: len(self._items) < self._max_count, timeout
            ):
                raise Backpressure(f"{self._max_count} calls already queued to the node")
            self._items.append(event)
            if self._scheduled:
                return
            self._scheduled = True
        self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            self._scheduled = False
            self._not_full.notify_all()
        counters = self._driver.counters
        counters["submit_batches"] += 1
        counters["submitted_calls"] += len(items)
        self._driver.feed_many(items)
