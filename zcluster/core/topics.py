"""Repaired fan-out: per-(publisher, topic) sequence numbers, gap fetch, loss reports.

A publisher numbers the guaranteed publications of each topic and keeps
the latest ones in a bounded retransmit buffer; its heartbeats carry each
topic's latest number, so a subscriber notices loss even at the tail. A
subscriber that sees a gap asks the publisher (FETCH, over ROUTER/DEALER)
for the missing numbers, again until they come; what the publisher no
longer holds comes back as LOST and is reported, never hidden.
"""

from __future__ import annotations

import itertools
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable

from zcluster.config import NodeConfig
from zcluster.core.sequences import HoldBack, SeqSet
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
    """Every topic this node publishes with a guarantee, most recently used last."""

    def __init__(self, config: NodeConfig) -> None:
        self._config = config
        self._logs: OrderedDict[str, TopicLog] = OrderedDict()

    def __len__(self) -> int:
        return len(self._logs)

    def can_take(self, topic: str) -> bool:
        return topic in self._logs or len(self._logs) < self._config.published_topics_max_count

    def append(self, topic: str, guarantee: DeliveryGuarantee, payload: bytes) -> int:
        log = self._logs.get(topic)
        if log is None:
            log = self._logs[topic] = TopicLog(self._config.retransmit_buffer_count)
        else:
            self._logs.move_to_end(topic)
        return log.append(guarantee, payload)

    def positions(self) -> tuple[tuple[str, int], ...]:
        """``(topic, latest seq)`` of the most recently published topics, for heartbeats."""
        recent = itertools.islice(
            reversed(self._logs.items()), self._config.heartbeat_topics_max_count
        )
        return tuple((topic, log.seq) for topic, log in recent)

    def latest(self, topic: str) -> int:
        """The latest number published on ``topic`` (0 if none)."""
        log = self._logs.get(topic)
        return 0 if log is None else log.seq

    def lookup(self, topic: str, ranges: Iterable[Range]) -> tuple[list[Publication], list[Range]]:
        log = self._logs.get(topic)
        if log is None:
            return [], list(ranges)
        return log.lookup(ranges, self._config.fetch_max_count)


class TopicStream:
    """What one subscriber knows of one publisher's topic (one publisher incarnation)."""

    __slots__ = ("delivered", "held", "highest", "incarnation", "next_fetch", "start_after")

    def __init__(self, incarnation: int, start_after: int, highest: int) -> None:
        self.incarnation = incarnation
        #: numbers up to this are not ours (published before we subscribed)
        self.start_after = start_after
        self.delivered = SeqSet(start_after)
        self.held: HoldBack[Publication] = HoldBack()
        #: the highest number known to exist, from a publication or a heartbeat
        self.highest = max(highest, start_after)
        self.next_fetch = 0.0

    @property
    def has_gap(self) -> bool:
        return self.highest > self.delivered.upto

    def start_earlier(self, start_after: int) -> None:
        """The publisher says our subscription began after ``start_after``, before where we
        assumed it did: the numbers between are ours too, and now missing."""
        if start_after >= self.start_after:
            return
        old = self.delivered
        self.delivered = SeqSet(start_after)
        self.delivered.above = set(old.above)
        if old.upto > self.start_after:  # received, contiguously, after the assumed start
            self.delivered.add_range(self.start_after + 1, old.upto)
        self.start_after = start_after


Key = tuple[str, str]  # (publisher, topic)


class Loss:
    """A range of publications that can no longer be delivered."""

    __slots__ = ("first", "last", "publisher", "topic")

    def __init__(self, publisher: str, topic: str, first: int, last: int) -> None:
        self.publisher, self.topic, self.first, self.last = publisher, topic, first, last


