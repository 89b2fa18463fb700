"""Rate limits on what a node sends in answer to what it receives.

A token bucket per kind of answer (and per peer, where a peer could make
the node send much for little): an answer takes tokens; tokens come back at
a steady rate up to a burst. Pure: time is the ``now`` the core is given.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBucket:
    """At most ``rate_per_s`` on average, ``burst`` at once (at least one: a rate below one
    a second must still let one through now and then)."""

    __slots__ = ("_last", "_tokens", "burst", "rate_per_s")

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(1.0, burst)
        self._tokens = self.burst
        self._last: float | None = None

    def _refill(self, now: float) -> None:
        if self._last is not None and now > self._last:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now if self._last is None else max(self._last, now)

    def take(self, now: float, count: float = 1.0) -> bool:
        """Take ``count`` tokens if there are that many."""
        self._refill(now)
        if self._tokens < count:
            return False
        self._tokens -= count
        return True

    def has(self, now: float, count: float = 1.0) -> bool:
        """Whether ``count`` tokens are there, without taking them."""
        self._refill(now)
        return self._tokens >= count

    def take_up_to(self, now: float, count: int) -> int:
        """Take as many whole tokens as there are, up to ``count``; how many were taken."""
        self._refill(now)
        taken = min(count, int(self._tokens))
        self._tokens -= taken
        return taken


class PeerBuckets:
    """A bucket per peer, the least recently used forgotten past ``max_peers_count`` (a
    forgotten peer starts again with a full bucket: it cannot gain more than a burst)."""

    def __init__(self, rate_per_s: float, burst: float, max_peers_count: int) -> None:
        self._rate_per_s = rate_per_s
        self._burst = burst
        self._max_peers_count = max_peers_count
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()

    def of(self, peer: str) -> TokenBucket:
        bucket = self._buckets.get(peer)
        if bucket is None:
            if len(self._buckets) >= self._max_peers_count:
                self._buckets.popitem(last=False)
            bucket = self._buckets[peer] = TokenBucket(self._rate_per_s, self._burst)
        else:
            self._buckets.move_to_end(peer)
        return bucket
