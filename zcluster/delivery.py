"""Delivery guarantees and the duplicate filter, as users see them.

``MessageDeduplicator(capacity, expiry).is_duplicate(message_id)`` is the
seed's LRU window, bounded by count and by age, on the monotonic clock (or
any ``clock`` you pass, e.g. a test's virtual one).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable, Hashable

from zcluster.core.dedup import DedupWindow


class DeliveryGuarantee(enum.Enum):
    """What a sender asks of the delivery of one message."""

    AT_MOST_ONCE = "at_most_once"
    AT_LEAST_ONCE = "at_least_once"
    EXACTLY_ONCE = "exactly_once"
    ORDERED = "ordered"
    CAUSAL = "causal"
    TRANSACTIONAL = "transactional"


class AckStatus(enum.Enum):
    """Where a guaranteed message stands; it ends in exactly one final status."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"
    EXPIRED = "expired"

    @property
    def is_final(self) -> bool:
        return self is not AckStatus.PENDING


class MessageDeduplicator:
    """An LRU window of message ids, bounded by ``capacity`` ids and ``expiry`` seconds."""

    def __init__(
        self, capacity: int, expiry: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._window = DedupWindow(capacity, expiry)
        self._clock = clock

    @property
    def capacity(self) -> int:
        return self._window.capacity

    @property
    def expiry(self) -> float:
        return self._window.expiry

    def is_duplicate(self, message_id: Hashable) -> bool:
        """True if seen within the window; otherwise remembers it and returns False."""
        return self._window.seen(message_id, self._clock())

    def __len__(self) -> int:
        return len(self._window)