class Subscriptions:
    """Every (publisher, topic) stream this node receives with a guarantee."""

    def __init__(self, config: NodeConfig, counters: Counter[str]) -> None:
        self._config = config
        self._counters = counters
        self._streams: OrderedDict[Key, TopicStream] = OrderedDict()
        #: streams with a gap, in the order found (a dict: its order reaches effects)
        self._gappy: dict[Key, None] = {}
        #: topics whose new streams start from the oldest buffered publication
        self.replay_topics: set[str] = set()
        self.losses: list[Loss] = []
        #: a stream found a gap it had not asked for yet
        self.new_gap = False

    def __len__(self) -> int:
        return len(self._streams)

    def stream(self, publisher: str, topic: str) -> TopicStream | None:
        return self._streams.get((publisher, topic))

    def publication(
        self, publisher: str, incarnation: int, topic: str, item: Publication, start_after: int
    ) -> list[Publication]:
        """Take one numbered publication; returns what is now deliverable, in order.

        A new stream starts after ``start_after`` (earlier numbers are not ours).
        """
        seq, guarantee, _ = item
        key = (publisher, topic)
        stream = self._stream_for(key, incarnation, start_after, seq)
        if stream is None:
            self._counters["publications_stale_incarnation"] += 1
            return []
        if seq in stream.delivered or seq in stream.held:
            self._counters["publications_duplicate"] += 1
            return []
        stream.highest = max(stream.highest, seq)
        ready: list[Publication] = []
        if guarantee is DeliveryGuarantee.ORDERED and seq != stream.delivered.upto + 1:
            if len(stream.held) < self._config.topic_holdback_max_count:
                stream.held.hold(seq, item)
            else:
                self._counters["publications_holdback_full"] += 1  # fetched again later
        else:
            stream.delivered.add(seq)
            ready.append(item)
        ready.extend(p for _, p in stream.held.release(stream.delivered))
        self._after_change(key, stream, ready)
        return ready

    def position(
        self, publisher: str, incarnation: int, topic: str, latest: int, start_after: int
    ) -> list[Publication]:
        """A heartbeat says ``latest`` is the publisher's newest number on ``topic``."""
        key = (publisher, topic)
        stream = self._stream_for(key, incarnation, start_after, latest)
        if stream is None:
            return []
        stream.highest = max(stream.highest, latest)
        ready: list[Publication] = []
        self._after_change(key, stream, ready)
        return ready

    def subscription_began(
        self, publisher: str, incarnation: int, topic: str, start_after: int
    ) -> list[Publication]:
        """The publisher confirmed our subscription when its latest number was ``start_after``:
        everything after it is ours."""
        key = (publisher, topic)
        stream = self._stream_for(key, incarnation, start_after, start_after)
        if stream is None:
            return []
        if key[1] not in self.replay_topics:
            stream.start_earlier(start_after)
        ready: list[Publication] = []
        self._after_change(key, stream, ready)
        return ready

    def lost(
        self, publisher: str, incarnation: int, topic: str, ranges: Iterable[Range]
    ) -> list[Publication]:
        """The publisher no longer holds ``ranges``: report them, release what waited."""
        key = (publisher, topic)
        stream = self._streams.get(key)
        if stream is None or stream.incarnation != incarnation:
            return []
        for first, last in ranges:
            self._give_up(key, stream, first, min(last, stream.highest))
        ready = [p for _, p in stream.held.release(stream.delivered)]
        self._after_change(key, stream, ready)
        return ready

    def due_fetches(self, now: float) -> list[tuple[str, str, list[Range]]]:
        """Gaps to ask publishers for now: ``(publisher, topic, ranges)``."""
        out: list[tuple[str, str, list[Range]]] = []
        budget = self._config.fetch_max_count
        for key in list(self._gappy):
            stream = self._streams[key]
            if now < stream.next_fetch:
                continue
            stream.next_fetch = now + self._config.fetch_retry_s
            ranges = stream.delivered.gaps(stream.highest, budget, stream.held.seqs())
            if ranges:
                out.append((key[0], key[1], ranges))
        return out

    def forget_publisher(self, publisher: str) -> list[tuple[str, list[Publication]]]:
        """The publisher is gone (restarted, left, removed): report open gaps as lost."""
        out: list[tuple[str, list[Publication]]] = []
        for key in [k for k in self._streams if k[0] == publisher]:
            stream = self._streams.pop(key)
            self._gappy.pop(key, None)
            out.append((key[1], self._close(key, stream)))
        return out

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self._streams if k[1] == topic]:
            del self._streams[key]
            self._gappy.pop(key, None)

    # ------------------------------------------------------------ internals

    def _close(self, key: Key, stream: TopicStream) -> list[Publication]:
        """Give up every gap; return held publications, in order, for delivery."""
        self._give_up(key, stream, stream.delivered.upto + 1, stream.highest)
        return [p for _, p in stream.held.release(stream.delivered)]

    def _stream_for(
        self, key: Key, incarnation: int, start_after: int, highest: int
    ) -> TopicStream | None:
        streams = self._streams
        stream = streams.get(key)
        if stream is not None:
            if stream.incarnation == incarnation:
                streams.move_to_end(key)
                return stream
            if stream.incarnation > incarnation:
                return None
            # A new life of the publisher: what the old one left missing is lost.
            self._close(key, stream)
        elif len(streams) >= self._config.topic_streams_max_count:
            evicted, old = streams.popitem(last=False)
            self._gappy.pop(evicted, None)
            self._close(evicted, old)
        if key[1] in self.replay_topics:
            start_after = 0
        stream = streams[key] = TopicStream(incarnation, start_after, highest)
        if stream.has_gap:
            self._mark_gappy(key)
        return stream

    def _mark_gappy(self, key: Key) -> None:
        if key not in self._gappy:
            self._gappy[key] = None
            self.new_gap = True

    def _after_change(self, key: Key, stream: TopicStream, ready: list[Publication]) -> None:
        window = self._config.topic_holdback_max_count
        if stream.highest - stream.delivered.upto > window:
            # Further behind than we may hold: the oldest part of the gap is given up.
            self._give_up(key, stream, stream.delivered.upto + 1, stream.highest - window)
            ready.extend(p for _, p in stream.held.release(stream.delivered))
        if stream.has_gap:
            self._mark_gappy(key)
        else:
            self._gappy.pop(key, None)

    def _give_up(self, key: Key, stream: TopicStream, first: int, last: int) -> None:
        delivered = stream.delivered
        for a, b in delivered.gaps(last, max(0, last - delivered.upto), stream.held.seqs()):
            if b < first:
                continue
            a = max(a, first)
            self.losses.append(Loss(key[0], key[1], a, b))
            self._counters["publications_lost"] += b - a + 1
            stream.delivered.add_range(a, b)
