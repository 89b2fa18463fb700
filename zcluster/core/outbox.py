"""The sending side of guaranteed direct messages: one outbox per receiver.

Each receiver gets its own stream, numbered 1, 2, 3, ... A message stays
in the outbox until the receiver acknowledges it (cumulatively, or
selectively above a gap), its TTL passes, or the receiver leaves the
cluster. Retransmissions back off exponentially, with jitter, up to a cap;
while the receiver is unreachable they wait and resume when it is back.
"""

from __future__ import annotations

import dataclasses
import heapq
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable

from zcluster.config import NodeConfig
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.messages import DataAck

_NO_TIMER = -1.0
#: a timer heap is rebuilt from live entries once stale items outnumber them this much
_COMPACT_FACTOR = 2
_COMPACT_SLACK_COUNT = 1024


@dataclasses.dataclass(slots=True)
class Outgoing:
    """One guaranteed message awaiting its acknowledgement."""

    number: int
    seq: int
    name: str
    payload: bytes
    guarantee: DeliveryGuarantee
    deadline: float
    attempts: int = 0
    #: the receiver holds it (held back, or its handler is running): no need to resend
    received: bool = False
    #: when it is next resent (_NO_TIMER: not scheduled); a timer for any other time is stale
    due: float = 0.0
    #: when it was first sent
    sent_at: float = 0.0
    #: the incarnation of ours that numbered it, if an earlier one (restored from a store)
    origin: int = 0


class PeerOutbox:
    """Unacknowledged messages to one receiver, in sequence order.

    ``epoch`` tells this numbering apart from any earlier one to the same
    receiver, so a receiver that still remembers an old stream starts afresh.
    """

    __slots__ = (
        "entries",
        "epoch",
        "highest_reported",
        "marked_upto",
        "next_seq",
        "parked",
        "peer_stream",
        "progress_at",
        "rttvar",
        "srtt",
    )

    def __init__(self, epoch: int) -> None:
        self.entries: OrderedDict[int, Outgoing] = OrderedDict()
        self.epoch = epoch
        self.next_seq = 1
        #: the receiver is unreachable: retransmissions wait until it is back
        self.parked = False
        #: the receiver's id for its state of this stream, from its acknowledgements
        self.peer_stream: int | None = None
        #: entries up to this were reported as arrived (a cumulative mark)
        self.marked_upto = 0
        #: the highest number the receiver reported in any way, and when that last grew
        self.highest_reported = 0
        self.progress_at = -math.inf
        #: smoothed time from sending to "arrived", and its variation (RFC 6298), if measured
        self.srtt: float | None = None
        self.rttvar = 0.0

    def timeout(self, floor: float, cap: float) -> float:
        """The retransmission timeout: a message unanswered this long is probably lost.

        It follows the measured round trip, queueing included, so that a busy
        receiver is not flooded with copies of what is still waiting in its queue.
        """
        if self.srtt is None:
            return floor
        return min(cap, max(floor, self.srtt + 4 * self.rttvar))

    def measured(self, sample: float) -> None:
        if self.srtt is None:
            self.srtt, self.rttvar = sample, sample / 2
        else:
            self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - sample)
            self.srtt = 0.875 * self.srtt + 0.125 * sample

    @property
    def low(self) -> int:
        """The lowest sequence number still unresolved; everything below is settled."""
        return next(iter(self.entries)) if self.entries else self.next_seq


#: (when, receiver, epoch of its outbox, seq)
Timer = tuple[float, str, int, int]


