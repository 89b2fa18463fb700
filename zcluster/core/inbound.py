"""The receiving side of guaranteed direct messages: one stream per sender.

A stream remembers which sequence numbers were handed to a handler
(``delivered``) and which handlers have returned (``finished``); the
latter is what acknowledgements report, so a sender learns that a message
was handled, or why it failed, not merely that it arrived. ``ORDERED``
messages wait in a hold-back buffer until every earlier number has been
delivered. Each message carries the sender's ``low``: everything below it
is settled at the sender (acknowledged, or expired), so the stream skips
it instead of waiting forever.

``EXACTLY_ONCE`` ids also go into a window (``dedup.py``) with their handlers'
outcomes, which outlives the streams: a copy that arrives after its stream was
forgotten is answered from there, as the first copy was.
"""

from __future__ import annotations

import dataclasses
import heapq
from collections import Counter, OrderedDict
from collections.abc import Iterable

from zcluster.config import NodeConfig
from zcluster.core.dedup import DedupWindow
from zcluster.core.persistence import DeliveryNoted
from zcluster.core.sequences import HeldBytes, HoldBack, SeqSet
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.messages import MAX_REASON_CHARS, Data, DataAck

#: why an exactly-once message handed to its handler just before a crash is not run
#: again: "the handler ran" means it was started (docs/delivery.md, "Durability")
INTERRUPTED = "the receiver stopped while its handler ran; not run again"


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """A message ready for its handler."""

    seq: int
    name: str
    payload: bytes
    #: the numbering it belongs to (the stream's epoch when it arrived)
    epoch: int
    #: as sent (CAUSAL: its payload starts with its dependencies, causal.py)
    guarantee: DeliveryGuarantee
    #: its id among its sender's guaranteed sends, with the incarnation that gave it
    number: int
    origin: int


class InboundStream:
    """What one receiver knows of one sender's stream: one numbering, named by the
    sender's ``(incarnation, epoch)``; ``stream_id`` names this receiver's state of it."""

    __slots__ = ("delivered", "epoch", "failures", "finished", "held", "incarnation", "stream_id")

    def __init__(
        self, incarnation: int, epoch: int, low: int, stream_id: int, held_bytes: HeldBytes
    ) -> None:
        self.incarnation = incarnation
        self.epoch = epoch
        self.stream_id = stream_id
        self.delivered = SeqSet(low - 1)
        self.finished = SeqSet(low - 1)
        self.held: HoldBack[Arrival] = HoldBack(held_bytes)
        #: handler failures the sender may not have heard of yet, by sequence number
        self.failures: dict[int, str] = {}

    def skip_to(self, low: int) -> int:
        """The sender settled everything below ``low``; returns how many held messages went."""
        if self.failures and min(self.failures) < low:
            self.failures = {s: r for s, r in self.failures.items() if s >= low}
        if low - 1 <= self.delivered.upto and low - 1 <= self.finished.upto:
            return 0
        self.delivered.advance_to(low - 1)
        self.finished.advance_to(low - 1)
        return len(self.held.drop_through(low - 1))

    def finish(self, seq: int, reason: str | None) -> None:
        """The handler of ``seq`` returned (``reason`` None) or failed."""
        if reason is not None and seq not in self.finished:
            self.failures[seq] = reason
        self.finished.add(seq)

    def ack(self, selective_max_count: int) -> DataAck:
        """The DATA_ACK: the sender settles what finished, and stops resending what
        arrived and waits (delivered through ``delivered.upto``, or pending above it)."""
        finished, delivered = self.finished, self.delivered
        selective = heapq.nsmallest(selective_max_count, finished.above)
        waiting = [s for s in delivered.above if s not in finished]
        waiting.extend(self.held.seqs())
        pending = heapq.nsmallest(selective_max_count, waiting)
        return DataAck(
            self.incarnation,
            self.epoch,
            self.stream_id,
            finished.upto,
            tuple(selective),
            tuple(self.failures.items()),
            delivered.upto,
            tuple(pending),
        )


