"""Invariant checkers for delivery and membership, usable in any test.

Record what was sent and what each receiver got, then check:

    log = DeliveryLog(seed=harness.seed)
    log.sent("a", "b", msg_id)            # before sending
    log.delivered("b", "a", msg_id)       # in the receiving handler
    log.check(lost=True, duplicates=True, fifo=True)

Every failure raises :class:`InvariantViolation` naming what broke, with
examples and the seed that reproduces the run.
"""

from __future__ import annotations

import bisect
import dataclasses
import threading
from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Sequence
from typing import Any

from zcluster.errors import ZclusterError

#: examples quoted in a violation message
EXAMPLES_SHOWN_COUNT = 5


class InvariantViolation(ZclusterError, AssertionError):
    """A delivery or membership invariant does not hold."""


@dataclasses.dataclass(frozen=True, slots=True)
class _Sent:
    sender: str
    receiver: str
    message_id: Hashable
    index: int  # the sender's send order on this link
    depends_on: tuple[Hashable, ...]


class DeliveryLog:
    """What was sent, and what each receiver delivered, in order."""

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        #: keyed by (sender, receiver, id): ids need only be unique per sender
        self._sent: dict[tuple[str, str, Hashable], _Sent] = {}
        self._sends_per_link: Counter[tuple[str, str]] = Counter()
        self._delivered: dict[str, list[tuple[str, Hashable]]] = defaultdict(list)

    def sent(
        self,
        sender: str,
        receiver: str,
        message_id: Hashable,
        depends_on: Iterable[Hashable] = (),
    ) -> None:
        """Record a send; ``depends_on`` lists messages that causally precede it."""
        link = (sender, receiver)
        index = self._sends_per_link[link]
        self._sends_per_link[link] += 1
        key = (sender, receiver, message_id)
        if key in self._sent:
            raise ValueError(f"message id {message_id!r} sent twice from {sender} to {receiver}")
        self._sent[key] = _Sent(sender, receiver, message_id, index, tuple(depends_on))

    def delivered(self, receiver: str, sender: str, message_id: Hashable) -> None:
        self._delivered[receiver].append((sender, message_id))

    # ------------------------------------------------------------ checks

    def lost(self) -> list[tuple[str, str, Hashable]]:
        """(sender, receiver, id) of every message sent and never delivered."""
        got = {(s, r, mid) for r, items in self._delivered.items() for s, mid in items}
        return [(s.sender, s.receiver, s.message_id) for k, s in self._sent.items() if k not in got]

    def unexpected(self) -> list[tuple[str, str, Hashable]]:
        """(receiver, claimed sender, id) of deliveries of messages never sent that way."""
        return [
            (receiver, sender, mid)
            for receiver, items in self._delivered.items()
            for sender, mid in items
            if (sender, receiver, mid) not in self._sent
        ]

    def duplicates(self) -> list[tuple[str, str, Hashable, int]]:
        """(receiver, sender, id, times) of every message delivered more than once."""
        out = []
        for receiver, items in self._delivered.items():
            for (sender, mid), times in Counter(items).items():
                if times > 1:
                    out.append((receiver, sender, mid, times))
        return out

    def fifo_violations(self) -> list[tuple[str, str, Hashable, Hashable]]:
        """(sender, receiver, late, overtaker): ``late`` was sent first, delivered after."""
        out = []
        for receiver, items in self._delivered.items():
            highest: dict[str, _Sent] = {}
            for sender, mid in items:
                record = self._sent.get((sender, receiver, mid))
                if record is None:
                    continue
                previous = highest.get(sender)
                if previous is not None and record.index < previous.index:
                    out.append((sender, receiver, mid, previous.message_id))
                elif previous is None or record.index > previous.index:
                    highest[sender] = record
        return out

    def causal_violations(self) -> list[tuple[str, Hashable, Hashable]]:
        """(receiver, message, dependency): delivered before a message it depends on.

        Dependencies are message ids, counted as met when a message with that id was
        delivered to the same receiver (from any sender) earlier.
        """
        out: list[tuple[str, Hashable, Hashable]] = []
        for receiver, items in self._delivered.items():
            sent_here = {mid for (_, r, mid) in self._sent if r == receiver}
            seen: set[Hashable] = set()
            for sender, mid in items:
                record = self._sent.get((sender, receiver, mid))
                if record is not None:
                    missing = {d for d in record.depends_on if d in sent_here} - seen
                    out.extend((receiver, mid, d) for d in sorted(missing, key=repr))
                seen.add(mid)
        return out

    def check(
        self,
        *,
        lost: bool = True,
        duplicates: bool = True,
        fifo: bool = False,
        causal: bool = False,
    ) -> None:
        """Raise InvariantViolation if any selected invariant fails."""
        problems: list[tuple[str, Sequence[Any]]] = []
        problems.append(("deliveries of messages never sent", self.unexpected()))
        if lost:
            problems.append(("lost messages", self.lost()))
        if duplicates:
            problems.append(("duplicate deliveries", self.duplicates()))
        if fifo:
            problems.append(("per-sender FIFO violations", self.fifo_violations()))
        if causal:
            problems.append(("causal violations", self.causal_violations()))
        failed = [(name, found) for name, found in problems if found]
        if failed:
            raise InvariantViolation(_describe(failed, self.seed))


