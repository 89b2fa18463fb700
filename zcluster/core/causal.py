"""CAUSAL delivery: a message is handed over only after every CAUSAL message that
happened before it and is addressed to this node (docs/delivery.md, "CAUSAL").

Messages travel in streams: a direct stream per (sender, receiver), numbered by the
sender's outbox, and a topic stream per (publisher, topic). A CAUSAL message carries
its *dependencies*: for each stream it knows of, the latest message of that stream
that happened before it (sent by its origin, or delivered to it with what that message
depended on) -- a vector clock over streams, sparse, as in Raynal, Schiper and Toueg's
point-to-point protocol: a receiver cannot wait for messages that were never meant
for it, so each entry says which stream it counts in. A receiver checks only the
entries of streams it receives (its own direct streams, the topics it reads): each must
be delivered here, or settled without delivery (expired, reported lost, its origin
restarted or gone), before the message is. It keeps every entry, so that what it sends
next depends on them too (causality carries across nodes).

The reliable layers below deliver each message once per stream (repairing loss), and
``delivered`` there includes what waits here: a dependency on a message held here is
not met until that message leaves.

Clocks stay compact: an entry is dropped ``causal_dependency_retention_s`` after this
node learned of it (by then its message has been delivered, expired or reported lost
everywhere), when its origin or its direct receiver leaves the cluster, and the oldest
beyond ``causal_dependencies_max_count``. A message waits at most ``causal_hold_max_s``
and the hold-back is bounded; past either, it is delivered without what it waits for,
counted and reported (``fx.CausalGap``), never held forever.
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable

from zcluster.core import effects as fx
from zcluster.core import stamps
from zcluster.core.component import Component, NodeContext
from zcluster.core.inbound import InboundStream
from zcluster.core.topics import TopicStream
from zcluster.errors import WireError
from zcluster.protocol.members import Member
from zcluster.protocol.messages import DIRECT_STREAM, TOPIC_STREAM, Dependency

#: a stream: (origin, kind, channel)
StreamKey = tuple[str, int, str]
#: a message's place in its stream: (origin incarnation, epoch, seq)
Position = tuple[int, int, int]


class CausalPast:
    """What this node's next CAUSAL message depends on: per stream, the latest message
    known to have happened before it, and when this node learned of it (oldest first)."""

    __slots__ = ("_entries", "_max_count", "dropped")

    def __init__(self, max_count: int) -> None:
        self._entries: OrderedDict[StreamKey, tuple[Position, float]] = OrderedDict()
        self._max_count = max_count
        #: entries dropped to stay within ``max_count``
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._entries)

    def learn(self, dependency: Dependency, now: float) -> None:
        origin, kind, channel, incarnation, epoch, seq = dependency
        key, position = (origin, kind, channel), (incarnation, epoch, seq)
        entries = self._entries
        known = entries.get(key)
        if known is not None:
            if known[0] >= position:
                return
            del entries[key]  # learned now: the newest
        entries[key] = (position, now)
        if len(entries) > self._max_count:
            entries.popitem(last=False)
            self.dropped += 1

    def dependencies(self) -> list[Dependency]:
        return [(*key, *position) for key, (position, _) in self._entries.items()]

    def expire(self, learned_before: float) -> int:
        """Drop the entries learned before ``learned_before``; returns how many."""
        entries, dropped = self._entries, 0
        while entries:
            key, (_, learned) = next(iter(entries.items()))
            if learned >= learned_before:
                break
            del entries[key]
            dropped += 1
        return dropped

    def forget(self, node_id: str, before_incarnation: int | None = None) -> None:
        """Drop the entries of ``node_id``'s streams (of its lives before
        ``before_incarnation``, if given), and of direct streams to it (if not)."""
        for key in [k for k in self._entries if self._concerns(k, node_id, before_incarnation)]:
            del self._entries[key]

    def _concerns(self, key: StreamKey, node_id: str, before: int | None) -> bool:
        origin, kind, channel = key
        if before is not None:
            return origin == node_id and self._entries[key][0][0] < before
        return origin == node_id or (kind == DIRECT_STREAM and channel == node_id)


@dataclasses.dataclass(slots=True)
class _Held:
    """A message that waits for some of its dependencies."""

    ident: Dependency
    dependencies: tuple[Dependency, ...]
    #: those of its dependencies this node receives and has not settled yet
    waiting: list[Dependency]
    effect: fx.Deliver | fx.DeliverPublications
    size: int
    since: float


#: a direct message ready for its handler: (sender, name, body, receipt)
DeliverDirect = Callable[[str, str, bytes, tuple[int, int, int]], None]
#: a direct message that will not reach its handler: (sender, receipt, why)
RefuseDirect = Callable[[str, tuple[int, int, int], str], None]


class CausalDelivery(Component):
    """Stamps outgoing CAUSAL messages with their dependencies, and holds incoming ones
    back until theirs are met."""

    def __init__(
        self,
        ctx: NodeContext,
        direct_stream: Callable[[str], InboundStream | None],
        topic_stream: Callable[[str, str], TopicStream | None],
        reads: Callable[[str], bool],
        deliver_direct: DeliverDirect,
        refuse_direct: RefuseDirect,
    ) -> None:
        self._ctx = ctx
        self._direct_stream = direct_stream
        self._topic_stream = topic_stream
        self._reads = reads
        self._deliver_direct = deliver_direct
        self._refuse_direct = refuse_direct
        self._max_count = ctx.config.causal_dependencies_max_count
        self.past = CausalPast(self._max_count)
        #: held messages by their own id, in arrival order (the order reaches effects)
        self._held: dict[Dependency, _Held] = {}
        self._held_bytes = 0
        #: held messages by the first dependency each waits for (ordered: the order reaches
        #: effects): a release looks only at those waiting for it
        self._waiters: dict[Dependency, dict[Dependency, None]] = {}
        #: a member changed since held messages were last looked at (what else may meet a
        #: dependency -- an expiry, a loss report -- waits for the next tick)
        self._look_again = False

    def __len__(self) -> int:
        return len(self._held)

    # ------------------------------------------------------------ sending

    def stamp(self, body: bytes) -> bytes:
        """The payload of a CAUSAL message this node sends now: its dependencies, then
        ``body``."""
        return stamps.stamp(self.past.dependencies(), body)

    def sent_direct(self, target: str, epoch: int, seq: int, now: float) -> None:
        """This node sent message ``seq`` of its direct stream to ``target`` (in its
        outbox's numbering ``epoch``): what it sends next depends on it."""
        ctx = self._ctx
        self.past.learn((ctx.node_id, DIRECT_STREAM, target, ctx.incarnation, epoch, seq), now)

    def published(self, topic: str, seq: int, now: float) -> None:
        """This node published message ``seq`` of ``topic``."""
        ctx = self._ctx
        self.past.learn((ctx.node_id, TOPIC_STREAM, topic, ctx.incarnation, 0, seq), now)

    # ------------------------------------------------------------ receiving

    def direct_arrived(
        self, sender: str, name: str, payload: bytes, receipt: tuple[int, int, int], now: float
    ) -> None:
        """A CAUSAL direct message the reliable layer delivers (once per stream),
        ``receipt`` naming it there: handed to its handler once its dependencies are met."""
        ctx = self._ctx
        try:
            dependencies, body = stamps.read_stamp(
                payload, ctx.config.causal_dependencies_max_count
            )
        except WireError as exc:
            ctx.counters["causal_malformed"] += 1
            self._refuse_direct(sender, receipt, f"malformed CAUSAL payload: {exc}")
            return
        incarnation, epoch, seq = receipt
        ident = (sender, DIRECT_STREAM, ctx.node_id, incarnation, epoch, seq)
        effect = fx.Deliver(sender, name, body, receipt=receipt)
        self._arrived(ident, dependencies, effect, len(payload), now)

    def publication_arrived(
        self, publisher: str, incarnation: int, topic: str, seq: int, payload: bytes, now: float
    ) -> None:
        """A CAUSAL publication the subscription layer delivers (once per stream)."""
        ctx = self._ctx
        try:
            dependencies, body = stamps.read_stamp(
                payload, ctx.config.causal_dependencies_max_count
            )
        except WireError:
            ctx.counters["causal_malformed"] += 1
            return
        ident = (publisher, TOPIC_STREAM, topic, incarnation, 0, seq)
        effect = fx.DeliverPublications(publisher, topic, [body])
        self._arrived(ident, dependencies, effect, len(payload), now)

    def _arrived(
        self,
        ident: Dependency,
        dependencies: tuple[Dependency, ...],
        effect: fx.Deliver | fx.DeliverPublications,
        size: int,
        now: float,
    ) -> None:
        counters = self._ctx.counters
        counters["causal_received"] += 1
        if ident in self._held:  # a copy under a reused id: the first one stays
            counters["causal_duplicates"] += 1
            return
        waiting = [d for d in dependencies if not self._met(d)]
        held = _Held(ident, dependencies, waiting, effect, size, now)
        if not waiting:  # (nothing held can precede it: a held message is not met)
            self._release(held, now)
            return
        counters["causal_held"] += 1
        self._held[ident] = held
        self._held_bytes += size
        self._waiters.setdefault(waiting[0], {})[ident] = None
        config = self._ctx.config
        while (
            len(self._held) > config.causal_holdback_max_count
            or self._held_bytes > config.causal_holdback_max_bytes
        ):  # the one waiting longest goes without what it waits for
            counters["causal_released_full"] += 1
            self._release(self._take_oldest(), now)

    def _met(self, dependency: Dependency) -> bool:
        """Whether ``dependency`` is delivered here or will never be (or is not ours)."""
        origin, kind, channel, incarnation, epoch, seq = dependency
        ctx = self._ctx
        if origin == ctx.node_id:
            return True
        if kind == DIRECT_STREAM:
            if channel != ctx.node_id:
                return True
            if dependency in self._held:
                return False
            stream = self._direct_stream(origin)
            if stream is not None:
                numbering = (stream.incarnation, stream.epoch)
                if numbering > (incarnation, epoch):
                    return True
                if numbering == (incarnation, epoch):
                    return seq in stream.delivered
        else:
            if not self._reads(channel):
                return True
            if dependency in self._held:
                return False
            topic = self._topic_stream(origin, channel)
            if topic is not None:
                if topic.incarnation > incarnation:
                    return True
                if topic.incarnation == incarnation:
                    return seq in topic.delivered
        return self._life_over(origin, incarnation)

    def _life_over(self, origin: str, incarnation: int) -> bool:
        """The origin's incarnation is over: it sends nothing more, what it did not get
        here is lost (counted when it was awaited)."""
        member = self._ctx.table.get(origin)
        return member is not None and (member.incarnation > incarnation or member.status.is_gone)

    def _release(self, first: _Held, now: float) -> None:
        """Hand ``first`` over, and learn what it depended on; then each held message
        that waited only for it (or for one released so), in the order they became ready."""
        ready = [first]
        past, counters = self.past, self._ctx.counters
        while ready:
            held = ready.pop(0)
            for dependency in held.dependencies:
                past.learn(dependency, now)
            past.learn(held.ident, now)
            counters["causal_delivered"] += 1
            effect = held.effect
            if type(effect) is fx.Deliver:
                assert effect.receipt is not None
                self._deliver_direct(effect.sender, effect.name, effect.payload, effect.receipt)
            else:
                self._ctx.emit(effect)
            for ident in self._waiters.pop(held.ident, ()):
                waiter = self._held.get(ident)
                if waiter is not None and self._still_waits(waiter) is None:
                    ready.append(self._unhold(waiter))

    def _still_waits(self, held: _Held) -> Dependency | None:
        """Drop the met dependencies at the head of what ``held`` waits for; returns the
        first one not met (it is indexed under it), or None: it is ready."""
        waiting = held.waiting
        old = waiting[0] if waiting else None
        while waiting and self._met(waiting[0]):
            waiting.pop(0)
        new = waiting[0] if waiting else None
        if new != old:
            if old is not None:
                self._unindex(old, held.ident)
            if new is not None:
                self._waiters.setdefault(new, {})[held.ident] = None
        return new

    def _unindex(self, dependency: Dependency, ident: Dependency) -> None:
        waiters = self._waiters.get(dependency)
        if waiters is not None:
            waiters.pop(ident, None)
            if not waiters:
                del self._waiters[dependency]

    def _unhold(self, held: _Held) -> _Held:
        del self._held[held.ident]
        self._held_bytes -= held.size
        if held.waiting:  # released before its time: off the index
            self._unindex(held.waiting[0], held.ident)
        return held

    def _take_oldest(self) -> _Held:
        held = self._unhold(self._held[next(iter(self._held))])
        self._report_gap(held)
        return held

    def _report_gap(self, held: _Held) -> None:
        self._ctx.emit(fx.CausalGap(held.ident, tuple(held.waiting)))

    def _release_ready(self, now: float) -> None:
        """Look at every held message, in arrival order: release those whose dependencies
        are now met (a release wakes what waited for it)."""
        self._look_again = False
        for ident in list(self._held):
            item = self._held.get(ident)
            if item is None:  # released meanwhile, woken by an earlier release
                continue
            if self._still_waits(item) is None:
                self._release(self._unhold(item), now)

    # ------------------------------------------------------------ time and membership

    def tick(self, now: float) -> None:
        config = self._ctx.config
        counters = self._ctx.counters
        expired = self.past.expire(now - config.causal_dependency_retention_s)
        if expired:
            counters["causal_dependencies_expired"] += expired
        if self.past.dropped:
            counters["causal_dependencies_dropped"] += self.past.dropped
            self.past.dropped = 0
        if not self._held:
            return
        self._release_ready(now)
        deadline, overdue = now - config.causal_hold_max_s, 0
        while self._held and next(iter(self._held.values())).since <= deadline:
            overdue += 1
            self._release(self._take_oldest(), now)
        if overdue:
            counters["causal_released_unmet"] += overdue
            self._release_ready(now)

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        if member.status.is_gone:
            self.past.forget(member.node_id)
        elif previous is not None and previous.incarnation < member.incarnation:
            self.past.forget(member.node_id, before_incarnation=member.incarnation)
        self._look_again = bool(self._held)

    @property
    def flush_due(self) -> bool:
        return self._look_again

    def end_turn(self, now: float) -> None:
        if self._look_again:
            self._release_ready(now)
