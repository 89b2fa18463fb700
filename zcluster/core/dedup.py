"""The duplicate window: message ids seen recently, bounded by count and by age.

An LRU cache with a time-to-live (cachetools' ``TTLCache``): once ``capacity``
ids are held the least recently seen is forgotten, and an id older than
``expiry`` seconds is forgotten whatever the count. The clock is whatever
``now`` the caller passes, so the window runs on real and virtual time alike.

With each id the window keeps what became of the message's handler
(:class:`Outcome`), so that a copy recognised after the receiver forgot its
stream is answered as the first one was: finished, or failed with its reason.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Hashable

from cachetools import TTLCache

from zcluster.errors import ConfigError


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one remembered message: its handler is running (``finished``
    False), returned (``error`` None) or failed (``error`` is the reason)."""

    finished: bool = False
    error: str | None = None


#: shared by every id in that state, so that only a failure costs memory of its own
RUNNING = Outcome()
RETURNED = Outcome(finished=True)


class DedupWindow:
    """Answers "have I seen this message id within the window?" and remembers it."""

    def __init__(self, capacity: int, expiry: float) -> None:
        if capacity < 1:
            raise ConfigError(f"capacity must be at least 1, got {capacity}")
        if not expiry > 0:
            raise ConfigError(f"expiry must be positive, got {expiry}")
        self.capacity = capacity
        self.expiry = expiry
        self._now = 0.0
        self._seen: TTLCache[Hashable, Outcome] = TTLCache(capacity, expiry, timer=self._clock)

    def _clock(self) -> float:
        return self._now

    def seen(self, message_id: Hashable, now: float) -> bool:
        """True if ``message_id`` was seen less than ``expiry`` ago; else remember it, False."""
        return self.recall(message_id, now) is not None

    def recall(self, message_id: Hashable, now: float) -> Outcome | None:
        """What became of ``message_id`` if it was seen less than ``expiry`` ago; else
        remember it (its handler not finished) and return None."""
        self._now = max(self._now, now)  # the cache needs a clock that never goes back
        try:
            return self._seen[message_id]  # a hit also makes it the most recently used
        except KeyError:
            self._seen[message_id] = RUNNING
            return None

    def settle(self, message_id: Hashable, error: str | None) -> None:
        """The handler of ``message_id`` returned (``error`` None) or failed.

        The id is remembered (again, if the window dropped it meanwhile) for another
        ``expiry`` from the latest ``now`` the window was given.
        """
        self._seen[message_id] = RETURNED if error is None else Outcome(True, error)

    def __len__(self) -> int:
        self._seen.expire()
        return len(self._seen)
