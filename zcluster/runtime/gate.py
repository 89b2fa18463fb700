"""Backpressure for guaranteed sends: at most ``outbox_max_count`` unresolved per receiver.

Senders take a place before sending and give it back when the message
reaches a final status. A full outbox makes the blocking API block and
the asyncio API wait, each up to a timeout, then raise Backpressure; a
timeout of 0 raises at once. Memory stays bounded either way.
"""

from __future__ import annotations

import asyncio
import threading

from zcluster.errors import Backpressure


class OutboxGate:
    """Counts unresolved guaranteed sends per receiver, across threads."""

    def __init__(self, max_count: int) -> None:
        self._max_count = max_count
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        #: signalled (under _lock) when a place is given back, for threads waiting for one
        self._changed = threading.Condition(self._lock)
        self._blocked = 0  # threads waiting on _changed
        self._async_waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    def count(self, receiver: str) -> int:
        return self._counts.get(receiver, 0)

    def take(self, receiver: str, timeout: float) -> None:
        """Take a place, blocking up to ``timeout`` seconds for one."""
        counts = self._counts
        with self._lock:
            held = counts.get(receiver, 0)
            if held < self._max_count:
                counts[receiver] = held + 1
                return
            self._blocked += 1
            try:
                if not self._changed.wait_for(lambda: self._has_room(receiver), timeout):
                    raise self._full(receiver, timeout)
            finally:
                self._blocked -= 1
            counts[receiver] = counts.get(receiver, 0) + 1

    async def atake(self, receiver: str, timeout: float) -> None:
        """Take a place, waiting (without blocking the loop) up to ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            with self._lock:
                if self._has_room(receiver):
                    self._counts[receiver] = self._counts.get(receiver, 0) + 1
                    return
                future: asyncio.Future[None] = loop.create_future()
                self._async_waiters.append((loop, future))
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise self._full(receiver, timeout)
            try:
                await asyncio.wait_for(future, remaining)
            except TimeoutError:
                raise self._full(receiver, timeout) from None

    def hold(self, receiver: str, count: int = 1) -> None:
        """Count places taken without asking (sends restored from a store, already in the
        outbox)."""
        with self._lock:
            self._counts[receiver] = self._counts.get(receiver, 0) + count

    def release(self, receiver: str, count: int = 1) -> None:
        with self._lock:
            left = self._counts.get(receiver, 0) - count
            if left > 0:
                self._counts[receiver] = left
            else:
                self._counts.pop(receiver, None)
            if self._blocked:
                self._changed.notify_all()
            waiters, self._async_waiters = self._async_waiters, []
        for loop, future in waiters:
            loop.call_soon_threadsafe(_wake, future)

    def _has_room(self, receiver: str) -> bool:
        return self._counts.get(receiver, 0) < self._max_count

    def _full(self, receiver: str, timeout: float) -> Backpressure:
        return Backpressure(
            f"{self._max_count} guaranteed messages to {receiver!r} await acknowledgement "
            f"(outbox_max_count); no room within {timeout:g}s"
        )


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
