"""The publishing side of fan-out: numbering, subscribers' starting points, repair.

Guaranteed publications are numbered per topic and kept in a bounded
retransmit buffer (``topics.Publications``). A subscriber says which topics
it reads (LISTEN); the answer (LISTENING) tells where each of its streams
starts. Gaps are fetched (FETCH) and answered with REPUBLISH, or LOST for
what the buffer no longer holds.

A subscription lasts as long as the subscriber's incarnation, whatever we
believe of it: a subscriber we hold DOWN, or even REMOVED and purged, may well
be alive, keep its streams and come back, and its next LISTEN must get the
starts it was given.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver, check_guarantee
from zcluster.core.limits import PeerBuckets
from zcluster.core.publications import Publications
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus

#: the header of every AT_MOST_ONCE publication (messages are never changed: share one)
_UNNUMBERED = msg.Publish(0, DeliveryGuarantee.AT_MOST_ONCE)


class _Listener:
    """What one subscriber incarnation told us: its topics, with our latest number on
    each when it first listed it, and the header ``seq`` of the LISTEN that said so."""

    __slots__ = ("confirmed", "incarnation", "prefixes", "seq", "settled", "starts")

    def __init__(self, incarnation: int) -> None:
        self.incarnation = incarnation
        self.seq = 0
        self.starts: dict[str, int] = {}
        #: the topics our PUB has surely taken its subscriptions to (see ``subscribers``)
        self.confirmed: frozenset[str] = frozenset()
        #: whether a LISTEN of it has settled (it receives our PUB)
        self.settled = False
        #: prefixes of the topics it reads (every topic starting with one)
        self.prefixes: tuple[str, ...] = ()

    def reads(self, topic: str) -> bool:
        """Whether it reads ``topic`` through one of its prefixes (once settled)."""
        return self.settled and any(topic.startswith(prefix) for prefix in self.prefixes)


class Publisher(Component):
    def __init__(
        self,
        ctx: NodeContext,
        is_connected: Callable[[str], bool],
        causal_stamp: Callable[[bytes], bytes],
        causal_published: Callable[[str, int, float], None],
    ) -> None:
        self._ctx = ctx
        self._is_connected = is_connected
        #: a CAUSAL publication's payload, and what it is known by once numbered (causal.py)
        self._causal_stamp = causal_stamp
        self._causal_published = causal_published
        self.publications = Publications(ctx.config)
        #: each subscriber's topics, with our latest number on each when it first said so
        self._listeners: dict[str, _Listener] = {}
        #: members whose record is REMOVED (watched for its purge; a LISTEN may still come)
        self._removed: dict[str, None] = {}
        #: subscribers whose record was purged, oldest first: kept in case they come back
        #: in the same incarnation (as the member table does), at most members_max_count
        self._purged: dict[str, None] = {}
        #: subscribers whose latest topics are confirmed at the given time, in LISTEN order
        self._settling: dict[str, float] = {}
        #: publications resent to each member (its FETCHes), at most member_resends_per_s
        rate = ctx.config.member_resends_per_s
        self._resends = PeerBuckets(rate, rate, ctx.config.members_max_count)

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Listen: self._rx_listen, msg.Fetch: self._rx_fetch}

    def commands(self) -> Mapping[type, Command]:
        return {ev.PublishRequested: self._on_publish}

    def subscribers(self, topic: str) -> frozenset[str]:
        """Live members that told us they receive our publications on ``topic``.

        A topic counts ``listen_settle_s`` after the LISTEN that named it: the
        subscriber subscribed its SUB before sending LISTEN, but the subscription
        travels on its own connection to our PUB and may arrive after the LISTEN.
        """
        return frozenset(
            node_id
            for node_id, listener in self._listeners.items()
            if (topic in listener.confirmed or listener.reads(topic))
            and self._is_connected(node_id)
        )

    def listeners(self) -> frozenset[str]:
        """Live members that told us they receive our PUB (any topic), counted as
        ``subscribers`` counts them (once settled)."""
        return frozenset(
            node_id
            for node_id, listener in self._listeners.items()
            if listener.settled and self._is_connected(node_id)
        )

    def listening(self) -> list[tuple[str, int, tuple[str, ...]]]:
        """Each subscriber incarnation that reads topics of ours, with those topics: those
        we hold down too (they may have missed some), not those that left or were removed."""
        table = self._ctx.table
        numbered = self.publications.topics()
        out = []
        for node_id, listener in self._listeners.items():
            member = table.get(node_id)
            if (
                (listener.starts or listener.prefixes)
                and member is not None
                and member.incarnation == listener.incarnation
                and not member.status.is_gone
            ):
                starts = listener.starts
                through_prefixes = tuple(
                    t
                    for t in numbered
                    if t not in starts and any(t.startswith(p) for p in listener.prefixes)
                )
                out.append((node_id, listener.incarnation, (*starts, *through_prefixes)))
        return out

    def positions(self) -> tuple[msg.Position, ...]:
        """Our latest number on the most recently published topics, for heartbeats."""
        return self.publications.positions()

    def _on_publish(self, event: ev.PublishRequested, now: float) -> None:
        ctx = self._ctx
        guarantee, topic, payload = check_guarantee(event.guarantee), event.topic, event.payload
        publication = _UNNUMBERED
        if guarantee.is_reliable:
            causal = guarantee is DeliveryGuarantee.CAUSAL
            if causal:
                payload = self._causal_stamp(payload)
            seq = self.publications.append(topic, guarantee, payload)
            if seq:
                publication = msg.Publish(seq, guarantee)
                if causal:
                    self._causal_published(topic, seq, now)
            else:
                ctx.counters["publications_unsequenced_too_many_topics"] += 1
                if causal:  # subscribers could not read it unnumbered: not sent
                    ctx.counters["causal_publications_refused"] += 1
                    return
        ctx.emit(fx.Publish(topic, publication, payload))
        ctx.counters["messages_published"] += 1

    def _rx_listen(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        listen = env.message
        assert isinstance(listen, msg.Listen)
        current = ctx.table.get(env.sender)
        if current is None or current.incarnation != env.incarnation:
            return
        listener = self._listeners.get(env.sender)
        if listener is None or listener.incarnation != env.incarnation:
            listener = self._listeners[env.sender] = _Listener(env.incarnation)
        elif env.seq < listener.seq:
            # Sent before the LISTEN we already took (and answered): it would undo it.
            ctx.counters["listens_out_of_order"] += 1
            return
        listener.seq = env.seq
        listener.prefixes = listen.prefixes
        # The subscriber's streams start where each topic stood when it first told us;
        # a repeated LISTEN (our answer was lost) gets the same answer.
        before = listener.starts
        latest = self.publications.latest
        starts = {t: before[t] if t in before else latest(t) for t in listen.topics}
        listener.starts = starts
        listener.confirmed = listener.confirmed.intersection(starts)  # removals count at once
        self._settling[env.sender] = now + ctx.config.listen_settle_s
        ctx.send(current.address, msg.Listening(tuple(starts.items())))

    def _rx_fetch(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        fetch = env.message
        assert isinstance(fetch, msg.Fetch)
        # Answered to the address our table holds for a live member in that incarnation,
        # whatever the FETCH names: up to fetch_max_count publications for one small
        # message must not be aimed at a third party.
        address = ctx.live_address(env.sender) if ctx.is_current(env) else None
        if address is None:
            ctx.counters["fetches_refused_not_a_member"] += 1
            return
        found, lost = self.publications.lookup(fetch.topic, fetch.ranges)
        allowed = self._resends.of(env.sender).take_up_to(now, len(found))
        if allowed < len(found):  # the rest is fetched again (member_resends_per_s)
            ctx.counters["resends_deferred_rate"] += len(found) - allowed
            del found[allowed:]
        ctx.counters["publications_resent"] += len(found)
        for seq, guarantee, payload in found:
            ctx.send(address, msg.Republish(fetch.topic, seq, guarantee), payload)
        if lost:
            ctx.send(address, msg.Lost(fetch.topic, tuple(lost)))

    def tick(self, now: float) -> None:
        if self._settling:
            self._confirm(now)
        if self._removed:
            table, purged = self._ctx.table, self._purged
            for node_id in list(self._removed):
                if table.get(node_id) is not None:
                    continue
                del self._removed[node_id]
                if node_id in self._listeners:
                    purged[node_id] = None
                    if len(purged) > self._ctx.config.members_max_count:
                        oldest = next(iter(purged))
                        del purged[oldest]
                        del self._listeners[oldest]

    def _confirm(self, now: float) -> None:
        for node_id, due in list(self._settling.items()):
            if due > now:
                continue
            del self._settling[node_id]
            listener = self._listeners.get(node_id)
            if listener is not None:
                listener.confirmed = frozenset(listener.starts)
                listener.settled = True

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        # Only a new incarnation ends a subscription. Not DOWN, nor REMOVED: a member we
        # cannot hear may still hear us, keep its streams and come back (refuting, or
        # taken back after its record was purged), and get the same starts again.
        node_id = member.node_id
        listener = self._listeners.get(node_id)
        if listener is not None and listener.incarnation != member.incarnation:
            del self._listeners[node_id]
        self._purged.pop(node_id, None)
        if member.status is MemberStatus.REMOVED:
            self._removed[node_id] = None
        else:
            self._removed.pop(node_id, None)
