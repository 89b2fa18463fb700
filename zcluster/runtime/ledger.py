"""What received messages waiting for user code hold, in bytes: in total and per sender.

A payload is charged when it is handed to a handler or a subscriber and
released when the call returns. Past ``callback_queue_max_bytes`` in total the
node stops reading publications (they wait in ZeroMQ and push back on their
publishers); past ``callback_queue_sender_max_bytes`` for one sender, that
sender's direct messages are refused until its handlers catch up, so that one
flooding peer cannot fill the queue ahead of the others. Every non-member
counts as one sender (``STRANGERS``): a flood cannot dodge its share by
claiming a new name per message.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable

#: the one share of every sender that is not a live member (no node id is empty) ...
STRANGERS = ""
#: ... and the share of publications (no node id has a space), which no sender's limit
#: applies to: a full queue stops reading them instead
PUBLICATIONS = " publications"
#: what a message costs beyond its payload: the objects around it (counts bound small ones)
MESSAGE_OVERHEAD_BYTES = 256


class Ledger:
    """Bytes of payloads handed to user code and not yet done with (thread-safe: charged
    on the loop, released on whichever thread ran the callback)."""

    def __init__(self, max_bytes: int, sender_max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.sender_max_bytes = sender_max_bytes
        self.total_bytes = 0
        self._of: dict[str, int] = {}
        self._lock = threading.Lock()
        self._full = False
        #: called (on the loop) when the total reaches max_bytes ...
        self.on_full: Callable[[], None] = lambda: None
        #: ... and (on any thread) when it is down to half of it again
        self.on_room: Callable[[], None] = lambda: None

    def has_room(self, sender: str) -> bool:
        """Whether a message of ``sender`` may be taken now (a read without the lock: a
        message more or less past a limit is within the bound's slack)."""
        return self.total_bytes < self.max_bytes and self._of.get(sender, 0) < self.sender_max_bytes

    def held_by(self, sender: str) -> int:
        return self._of.get(sender, 0)

    def charge(self, sender: str, size: int) -> int:
        """Charge ``size`` payload bytes to ``sender``; returns the cost, to ``release``."""
        cost = size + MESSAGE_OVERHEAD_BYTES
        with self._lock:
            self.total_bytes += cost
            self._of[sender] = self._of.get(sender, 0) + cost
            full = not self._full and self.total_bytes >= self.max_bytes
            if full:
                self._full = True
        if full:
            self.on_full()
        return cost

    def release(self, sender: str, cost: int) -> None:
        with self._lock:
            self.total_bytes -= cost
            left = self._of[sender] - cost
            if left:
                self._of[sender] = left
            else:
                del self._of[sender]
            room = self._full and self.total_bytes <= self.max_bytes // 2
            if room:
                self._full = False
        if room:
            self.on_room()

    @property
    def full(self) -> bool:
        """Whether the total reached max_bytes and has not come down to half of it since."""
        return self._full

    def charged(self, sender: str, size: int, call: Callable[[], object]) -> Callable[[], object]:
        """``call``, charged now and released when it returns or raises; when it returns an
        awaitable (a coroutine callback), when that is done."""
        cost = self.charge(sender, size)

        def run() -> object:
            try:
                result = call()
            except BaseException:
                self.release(sender, cost)
                raise
            if inspect.isawaitable(result):
                return self._released_after(result, sender, cost)
            self.release(sender, cost)
            return result

        return run

    async def _released_after(self, awaitable: Awaitable[object], sender: str, cost: int) -> object:
        try:
            return await awaitable
        finally:  # done, failed or cancelled (the node stopping)
            self.release(sender, cost)
