"""Repaired fan-out, the subscriber's bookkeeping: streams, gaps, loss reports.

Each (publisher, topic) the node reads with a guarantee is a stream. A
subscriber that sees a gap (also from the latest numbers heartbeats carry,
so tail loss shows) asks the publisher (FETCH, over ROUTER/DEALER) for the
missing numbers, again until they come; what the publisher no longer holds
comes back as LOST and is reported, never hidden. The publisher's side is
``publications.py``.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable

from zcluster.config import NodeConfig
from zcluster.core.publications import Publication, Range
from zcluster.core.sequences import HeldBytes, HoldBack, SeqSet
from zcluster.protocol.guarantees import DeliveryGuarantee

#: a stream's provisional start (where its first publication or heartbeat position was)
#: waits this many LISTEN retry intervals (``listen_retry_s``) for the publisher's LISTENING
#: answer, holding ORDERED publications back, then becomes final
PROVISIONAL_START_LISTEN_ROUNDS = 4


class TopicStream:
    """What one subscriber knows of one publisher's topic (one publisher incarnation)."""

    __slots__ = (
        "confirmed",
        "delivered",
        "final",
        "held",
        "highest",
        "incarnation",
        "next_fetch",
        "ordered_through",
        "start_after",
    )

    def __init__(
        self, incarnation: int, start_after: int, highest: int, final: bool, held_bytes: HeldBytes
    ) -> None:
        self.incarnation = incarnation
        #: numbers up to this are not ours (published before we subscribed)
        self.start_after = start_after
        #: whether ``start_after`` is settled (confirmed by the publisher, 0, or no longer
        #: waited for); until it is, ORDERED publications are held back, since the start may
        #: still move earlier and add numbers that must be delivered before them
        self.final = final or start_after == 0
        self.delivered = SeqSet(start_after)
        self.held: HoldBack[Publication] = HoldBack(held_bytes)
        #: the highest number known to exist, from a publication or a heartbeat
        self.highest = max(highest, start_after)
        #: the highest ORDERED number delivered: nothing below it may be delivered after it
        self.ordered_through = 0
        self.next_fetch = 0.0
        #: whether the publisher confirmed where this stream starts (its answer, a replay
        #: from 0, or an earlier stream of the same incarnation that had it): no later answer
        #: moves the start earlier
        self.confirmed = False

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