class DirectSender:
    """Every outbox of one node, with the retry and expiry timers."""

    def __init__(self, config: NodeConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._boxes: dict[str, PeerOutbox] = {}
        self._retries: list[Timer] = []
        self._expiries: list[Timer] = []
        self._total = 0
        self._epochs = 0

    def __len__(self) -> int:
        return self._total

    def count(self, target: str) -> int:
        box = self._boxes.get(target)
        return 0 if box is None else len(box.entries)

    def counts(self) -> list[tuple[str, int]]:
        """``(target, messages not yet settled)`` for every target with some."""
        return [(target, len(box.entries)) for target, box in self._boxes.items() if box.entries]

    def low(self, target: str) -> int:
        box = self._boxes.get(target)
        return 1 if box is None else box.low

    def epoch(self, target: str) -> int:
        box = self._boxes.get(target)
        return 0 if box is None else box.epoch

    def numbering(self, target: str) -> tuple[int, int]:
        """``(low, epoch)`` of the outbox to ``target``, as its DATA carry them."""
        box = self._boxes.get(target)
        return (1, 0) if box is None else (box.low, box.epoch)

    def add(
        self,
        target: str,
        number: int,
        name: str,
        payload: bytes,
        guarantee: DeliveryGuarantee,
        deadline: float,
        now: float,
        origin: int = 0,
    ) -> Outgoing:
        """Queue a message; the caller transmits it once now (``origin``: the earlier
        incarnation of ours that numbered it, if one did)."""
        box = self._boxes.get(target)
        if box is None:
            if len(self._boxes) >= self._config.members_max_count:
                self._forget_idle_boxes()
            self._epochs += 1
            box = self._boxes[target] = PeerOutbox(self._epochs)
        seq, epoch = box.next_seq, box.epoch
        box.next_seq = seq + 1
        entry = Outgoing(
            number, seq, name, payload, guarantee, deadline, sent_at=now, origin=origin
        )
        box.entries[seq] = entry
        self._total += 1
        self._schedule_retry(target, box, entry, now)
        heapq.heappush(self._expiries, (deadline, target, epoch, seq))
        self._compact_if_stale()
        return entry

    def timers_due(self, now: float) -> bool:
        """Whether a retry or an expiry is due (``due_retries``, ``expired``): a quiet
        node's ticks stop here."""
        retries, expiries = self._retries, self._expiries
        return bool((retries and retries[0][0] <= now) or (expiries and expiries[0][0] <= now))

    def due_retries(
        self, now: float, reachable: Callable[[str], bool]
    ) -> list[tuple[str, Outgoing]]:
        """Messages to retransmit now (their next retry is already scheduled)."""
        out: list[tuple[str, Outgoing]] = []
        heap = self._retries
        while heap and heap[0][0] <= now:
            when, target, epoch, seq = heapq.heappop(heap)
            box = self._boxes.get(target)
            entry = box.entries.get(seq) if box is not None and box.epoch == epoch else None
            if box is None or entry is None or entry.due != when:
                continue
            if not reachable(target):
                box.parked = True  # resume() reschedules everything at once
                continue
            timeout = box.timeout(self._config.retry_initial_s, self._config.retry_max_s)
            quiet = now - box.progress_at >= timeout  # nothing new reported for a timeout
            if entry.received and seq != box.low:
                # It arrived; only the oldest is resent, to ask for an acknowledgement
                # again in case the last one was lost. acknowledged() rearms the next.
                entry.due = _NO_TIMER
                continue
            if not quiet and (entry.received or seq > box.highest_reported):
                # The receiver still reports progress: the oldest needs no probe yet, and
                # what was sent after everything it reported is most likely queued behind
                # (the transport keeps order), not lost. Look again after a timeout.
                self._retry_at(target, box.epoch, entry, now + timeout)
                continue
            entry.attempts += 1
            self._schedule_retry(target, box, entry, now)
            out.append((target, entry))
        self._compact_if_stale()
        return out

    def resume(self, target: str, now: float, *, restarted: bool = False) -> None:
        """The receiver is reachable again: retransmit whatever waited for it, now."""
        box = self._boxes.get(target)
        if box is None or not (box.parked or restarted):
            return
        box.parked = False
        if restarted:
            box.marked_upto = 0
        for entry in box.entries.values():
            entry.received = False  # it may have restarted and lost what it held
            self._retry_at(target, box.epoch, entry, now)

    def expired(self, now: float) -> list[tuple[str, Outgoing]]:
        """Remove and return messages whose TTL has passed."""
        out: list[tuple[str, Outgoing]] = []
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, target, epoch, seq = heapq.heappop(heap)
            entry = self._remove(target, epoch, seq)
            if entry is not None:
                out.append((target, entry))
        for target in dict.fromkeys(target for target, _ in out):
            self._announce_low(target, now)
        return out

    def _announce_low(self, target: str, now: float) -> None:
        """Send the oldest remaining message again now: it carries the new ``low``, which
        lets the receiver skip what expired and release what it held back behind it."""
        box = self._boxes.get(target)
        if box is None or not box.entries:
            return
        first = next(iter(box.entries.values()))
        first.received = False
        self._retry_at(target, box.epoch, first, now)

    def acknowledged(self, target: str, ack: DataAck, now: float) -> list[Outgoing]:
        """Settle what an acknowledgement reports finished; returns those messages.

        Finished are ``<= upto`` and ``selective``; ``<= delivered_upto`` and
        ``pending`` reached the receiver but are not finished: they stay, not resent.
        """
        epoch, peer_stream, upto, selective = ack.epoch, ack.stream_id, ack.upto, ack.selective
        received_upto, pending = ack.delivered_upto, ack.pending
        box = self._boxes.get(target)
        if box is None or box.epoch != epoch:
            return []
        if box.peer_stream != peer_stream:
            if box.peer_stream is not None:
                self._receiver_forgot(target, box, now)
            box.peer_stream = peer_stream
        self._mark_received(box, received_upto, pending, now)
        top = max(upto, received_upto, max(selective, default=0), max(pending, default=0))
        if top > box.highest_reported:
            box.highest_reported, box.progress_at = top, now
        out: list[Outgoing] = []
        entries = box.entries
        while entries:
            seq = next(iter(entries))
            if seq > upto:
                break
            out.append(entries.popitem(last=False)[1])
        for seq in selective:
            entry = entries.pop(seq, None)
            if entry is not None:
                out.append(entry)
        self._total -= len(out)
        if entries:
            first = next(iter(entries.values()))
            if first.due == _NO_TIMER:
                self._schedule_retry(target, box, first, now)
        self._compact_if_stale()
        return out

    def fail_all(self, target: str) -> list[Outgoing]:
        """Remove and return every message to ``target`` (it left or was removed)."""
        box = self._boxes.pop(target, None)
        if box is None:
            return []
        self._total -= len(box.entries)
        return list(box.entries.values())

    def _receiver_forgot(self, target: str, box: PeerOutbox, now: float) -> None:
        """The receiver started its state of this stream afresh: what it held is gone."""
        box.marked_upto = 0
        for entry in box.entries.values():
            if entry.received:
                entry.received = False
                self._retry_at(target, box.epoch, entry, now)

    def _mark_received(
        self, box: PeerOutbox, received_upto: int, held: Iterable[int], now: float
    ) -> None:
        entries = box.entries
        newest: Outgoing | None = None  # the latest first transmission now known to have arrived
        received_upto = min(received_upto, box.next_seq - 1)
        for seq in range(max(box.marked_upto, box.low - 1) + 1, received_upto + 1):
            entry = entries.get(seq)
            if entry is not None and not entry.received:
                entry.received = True
                newest = entry if entry.attempts == 0 else newest
        box.marked_upto = max(box.marked_upto, received_upto)
        for seq in held:
            entry = entries.get(seq)
            if entry is not None and not entry.received:
                entry.received = True
                if entry.attempts == 0 and (newest is None or entry.seq > newest.seq):
                    newest = entry
        if newest is not None:  # Karn: a retransmitted message gives no clean sample
            box.measured(now - newest.sent_at)

    def _forget_idle_boxes(self) -> None:
        for target in [t for t, box in self._boxes.items() if not box.entries]:
            del self._boxes[target]

    # ------------------------------------------------------------ timers

    def _remove(self, target: str, epoch: int, seq: int) -> Outgoing | None:
        box = self._boxes.get(target)
        if box is None or box.epoch != epoch:
            return None
        entry = box.entries.pop(seq, None)
        if entry is not None:
            self._total -= 1
        return entry

    def _schedule_retry(self, target: str, box: PeerOutbox, entry: Outgoing, now: float) -> None:
        """Schedule the next retry of ``entry`` by its attempts so far (the caller checks
        the heaps' size: ``_compact_if_stale``)."""
        config = self._config
        base = box.timeout(config.retry_initial_s, config.retry_max_s)
        cap = min(config.retry_max_s, base * 2 ** min(entry.attempts, 32))
        # jitter: retries never move in lockstep
        entry.due = when = now + cap * (0.5 + 0.5 * self._rng.random())
        heapq.heappush(self._retries, (when, target, box.epoch, entry.seq))

    def _retry_at(self, target: str, epoch: int, entry: Outgoing, when: float) -> None:
        entry.due = when
        self._push(self._retries, (when, target, epoch, entry.seq))

    def _push(self, heap: list[Timer], timer: Timer) -> None:
        heapq.heappush(heap, timer)
        self._compact_if_stale()

    def _compact_if_stale(self) -> None:
        """Acknowledged messages leave their timers behind: once they outnumber the live
        ones, drop them in one pass."""
        bound = _COMPACT_FACTOR * self._total + _COMPACT_SLACK_COUNT
        if len(self._retries) > bound or len(self._expiries) > bound:
            for heap in (self._retries, self._expiries):
                heap[:] = [t for t in heap if self.holds(t[1], t[2], t[3])]
                heapq.heapify(heap)

    def holds(self, target: str, epoch: int, seq: int) -> bool:
        """Whether message ``seq`` of numbering ``epoch`` to ``target`` is still unsettled."""
        box = self._boxes.get(target)
        return box is not None and box.epoch == epoch and seq in box.entries