class DirectReceiver:
    """Every inbound stream of one node, plus the exactly-once window."""

    def __init__(self, config: NodeConfig, counters: Counter[str], first_stream_id: int) -> None:
        self._config = config
        self._counters = counters
        self._streams: OrderedDict[str, InboundStream] = OrderedDict()
        self._dedup = DedupWindow(config.dedup_window_max_count, config.dedup_retention_s)
        #: what every stream holds back behind gaps, in payload bytes
        self.held_bytes = HeldBytes(config.holdback_max_bytes)
        #: copies of those that came again in another stream (a sender restarted with a
        #: store sends them under their first id), by id: their receipts, told at the end
        self._copies: dict[tuple[str, int, int], dict[tuple[int, int, int], None]] = {}
        #: EXACTLY_ONCE messages handed to a handler that has not reported back:
        #: (sender, incarnation, epoch, seq) as in the receipt -> the message's number
        self._running: dict[tuple[str, int, int, int], tuple[int, int]] = {}
        #: senders owed an acknowledgement at the end of this turn, in the order first owed
        #: (a dict, not a set: the order reaches effects and must not depend on hashing)
        self.ack_due: dict[str, None] = {}
        #: ids of our stream states; started from our incarnation, so never reused by a restart
        self._stream_ids = first_stream_id

    def __len__(self) -> int:
        return len(self._streams)

    def stream(self, sender: str) -> InboundStream | None:
        return self._streams.get(sender)

    def receive(
        self,
        sender: str,
        incarnation: int,
        message: Data,
        payload: bytes,
        now: float,
        queued_room: bool = True,
    ) -> list[Arrival]:
        """Take one message; returns what is now ready for handlers, in order."""
        name, number, seq, low = message.name, message.number, message.seq, message.low
        guarantee, epoch = message.guarantee, message.epoch
        stream = self._stream_for(sender, incarnation, epoch, low)
        if stream is None:
            self._count("reliable_stale_stream")
            return []
        self.ack_due[sender] = None  # arrived (or again: our acknowledgement was lost)
        dropped = stream.skip_to(low)
        if dropped:
            self._count("reliable_expired_held", dropped)
        if seq in stream.delivered or seq in stream.held:
            self._count("reliable_duplicates")
            return self._release(stream, [])
        if seq > stream.finished.upto + self._config.outbox_max_count:
            self._count("reliable_beyond_window")
            return []
        origin = message.origin or incarnation
        if (
            guarantee is DeliveryGuarantee.EXACTLY_ONCE
            and not queued_room
            and self._dedup.peek((sender, origin, number), now) is None
        ):  # (a known one is answered whatever the room: nothing is queued for it)
            self._count("reliable_in_hand_full")  # not taken: the sender sends it again
            return []
        later = guarantee is DeliveryGuarantee.ORDERED and seq != stream.delivered.upto + 1
        if later and not self.held_bytes.room_for(len(payload)):
            self._count("reliable_holdback_full")  # not taken: the sender sends it again
            return []
        arrival = Arrival(seq, name, payload, epoch, guarantee, number, origin)
        if guarantee is DeliveryGuarantee.EXACTLY_ONCE:
            known = self._dedup.recall((sender, origin, number), now)
            if known is not None:
                # Handed to a handler in an earlier life of this stream: not again.
                self._count("reliable_duplicates")
                stream.delivered.add(seq)
                if known.finished:
                    stream.finish(seq, known.error)
                else:  # its handler still runs (a copy under its first id): told when done
                    self._copies.setdefault((sender, origin, number), {})[
                        (incarnation, epoch, seq)
                    ] = None
                return self._release(stream, [])
            self._running[(sender, incarnation, epoch, seq)] = (origin, number)
        if later:
            stream.held.hold(seq, arrival, len(payload))  # room checked above
            return self._release(stream, [])
        stream.delivered.add(seq)
        return self._release(stream, [arrival])

    def finished(
        self, sender: str, receipt: tuple[int, int, int], error: str | None
    ) -> tuple[int, int] | None:
        """A handler returned (``error`` is None) or failed; ``receipt`` as delivered.
        Returns the message's id ``(origin incarnation, number)`` if it is in the
        exactly-once window.

        A receipt names the message by ``(incarnation, epoch, seq)``, which every copy of
        it shares, so the outcome also reaches a stream recreated since it was delivered.
        """
        incarnation, epoch, seq = receipt
        reason = None if error is None else error[:MAX_REASON_CHARS]  # peers refuse longer
        message_id = self._running.pop((sender, incarnation, epoch, seq), None)
        if message_id is not None:
            self._dedup.settle((sender, *message_id), reason)
            for copy in self._copies.pop((sender, *message_id), ()):
                self._finish(sender, copy, reason)
        self._finish(sender, receipt, reason)
        return message_id

    def _finish(self, sender: str, receipt: tuple[int, int, int], reason: str | None) -> None:
        incarnation, epoch, seq = receipt
        stream = self._streams.get(sender)
        if stream is not None and (stream.incarnation, stream.epoch) == (incarnation, epoch):
            stream.finish(seq, reason)
            self.ack_due[sender] = None

    def restore(self, deliveries: Iterable[DeliveryNoted], now: float) -> int:
        """Take back the exactly-once window of an earlier life (oldest first). A message
        whose handler had started and not returned is not run again: it is settled as
        failed (``INTERRUPTED``). Returns how many were."""
        interrupted = 0
        outcomes: dict[tuple[str, int, int], DeliveryNoted] = {}
        for noted in deliveries:
            outcomes[(noted.sender, noted.incarnation, noted.number)] = noted
        for key, noted in outcomes.items():
            self._dedup.recall(key, now)
            if not noted.finished:
                interrupted += 1
            self._dedup.settle(key, noted.error if noted.finished else INTERRUPTED)
        return interrupted

    def forget(self, sender: str) -> None:
        stream = self._streams.pop(sender, None)
        if stream is not None:
            stream.held.clear()
        self.ack_due.pop(sender, None)

    def retire(self, sender: str) -> None:
        """The sender left or was removed: drop what its stream holds back and owes, and
        make it the first to be evicted, but keep its numbers, so that copies arriving
        should its incarnation come back (a removal it refutes) are known duplicates.

        Held-back messages would be lost without the sender knowing, so the state gets a
        new ``stream_id``: a sender that comes back resends everything not settled.
        """
        stream = self._streams.get(sender)
        self.ack_due.pop(sender, None)
        if stream is None:
            return
        stream.held.clear()
        self._stream_ids += 1
        stream.stream_id = self._stream_ids
        self._streams.move_to_end(sender, last=False)

    def _release(self, stream: InboundStream, ready: list[Arrival]) -> list[Arrival]:
        if len(stream.held):
            ready.extend(arrival for _, arrival in stream.held.release(stream.delivered))
        return ready

    def _stream_for(
        self, sender: str, incarnation: int, epoch: int, low: int
    ) -> InboundStream | None:
        streams = self._streams
        stream = streams.get(sender)
        if stream is not None and (stream.incarnation, stream.epoch) >= (incarnation, epoch):
            if (stream.incarnation, stream.epoch) > (incarnation, epoch):
                return None  # an older numbering than the one we follow
            streams.move_to_end(sender)
            return stream
        if stream is not None:
            stream.held.clear()  # a later numbering replaces it
        elif len(streams) >= self._config.inbound_streams_max_count:
            evicted = self._evictable()
            streams.pop(evicted).held.clear()
            self.ack_due.pop(evicted, None)
            self._count("reliable_streams_evicted")
        self._stream_ids += 1
        stream = streams[sender] = InboundStream(
            incarnation, epoch, low, self._stream_ids, self.held_bytes
        )
        return stream

    def _evictable(self) -> str:
        """The least recently heard sender, preferring one that holds nothing back: what
        a forgotten stream held must be sent again."""
        for sender, stream in self._streams.items():  # least recently heard first
            if not len(stream.held):
                return sender
        return next(iter(self._streams))

    def _count(self, name: str, n: int = 1) -> None:
        self._counters[name] += n
