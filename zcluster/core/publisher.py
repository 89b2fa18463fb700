"""The publishing side of fan-out: numbering, subscribers' starting points, repair.

Guaranteed publications are numbered per topic and kept in a bounded
retransmit buffer (``topics.Publications``). A subscriber says which topics
it reads (LISTEN); the answer (LISTENING) tells where each of its streams
starts. Gaps are fetched (FETCH) and answered with REPUBLISH, or LOST for
what the buffer no longer holds.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver, check_guarantee
from zcluster.core.topics import Publications
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member

#: the header of every AT_MOST_ONCE publication (messages are never changed: share one)
_UNNUMBERED = msg.Publish(0, DeliveryGuarantee.AT_MOST_ONCE)


class Publisher(Component):
    def __init__(self, ctx: NodeContext, is_connected: Callable[[str], bool]) -> None:
        self._ctx = ctx
        self._is_connected = is_connected
        self.publications = Publications(ctx.config)
        #: each subscriber's topics, with our latest number on each when it first said so
        self._peer_topics: dict[str, dict[str, int]] = {}

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Listen: self._rx_listen, msg.Fetch: self._rx_fetch}

    def commands(self) -> Mapping[type, Command]:
        return {ev.PublishRequested: self._on_publish}

    def subscribers(self, topic: str) -> frozenset[str]:
        """Live members that told us they receive our publications on ``topic``."""
        return frozenset(
            node_id
            for node_id, topics in self._peer_topics.items()
            if topic in topics and self._is_connected(node_id)
        )

    def listeners(self) -> frozenset[str]:
        """Live members that told us they receive our PUB (any topic)."""
        return frozenset(n for n in self._peer_topics if self._is_connected(n))

    def positions(self) -> tuple[msg.Position, ...]:
        """Our latest number on the most recently published topics, for heartbeats."""
        return self.publications.positions()

    def _on_publish(self, event: ev.PublishRequested, _: float) -> None:
        ctx = self._ctx
        guarantee, topic = check_guarantee(event.guarantee), event.topic
        publication = _UNNUMBERED
        if guarantee.is_reliable:
            if self.publications.can_take(topic):
                seq = self.publications.append(topic, guarantee, event.payload)
                publication = msg.Publish(seq, guarantee)
            else:
                ctx.counters["publications_unsequenced_too_many_topics"] += 1
        ctx.emit(fx.Publish(topic, publication, event.payload))
        ctx.counters["messages_published"] += 1

    def _rx_listen(self, env: msg.Envelope, _: bytes, __: str | None, ___: float) -> None:
        ctx = self._ctx
        listen = env.message
        assert isinstance(listen, msg.Listen)
        current = ctx.table.get(env.sender)
        if current is None or current.incarnation != env.incarnation:
            return
        # The subscriber's streams start where each topic stood when it first told us;
        # a repeated LISTEN (our answer was lost) gets the same answer.
        before = self._peer_topics.get(env.sender, {})
        latest = self.publications.latest
        starts = {t: before[t] if t in before else latest(t) for t in listen.topics}
        self._peer_topics[env.sender] = starts
        ctx.send(current.address, msg.Listening(tuple(starts.items())))

    def _rx_fetch(self, env: msg.Envelope, _: bytes, __: str | None, ___: float) -> None:
        ctx = self._ctx
        fetch = env.message
        assert isinstance(fetch, msg.Fetch)
        found, lost = self.publications.lookup(fetch.topic, fetch.ranges)
        ctx.counters["publications_resent"] += len(found)
        for seq, guarantee, payload in found:
            ctx.send(fetch.reply_address, msg.Republish(fetch.topic, seq, guarantee), payload)
        if lost:
            ctx.send(fetch.reply_address, msg.Lost(fetch.topic, tuple(lost)))

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        new_life = previous is None or previous.incarnation != member.incarnation
        if new_life or not member.status.is_live:
            self._peer_topics.pop(member.node_id, None)
