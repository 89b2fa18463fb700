"""Repaired fan-out, the publisher's bookkeeping: numbering and the retransmit buffer.

A publisher numbers the guaranteed publications of each topic and keeps
the latest ones in a bounded retransmit buffer; its heartbeats carry each
topic's latest number. Fetched numbers are answered from the buffer, and
what it no longer holds is named, so subscribers report it lost.

This is the one part of the core that other threads touch: a node's
blocking API numbers and sends guaranteed publications in the caller's
thread (``runtime/lane.py``). So every call of ``Publications`` runs under
its ``guard``, which such a host sets to a lock (the core itself knows no
threads).
"""

from __future__ import annotations

import contextlib
import itertools
from collections import OrderedDict, deque
from collections.abc import Iterable
from typing import Any

from zcluster.config import NodeConfig
from zcluster.protocol.guarantees import DeliveryGuarantee

Range = tuple[int, int]
Publication = tuple[int, DeliveryGuarantee, bytes]


class TopicLog:
    """A publisher's numbering of one topic and its retransmit buffer."""

    __slots__ = ("buffer", "seq")

    def __init__(self, buffer_count: int) -> None:
        self.seq = 0
        self.buffer: deque[Publication] = deque(maxlen=buffer_count)

    def append(self, guarantee: DeliveryGuarantee, payload: bytes) -> int:
        self.seq += 1
        self.buffer.append((self.seq, guarantee, payload))
        return self.seq

    def lookup(
        self, ranges: Iterable[Range], max_count: int
    ) -> tuple[list[Publication], list[Range]]:
        """Buffered publications in ``ranges`` (at most ``max_count``) and the ranges gone."""
        found: list[Publication] = []
        lost: list[Range] = []
        oldest = self.buffer[0][0] if self.buffer else self.seq + 1
        for first, last in ranges:
            last = min(last, self.seq)
            if first > last:
                continue
            if first < oldest:
                lost.append((first, min(last, oldest - 1)))
                first = oldest
                if first > last:
                    continue
            room = max_count - len(found)
            if room <= 0:
                break
            start = first - oldest
            found.extend(itertools.islice(self.buffer, start, start + min(room, last - first + 1)))
        return found, lost


class Publications:
    """Every topic this node publishes with a guarantee, most recently used last.

    Each call holds ``guard`` for its whole work: a lock makes it safe from any thread.
    """

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._logs: OrderedDict[str, TopicLog] = OrderedDict()
        self.guard: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()

    def __len__(self) -> int:
        return len(self._logs)

    def can_take(self, topic: str) -> bool:
        with self.guard:
            return self._can_take(topic)

    def _can_take(self, topic: str) -> bool:
        return topic in self._logs or len(self._logs) < self._config.published_topics_max_count

    def append(self, topic: str, guarantee: DeliveryGuarantee, payload: bytes) -> int:
        """Number and keep a publication; 0 if that would be one topic too many."""
        with self.guard:
            return self.append_held(topic, guarantee, payload)

    def append_held(self, topic: str, guarantee: DeliveryGuarantee, payload: bytes) -> int:
        """``append`` for a caller that holds ``guard`` already."""
        logs = self._logs
        log = logs.get(topic)
        if log is None:
            if not self._can_take(topic):
                return 0
            log = logs[topic] = TopicLog(self._config.retransmit_buffer_count)
        else:
            logs.move_to_end(topic)
        return log.append(guarantee, payload)

    def topics(self) -> list[str]:
        """Every topic published with a guarantee, least recently used first."""
        with self.guard:
            return list(self._logs)

    def positions(self) -> tuple[tuple[str, int], ...]:
        """``(topic, latest seq)`` of the most recently published topics, for heartbeats."""
        with self.guard:
            recent = itertools.islice(
                reversed(self._logs.items()), self._config.heartbeat_topics_max_count
            )
            return tuple((topic, log.seq) for topic, log in recent)

    def latest(self, topic: str) -> int:
        """The latest number published on ``topic`` (0 if none)."""
        with self.guard:
            log = self._logs.get(topic)
            return 0 if log is None else log.seq

    def lookup(self, topic: str, ranges: Iterable[Range]) -> tuple[list[Publication], list[Range]]:
        with self.guard:
            log = self._logs.get(topic)
            if log is None:
                return [], list(ranges)
            return log.lookup(ranges, self._config.fetch_max_count)
