"""Spreading membership news between members that speak swim, and noticing views that differ.

Every change a node applies (its own, its verdicts, what it heard) rides on
the probes it sends and answers (PING, PING_REQ, ACK) a bounded number of
times, ``gossip_retransmit_count * ceil(log10(members + 1))``, and while it
has news it also pushes it to ``gossip_fanout_count`` random members every
``gossip_interval_s`` (GOSSIP), so a change reaches everyone in O(log n)
rounds and a quiet cluster sends no gossip at all. A message to a member we
hold SUSPECT or DOWN carries that record first, so the member can refute it
at once (Lifeguard's buddy system).

Views that differ are repaired by a push-pull of whole tables: with a
heartbeat's sender once the difference outlived a heartbeat; with the sender
of a probe or gossip whose digest differs from ours when another did
``divergence_sync_interval_s`` earlier and our view has not changed since
(gossip had time to bring what we missed, and did not); at most one
push-pull per ``divergence_sync_interval_s`` in all.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from zcluster.core.component import Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member, MemberStatus

#: a record a member should hear about itself at once: it refutes it
_TO_REFUTE = (MemberStatus.SUSPECT, MemberStatus.DOWN, MemberStatus.REMOVED)
#: gossip, as probes carry it: (news, view digest)
Piggyback = tuple[tuple[msg.News, ...], str]


class Dissemination(Component):
    def __init__(self, ctx: NodeContext, push_pull: Callable[[str, str], None]) -> None:
        self._ctx = ctx
        self._push_pull = push_pull
        self._next_round = 0.0
        self._next_divergence_sync = 0.0
        #: when each heartbeat sender's digest started differing from ours
        self._mismatch_since: dict[str, float] = {}
        #: when a digest in probes or gossip first differed from our view, and that view
        self._news_mismatch: tuple[float, str] | None = None

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {
            msg.Heartbeat: self._rx_heartbeat,
            msg.Ping: self._rx_news,
            msg.PingReq: self._rx_news,
            msg.Ack: self._rx_news,
            msg.Gossip: self._rx_news,
        }

    def piggyback(self, node_id: str) -> Piggyback | None:
        """Gossip for a probe message to ``node_id``; None if it does not speak swim
        (it then gets the revision 1.0 form)."""
        ctx = self._ctx
        if not ctx.peers.announced_swim(node_id):
            return None
        return self._news_for(node_id), ctx.table.digest()

    def tick(self, now: float) -> None:
        ctx = self._ctx
        if now < self._next_round:
            return
        self._next_round = now + ctx.config.gossip_interval_s
        if not ctx.table.relay or ctx.me.status not in (MemberStatus.UP, MemberStatus.LEAVING):
            return
        for node_id in ctx.peers.sample_swim(ctx.rng, ctx.config.gossip_fanout_count):
            member = ctx.table.get(node_id)
            news = self._news_for(node_id)
            if member is None or not news:
                continue
            ctx.counters["gossip_sent"] += 1
            ctx.send(member.address, msg.Gossip(news, ctx.table.digest()))

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        new_life = previous is None or previous.incarnation != member.incarnation
        if new_life or not member.status.is_live:
            self._mismatch_since.pop(member.node_id, None)

    # ------------------------------------------------------------ messages

    def _rx_news(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        message = env.message
        assert isinstance(message, msg.Ping | msg.PingReq | msg.Ack | msg.Gossip)
        if message.view is None:
            return  # the revision 1.0 form: nothing to take
        ctx = self._ctx
        if message.news:
            peers, table = ctx.peers, ctx.table
            for item in message.news:
                member = item.member
                peers.relayed(member.node_id, member.incarnation, item.capabilities)
            ctx.merge([item.member for item in message.news], now, relay=True, sender=env.sender)
            for item in message.news:
                if item.suspecters:
                    table.add_suspecters(item.member, item.suspecters)
        if now < self._next_divergence_sync or ctx.me.status is MemberStatus.JOINING:
            return
        mine = ctx.table.digest()
        if message.view == mine:
            return
        sender = ctx.table.get(env.sender)
        if sender is None or sender.incarnation != env.incarnation:
            return
        noted = self._news_mismatch
        if noted is None or noted[1] != mine:
            self._news_mismatch = (now, mine)
        elif now - noted[0] >= ctx.config.divergence_sync_interval_s:
            self._news_mismatch = None
            self._repair(sender, now)

    def _rx_heartbeat(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        """Push-pull with a peer whose view has differed from ours for a whole heartbeat.

        Views differ briefly after every change until its gossip lands; only a
        difference that outlives a heartbeat interval is worth a table exchange.
        """
        ctx = self._ctx
        heartbeat = env.message
        assert isinstance(heartbeat, msg.Heartbeat)
        if now < self._next_divergence_sync or ctx.me.status is MemberStatus.JOINING:
            return
        sender = ctx.table.get(env.sender)  # merged by Gossip just before
        if sender is None or sender.incarnation != env.incarnation:
            return
        if heartbeat.digest == ctx.table.digest():
            self._mismatch_since.pop(env.sender, None)
            return
        since = self._mismatch_since.setdefault(env.sender, now)
        if now - since >= ctx.config.heartbeat_interval_s:
            del self._mismatch_since[env.sender]
            self._repair(sender, now)

    # ------------------------------------------------------------ internals

    def _repair(self, sender: Member, now: float) -> None:
        ctx = self._ctx
        self._next_divergence_sync = now + ctx.config.divergence_sync_interval_s
        ctx.counters["divergence_syncs"] += 1
        self._push_pull(sender.address, sender.node_id)

    def _news_for(self, node_id: str) -> tuple[msg.News, ...]:
        ctx = self._ctx
        table, peers = ctx.table, ctx.peers
        limit = ctx.config.gossip_records_per_heartbeat_count
        records: list[Member] = []
        own = table.get(node_id)
        if own is not None and own.status in _TO_REFUTE:
            records.append(own)
        if table.relay:
            records.extend(m for m in table.take_relay(limit - len(records)) if m is not own)
        return tuple(
            msg.News(m, peers.record_capabilities(m), table.suspecters(m.node_id)) for m in records
        )
