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
import random
from collections import OrderedDict
from collections.abc import Callable, Iterable

from zcluster.config import NodeConfig
from zcluster.core.guarantees import DeliveryGuarantee

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


class PeerOutbox:
    """Unacknowledged messages to one receiver, in sequence order."""

    __slots__ = ("entries", "next_seq", "parked")

    def __init__(self) -> None:
        self.entries: OrderedDict[int, Outgoing] = OrderedDict()
        self.next_seq = 1
        #: the receiver is unreachable: retransmissions wait until it is back
        self.parked = False

    @property
    def low(self) -> int:
        """The lowest sequence number still unresolved; everything below is settled."""
        return next(iter(self.entries)) if self.entries else self.next_seq


Timer = tuple[float, str, int]


class DirectSender:
    """Every outbox of one node, with the retry and expiry timers."""

    def __init__(self, config: NodeConfig, rng: random.Random) -> None:
        self._config = config
        self._rng = rng
        self._boxes: dict[str, PeerOutbox] = {}
        self._retries: list[Timer] = []
        self._expiries: list[Timer] = []
        self._total = 0

    def __len__(self) -> int:
        return self._total

    def count(self, target: str) -> int:
        box = self._boxes.get(target)
        return 0 if box is None else len(box.entries)

    def low(self, target: str) -> int:
        box = self._boxes.get(target)
        return 1 if box is None else box.low

    def add(
        self,
        target: str,
        number: int,
        name: str,
        payload: bytes,
        guarantee: DeliveryGuarantee,
        deadline: float,
        now: float,
    ) -> Outgoing:
        """Queue a message; the caller transmits it once now."""
        box = self._boxes.get(target)
        if box is None:
            if len(self._boxes) >= self._config.members_max_count:
                self._forget_idle_boxes()
            box = self._boxes[target] = PeerOutbox()
        entry = Outgoing(number, box.next_seq, name, payload, guarantee, deadline)
        box.next_seq += 1
        box.entries[entry.seq] = entry
        self._total += 1
        self._schedule_retry(target, entry, now)
        self._push(self._expiries, (deadline, target, entry.seq))
        return entry

    def due_retries(
        self, now: float, reachable: Callable[[str], bool]
    ) -> list[tuple[str, Outgoing]]:
        """Messages to retransmit now (their next retry is already scheduled)."""
        out: list[tuple[str, Outgoing]] = []
        heap = self._retries
        while heap and heap[0][0] <= now:
            _, target, seq = heapq.heappop(heap)
            box = self._boxes.get(target)
            entry = box.entries.get(seq) if box is not None else None
            if box is None or entry is None or entry.received:
                continue
            if not reachable(target):
                box.parked = True  # resume() reschedules everything at once
                continue
            entry.attempts += 1
            self._schedule_retry(target, entry, now)
            out.append((target, entry))
        return out

    def resume(self, target: str, now: float, *, restarted: bool = False) -> None:
        """The receiver is reachable again: retransmit whatever waited for it, now."""
        box = self._boxes.get(target)
        if box is None or not (box.parked or restarted):
            return
        box.parked = False
        for seq, entry in box.entries.items():
            entry.received = False  # it may have restarted and lost what it held
            self._push(self._retries, (now, target, seq))

    def expired(self, now: float) -> list[tuple[str, Outgoing]]:
        """Remove and return messages whose TTL has passed."""
        out: list[tuple[str, Outgoing]] = []
        heap = self._expiries
        while heap and heap[0][0] <= now:
            _, target, seq = heapq.heappop(heap)
            entry = self._remove(target, seq)
            if entry is not None:
                out.append((target, entry))
        return out

    def acknowledged(
        self,
        target: str,
        upto: int,
        selective: Iterable[int],
        received_upto: int = 0,
        held: Iterable[int] = (),
    ) -> list[Outgoing]:
        """Remove and return messages the receiver has finished: ``<= upto`` and ``selective``.

        Messages ``<= received_upto`` and ``held`` reached it but are not finished:
        they stay, and are not resent.
        """
        box = self._boxes.get(target)
        if box is None:
            return []
        self._mark_received(box, received_upto, held)
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
        return out

    def fail_all(self, target: str) -> list[Outgoing]:
        """Remove and return every message to ``target`` (it left or was removed)."""
        # The box stays: its numbering must go on, or a receiver that still knows
        # this stream would take new messages for old ones.
        box = self._boxes.get(target)
        if box is None:
            return []
        out = list(box.entries.values())
        box.entries.clear()
        self._total -= len(out)
        return out

    def _mark_received(self, box: PeerOutbox, received_upto: int, held: Iterable[int]) -> None:
        for seq, entry in box.entries.items():
            if seq > received_upto:
                break
            entry.received = True
        for seq in held:
            waiting = box.entries.get(seq)
            if waiting is not None:
                waiting.received = True

    def _forget_idle_boxes(self) -> None:
        for target in [t for t, box in self._boxes.items() if not box.entries]:
            del self._boxes[target]

    # ------------------------------------------------------------ timers

    def _remove(self, target: str, seq: int) -> Outgoing | None:
        box = self._boxes.get(target)
        if box is None:
            return None
        entry = box.entries.pop(seq, None)
        if entry is not None:
            self._total -= 1
        return entry

    def _schedule_retry(self, target: str, entry: Outgoing, now: float) -> None:
        config = self._config
        cap = min(config.retry_max_s, config.retry_initial_s * 2 ** min(entry.attempts, 32))
        delay = cap * (0.5 + 0.5 * self._rng.random())  # jitter: retries never move in lockstep
        self._push(self._retries, (now + delay, target, entry.seq))

    def _push(self, heap: list[Timer], timer: Timer) -> None:
        heapq.heappush(heap, timer)
        if len(heap) > _COMPACT_FACTOR * self._total + _COMPACT_SLACK_COUNT:
            # Acknowledged messages leave their timers behind; drop them in one pass.
            heap[:] = [t for t in heap if self._holds(t[1], t[2])]
            heapq.heapify(heap)

    def _holds(self, target: str, seq: int) -> bool:
        box = self._boxes.get(target)
        return box is not None and seq in box.entries
