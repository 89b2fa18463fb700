"""The duplicate window: message ids seen recently, bounded by count and by age.

An LRU cache with a time-to-live (cachetools' ``TTLCache``): once ``capacity``
ids are held the least recently seen is forgotten, and an id older than
``expiry`` seconds is forgotten whatever the count. The clock is whatever
``now`` the caller passes, so the window runs on real and virtual time alike.
"""

from __future__ import annotations

from collections.abc import Hashable

from cachetools import TTLCache

from zcluster.errors import ConfigError


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
        self._seen: TTLCache[Hashable, None] = TTLCache(capacity, expiry, timer=self._clock)

    def _clock(self) -> float:
        return self._now

    def seen(self, message_id: Hashable, now: float) -> bool:
        """True if ``message_id`` was seen less than ``expiry`` ago; else remember it, False."""
        self._now = max(self._now, now)  # the cache needs a clock that never goes back
        try:
            self._seen[message_id]  # a hit also makes it the most recently used, as in an LRU
        except KeyError:
            self._seen[message_id] = None
            return False
        return True

    def __len__(self) -> int:
        self._seen.expire()
        return len(self._seen)
