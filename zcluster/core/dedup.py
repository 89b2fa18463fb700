"""The duplicate window: message ids seen recently, bounded by count and by age.

An LRU cache with a time-to-live: once ``capacity`` ids are held the least
recently seen is forgotten, and an id is forgotten ``expiry`` seconds after
it was last remembered, whatever the count. The clock is whatever ``now``
the caller passes, so the window runs on real and virtual time alike.

With each id the window keeps what became of the message's handler
(:class:`Outcome`), so that a copy recognised after the receiver forgot its
stream is answered as the first one was: finished, or failed with its reason.

Written out rather than cachetools' ``TTLCache``, which costs about 2.5 times
as much per new id (``benchmarks/bench_dedup.py``), on the receiving path of
every exactly-once message.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Hashable

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
        #: id -> (when it is forgotten, its outcome), least recently seen first
        self._held: collections.OrderedDict[Hashable, tuple[float, Outcome]] = (
            collections.OrderedDict()
        )
        #: (when, id) in the order remembered, so in time order; an entry whose id was
        #: remembered again since, or forgotten, is stale and skipped
        self._deadlines: collections.deque[tuple[float, Hashable]] = collections.deque()

    def seen(self, message_id: Hashable, now: float) -> bool:
        """True if ``message_id`` was seen less than ``expiry`` ago; else remember it, False."""
        return self.recall(message_id, now) is not None

    def peek(self, message_id: Hashable, now: float) -> Outcome | None:
        """What became of ``message_id`` if it is in the window; remembers nothing."""
        held = self._held.get(message_id)
        return held[1] if held is not None and held[0] > max(now, self._now) else None

    def recall(self, message_id: Hashable, now: float) -> Outcome | None:
        """What became of ``message_id`` if it was seen less than ``expiry`` ago; else
        remember it (its handler not finished) and return None."""
        if now > self._now:  # a clock that never goes back
            self._now = now
            self._expire()
        held = self._held.get(message_id)
        if held is None:
            self._remember(message_id, RUNNING)
            return None
        self._held.move_to_end(message_id)  # a hit makes it the most recently seen
        return held[1]

    def settle(self, message_id: Hashable, error: str | None) -> None:
        """The handler of ``message_id`` returned (``error`` None) or failed.

        The id is remembered (again, if the window dropped it meanwhile) for another
        ``expiry`` from the latest ``now`` the window was given.
        """
        self._remember(message_id, RETURNED if error is None else Outcome(True, error))

    def __len__(self) -> int:
        self._expire()
        return len(self._held)

    def _remember(self, message_id: Hashable, outcome: Outcome) -> None:
        held, deadlines = self._held, self._deadlines
        until = self._now + self.expiry
        held[message_id] = (until, outcome)
        held.move_to_end(message_id)
        deadlines.append((until, message_id))
        if len(held) > self.capacity:
            held.popitem(last=False)
        if len(deadlines) > 2 * len(held) + _STALE_SLACK_COUNT:
            # Ids remembered again or evicted leave stale deadlines: drop them in one pass.
            self._deadlines = collections.deque(
                sorted(((until, i) for i, (until, _) in held.items()), key=_deadline)
            )

    def _expire(self) -> None:
        held, deadlines, now = self._held, self._deadlines, self._now
        while deadlines and deadlines[0][0] <= now:
            until, message_id = deadlines.popleft()
            current = held.get(message_id)
            if current is not None and current[0] == until:
                del held[message_id]


def _deadline(entry: tuple[float, Hashable]) -> float:
    return entry[0]


#: stale deadlines tolerated beyond twice the ids held, before they are dropped
_STALE_SLACK_COUNT = 1024