class CausalLog:
    """Causal order as it happened, and whether each receiver kept it.

    ``sent(sender, id, receivers)`` when a node sends (directly: one receiver; a
    publication: the topic's subscribers), ``delivered(receiver, id)`` when a handler or
    subscriber is given it. A send happens after everything its sender sent or was given
    before (a vector clock per node). ``check()`` raises InvariantViolation if a receiver
    was given a message before one it was also given that happened before it. Safe from
    any thread.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._lock = threading.Lock()
        #: what each node's next send happens after: origin -> its latest send counted
        self._clocks: dict[str, dict[str, int]] = defaultdict(dict)
        #: id -> (origin, its index among the origin's sends, clock, receivers)
        self._messages: dict[Hashable, tuple[str, int, dict[str, int], frozenset[str]]] = {}
        self._deliveries: dict[str, list[Hashable]] = defaultdict(list)

    def sent(self, sender: str, message_id: Hashable, receivers: Iterable[str]) -> None:
        with self._lock:
            if message_id in self._messages:
                raise ValueError(f"message id {message_id!r} sent twice")
            clock = self._clocks[sender]
            index = clock[sender] = clock.get(sender, 0) + 1
            self._messages[message_id] = (sender, index, dict(clock), frozenset(receivers))

    def delivered(self, receiver: str, message_id: Hashable) -> None:
        with self._lock:
            self._deliveries[receiver].append(message_id)
            message = self._messages.get(message_id)
            if message is None:
                return
            clock = self._clocks[receiver]
            for origin, index in message[2].items():
                if clock.get(origin, 0) < index:
                    clock[origin] = index

    def delivered_count(self) -> int:
        with self._lock:
            return sum(map(len, self._deliveries.values()))

    def violations(self) -> list[tuple[str, Hashable, Hashable]]:
        """(receiver, message, predecessor): ``predecessor`` happened before ``message``,
        both were given to ``receiver``, ``message`` first."""
        out: list[tuple[str, Hashable, Hashable]] = []
        with self._lock:
            for receiver, ids in self._deliveries.items():
                out.extend(self._violations_at(receiver, ids))
        return out

    def _violations_at(
        self, receiver: str, ids: list[Hashable]
    ) -> list[tuple[str, Hashable, Hashable]]:
        messages = self._messages
        position = {mid: p for p, mid in reversed(list(enumerate(ids)))}  # first given
        # per origin, the messages given here in the origin's order: their indexes, and
        # the latest position among each prefix (one comparison tells a violation)
        streams: dict[str, list[tuple[int, int, Hashable]]] = defaultdict(list)
        for mid, (origin, index, _, receivers) in messages.items():
            if receiver in receivers and mid in position:
                streams[origin].append((index, position[mid], mid))
        latest: dict[str, tuple[list[int], list[int]]] = {}
        for origin, stream in streams.items():
            stream.sort(key=lambda item: item[0])
            indexes, prefix_max, top = [], [], -1
            for index, at, _ in stream:
                top = max(top, at)
                indexes.append(index)
                prefix_max.append(top)
            latest[origin] = (indexes, prefix_max)
        out: list[tuple[str, Hashable, Hashable]] = []
        for mid, at in position.items():
            if mid not in messages:
                continue
            sender, own, clock, _ = messages[mid]
            for origin, bound in clock.items():
                if origin not in latest:
                    continue
                limit = own - 1 if origin == sender else bound
                indexes, prefix_max = latest[origin]
                count = bisect.bisect_right(indexes, limit)
                if count and prefix_max[count - 1] > at:
                    early = next(m for _, p, m in streams[origin][:count] if p > at)
                    out.append((receiver, mid, early))
        return out

    def check(self) -> None:
        found = self.violations()
        if found:
            raise InvariantViolation(_describe([("causal violations", found)], self.seed))


def check_membership_agreement(nodes: Sequence[Any], seed: int | None = None) -> None:
    """Raise InvariantViolation unless every node reports the same view digest."""
    digests: dict[str, list[str]] = defaultdict(list)
    for node in nodes:
        digests[node.view_digest()].append(node.node_id)
    if len(digests) > 1:
        groups = [f"{sorted(ids)} -> {digest}" for digest, ids in digests.items()]
        raise InvariantViolation(_describe([("membership disagreement", groups)], seed))


def _describe(failed: Sequence[tuple[str, Sequence[Any]]], seed: int | None) -> str:
    parts = []
    for name, found in failed:
        shown = ", ".join(repr(x) for x in found[:EXAMPLES_SHOWN_COUNT])
        more = (
            f" (+{len(found) - EXAMPLES_SHOWN_COUNT} more)"
            if len(found) > EXAMPLES_SHOWN_COUNT
            else ""
        )
        parts.append(f"{len(found)} {name}: {shown}{more}")
    reproduce = f"; reproduce with seed={seed}" if seed is not None else ""
    return "; ".join(parts) + reproduce