def _never(_: str) -> bool:
    return False


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
        #: what every stream holds back behind gaps, in payload bytes
        self.held_bytes = HeldBytes(config.holdback_max_bytes)
        #: streams with a gap, in the order found (a dict: its order reaches effects)
        self._gappy: dict[Key, None] = {}
        #: streams whose start is provisional, and until when it waits for the publisher's
        #: confirmation (a dict: its order reaches effects)
        self._provisional: dict[Key, float] = {}
        #: where closed streams stopped, ``(incarnation, last number done)``, oldest first (at
        #: most ``topic_streams_max_count``): a stream of the same publisher incarnation
        #: opened later (it was removed and came back, or the stream was evicted) resumes
        #: there, settled, so that nothing is delivered or reported lost twice, and nothing
        #: published in between is skipped
        self._stopped: OrderedDict[Key, tuple[int, int, int | None]] = OrderedDict()
        #: topics whose new streams start from the oldest buffered publication (only an
        #: incarnation's first stream: one that resumes starts where the last one stopped)
        self.replay_topics: set[str] = set()
        #: whether a new stream of a topic starts settled where it is first seen: a topic
        #: read through a prefix only, whose start no publisher answer will confirm
        self.starts_settled: Callable[[str], bool] = _never
        self.losses: list[Loss] = []
        #: ``(publisher, topic, publications)`` held back by streams closed to make room for
        #: another (a publisher's new life, a stream evicted): deliverable, in order
        self.released: list[tuple[str, int, str, list[Publication]]] = []
        #: a stream found a gap it had not asked for yet
        self.new_gap = False

    def __len__(self) -> int:
        return len(self._streams)

    def stream(self, publisher: str, topic: str) -> TopicStream | None:
        return self._streams.get((publisher, topic))

    @property
    def start_wait_s(self) -> float:
        """How long a provisional start waits for the publisher's confirmation (LISTENING)."""
        return self._config.listen_retry_s * PROVISIONAL_START_LISTEN_ROUNDS

    def publication(
        self,
        publisher: str,
        incarnation: int,
        topic: str,
        item: Publication,
        start_after: int,
        now: float = 0.0,
    ) -> list[Publication]:
        """Take one numbered publication; returns what is now deliverable, in order.

        A new stream starts provisionally after ``start_after`` (earlier numbers are not
        ours), until ``subscription_began`` confirms where (or ``settle_starts`` stops
        waiting for that).
        """
        seq, guarantee, _ = item
        key = (publisher, topic)
        stream = self._stream_for(key, incarnation, start_after, seq, now, confirmed=False)
        if stream is None:
            self._counters["publications_stale_incarnation"] += 1
            return []
        if seq in stream.delivered or seq in stream.held:
            self._counters["publications_duplicate"] += 1
            return []
        stream.highest = max(stream.highest, seq)
        ready: list[Publication] = []
        if guarantee is DeliveryGuarantee.ORDERED and (
            seq != stream.delivered.upto + 1 or not stream.final
        ):
            held = len(stream.held) < self._config.topic_holdback_max_count
            if not (held and stream.held.hold(seq, item, len(item[2]))):
                self._counters["publications_holdback_full"] += 1  # fetched again later
        else:
            stream.delivered.add(seq)
            ready.append(item)
            if guarantee is DeliveryGuarantee.ORDERED:
                stream.ordered_through = seq
        ready.extend(self._release(stream))
        self._after_change(key, stream, ready)
        return ready

    def take_in_order(
        self, publisher: str, incarnation: int, topic: str, first: int, last: int, ordered: int
    ) -> bool:
        """Take publications ``first..last`` of one stream at once when they are its next
        numbers and it misses and holds nothing (the common case, read in one batch):
        True, all of them are deliverable, in order. False: nothing was taken, take them
        one by one. ``ordered`` is the last ORDERED number among them (0: none).
        """
        key = (publisher, topic)
        stream = self._streams.get(key)
        if stream is None or stream.incarnation != incarnation or not stream.final:
            return False
        delivered = stream.delivered
        if first != delivered.upto + 1 or stream.highest > delivered.upto or len(stream.held):
            return False
        delivered.upto = stream.highest = last
        if ordered:
            stream.ordered_through = ordered
        self._streams.move_to_end(key)
        return True

    def position(
        self,
        publisher: str,
        incarnation: int,
        topic: str,
        latest: int,
        start_after: int,
        now: float = 0.0,
    ) -> list[Publication]:
        """A heartbeat says ``latest`` is the publisher's newest number on ``topic``; a new
        stream starts provisionally after ``start_after``."""
        key = (publisher, topic)
        stream = self._stream_for(key, incarnation, start_after, latest, now, confirmed=False)
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
        stream = self._stream_for(key, incarnation, start_after, start_after, 0.0, confirmed=True)
        if stream is None:
            return []
        if not stream.confirmed:
            stream.start_earlier(start_after)
            if stream.ordered_through > start_after:
                # We stopped waiting for this answer and ORDERED publications went on from
                # the assumed start: what the answer adds below them cannot come in order.
                self._give_up(key, stream, start_after + 1, stream.ordered_through)
        stream.confirmed = stream.final = True
        self._provisional.pop(key, None)
        ready = self._release(stream)
        self._after_change(key, stream, ready)
        return ready

    def holds_through(self, publisher: str, incarnation: int, topic: str, last: int) -> bool:
        """Whether the stream has delivered, or reported lost, every number up to ``last``
        (True without a stream of that incarnation: nothing of it is awaited here)."""
        stream = self._streams.get((publisher, topic))
        if stream is None or stream.incarnation != incarnation:
            return True
        return stream.final and stream.delivered.upto >= last and not len(stream.held)

    @property
    def has_provisional(self) -> bool:
        """Whether a stream's start waits for the publisher's confirmation."""
        return bool(self._provisional)

    @property
    def has_gaps(self) -> bool:
        """Whether a stream misses publications (``due_fetches`` may ask for some)."""
        return bool(self._gappy)

    def settle_starts(self, now: float) -> list[tuple[str, str, list[Publication]]]:
        """Streams whose provisional start waited ``start_wait_s`` for the publisher's
        confirmation in vain: the start becomes final. Returns ``(publisher, topic, ready)``
        for each, ``ready`` being the ORDERED publications it held back, in order."""
        out: list[tuple[str, str, list[Publication]]] = []
        for key, deadline in list(self._provisional.items()):
            if now < deadline:
                continue
            del self._provisional[key]
            stream = self._streams[key]
            stream.final = True
            ready = self._release(stream)
            self._after_change(key, stream, ready)
            out.append((key[0], key[1], ready))
        return out

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
        ready = self._release(stream)
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

    def forget_publisher(
        self, publisher: str, before: int
    ) -> list[tuple[str, int, list[Publication]]]:
        """The publisher's incarnations older than ``before`` are gone (it restarted, left, was
        removed): report their open gaps as lost. Streams of a later life stay. Returns
        ``(topic, incarnation, what they held that may be delivered)``."""
        out: list[tuple[str, int, list[Publication]]] = []
        for key in [k for k in self._streams if k[0] == publisher]:
            stream = self._streams[key]
            if stream.incarnation < before:
                self._drop(key)
                out.append((key[1], stream.incarnation, self._close(key, stream)))
        return out

    def topics(self) -> list[str]:
        """The topics of the streams held, each once, in the order first held."""
        return list(dict.fromkeys(topic for _, topic in self._streams))

    def forget_topic(self, topic: str) -> None:
        for key in [k for k in self._streams if k[1] == topic]:
            self._streams[key].held.clear()  # unsubscribed: nothing of it is delivered
            self._drop(key)
        for key in [k for k in self._stopped if k[1] == topic]:
            del self._stopped[key]  # a later subscription to it starts afresh

    # ------------------------------------------------------------ internals

    def _drop(self, key: Key) -> None:
        del self._streams[key]
        self._gappy.pop(key, None)
        self._provisional.pop(key, None)

    def _release(self, stream: TopicStream) -> list[Publication]:
        """Held ORDERED publications that are next in order, once the start is settled."""
        if not stream.final:
            return []
        ready: list[Publication] = []
        for seq, item in stream.held.release(stream.delivered):
            stream.ordered_through = seq
            ready.append(item)
        return ready

    def _close(self, key: Key, stream: TopicStream) -> list[Publication]:
        """Give up every gap; return held publications, in order, for delivery. Where the
        stream stopped is remembered, should the same publisher incarnation come back."""
        self._give_up(key, stream, stream.delivered.upto + 1, stream.highest)
        stream.final = True  # no confirmation can come any more
        ready = self._release(stream)
        stopped = self._stopped
        stopped.pop(key, None)
        unconfirmed = None if stream.confirmed else stream.start_after
        stopped[key] = (stream.incarnation, stream.delivered.upto, unconfirmed)
        if len(stopped) > self._config.topic_streams_max_count:
            del stopped[next(iter(stopped))]
        return ready

    def _stream_for(
        self,
        key: Key,
        incarnation: int,
        start_after: int,
        highest: int,
        now: float,
        *,
        confirmed: bool,
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
            self._drop(key)
            self._closed(key, stream)
        elif len(streams) >= self._config.topic_streams_max_count:
            evicted = next(iter(streams))
            old = streams[evicted]
            self._drop(evicted)
            self._closed(evicted, old)
        stopped = self._stopped.get(key)
        if stopped is not None and stopped[0] < incarnation:
            del self._stopped[key]  # a new life: nothing of the old one carries over
            stopped = None
        if stopped is not None:
            if stopped[0] > incarnation:
                return None  # an older life, whose stream was closed for good
            # The same incarnation again: go on where its last stream stopped, settled. (An
            # answer with an earlier start would deliver or report again what that one had;
            # unless that one's start was never confirmed: nothing below it was delivered.)
            del self._stopped[key]
            _, done, unconfirmed = stopped
            stream = streams[key] = TopicStream(incarnation, done, highest, True, self.held_bytes)
            stream.confirmed = unconfirmed is None
            if unconfirmed is not None:
                stream.start_after = unconfirmed
        else:
            replay = key[1] in self.replay_topics
            if replay:
                start_after = 0
            final = confirmed or replay or self.starts_settled(key[1])
            stream = TopicStream(incarnation, start_after, highest, final, self.held_bytes)
            streams[key] = stream
            stream.confirmed = final
        if not stream.final:
            self._provisional[key] = now + self.start_wait_s
        if stream.has_gap:
            self._mark_gappy(key)
        return stream

    def _closed(self, key: Key, stream: TopicStream) -> None:
        """Close a stream another one replaces; what it held goes to ``released``."""
        ready = self._close(key, stream)
        if ready:
            self.released.append((key[0], stream.incarnation, key[1], ready))

    def _mark_gappy(self, key: Key) -> None:
        if key not in self._gappy:
            self._gappy[key] = None
            self.new_gap = True

    def _after_change(self, key: Key, stream: TopicStream, ready: list[Publication]) -> None:
        window = self._config.topic_holdback_max_count
        if stream.highest - stream.delivered.upto > window:
            # Further behind than we may hold: the oldest part of the gap is given up.
            self._give_up(key, stream, stream.delivered.upto + 1, stream.highest - window)
            ready.extend(self._release(stream))
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
