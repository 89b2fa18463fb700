"""Membership: joining, heartbeats, table exchanges, graceful leave, expiry.

A node joins by sending SYNC to its seeds until one admits it. While a live
member does not speak swim, the node heartbeats on its PUB: its own record,
its first-hand changes, the view digest and its capabilities. Tables are
exchanged whole (push-pull SYNC) to join, to repair views that differ
(``dissemination.py`` decides when) and now and then as a safety net. Down
members and seeds outside the view are contacted now and then, so partitions
heal. A graceful leave announces LEAVING once what the node accepted is done
(``departure.py``), then LEFT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.members import MAX_VERSION, Member, MemberStatus


class Gossip(Component):
    def __init__(
        self,
        ctx: NodeContext,
        seeds: tuple[str, ...],
        positions: Callable[[], tuple[msg.Position, ...]],
        admits: Callable[[msg.Envelope, msg.Sync, float], bool],
    ) -> None:
        self._ctx = ctx
        self.seeds = tuple(s for s in seeds if s != ctx.address)
        self._positions = positions
        self._admits = admits
        self.started = False
        self._leave_at: float | None = None
        self._next_heartbeat = 0.0
        #: the last safety-net push-pull (or the start), and this round's random factor
        self._last_sync = 0.0
        self._sync_phase = 1.0
        self._next_seed_contact = 0.0
        self._next_join = 0.0
        self._next_reconnect = 0.0

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Heartbeat: self._rx_heartbeat, msg.Sync: self._rx_sync}

    def commands(self) -> Mapping[type, Command]:
        return {
            ev.Started: self._on_started,
            ev.SeedsResolved: self._on_seeds,
        }

    @property
    def has_left(self) -> bool:
        return self._ctx.me.status is MemberStatus.LEFT

    def ask(self, member: Member) -> None:
        """Ask a member for its table (to learn whether its incarnation is alive)."""
        self._send_sync(member.address, member.node_id, want_reply=True, records=(self._ctx.me,))

    def push_pull(self, address: str, node_id: str) -> None:
        """Exchange whole tables with a member."""
        self._ctx.counters["push_pulls"] += 1
        self._send_sync(address, node_id, want_reply=True)

    # ------------------------------------------------------------ events

    def _on_started(self, _: ev.Started, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        self.started = True
        self._next_heartbeat = now
        self._last_sync = now
        self._sync_phase = ctx.rng.uniform(0.5, 1.5)
        self._next_reconnect = now + config.reconnect_interval_s
        self._next_seed_contact = now + config.seed_contact_interval_s
        if self.seeds:
            ctx.emit(fx.MemberChanged(ctx.me, None))
            ctx.emit(fx.ResolveSeeds(self.seeds))
            self._next_join = now + config.join_retry_interval_s
        else:
            self._set_my_status(MemberStatus.UP, now)
        self._heartbeat(now)

    def _on_seeds(self, event: ev.SeedsResolved, now: float) -> None:
        ctx = self._ctx
        others = [a for a in event.addresses if a != ctx.address]
        if ctx.me.status is MemberStatus.JOINING:
            if event.addresses and not others:
                # Every seed is this node (each pod seeded with pod-0): form the cluster.
                self._set_my_status(MemberStatus.UP, now)
            for address in others:
                self._send_sync(address, None, want_reply=True, records=(ctx.me,))
            return
        live = {m.address for m in ctx.table.live_peers()}
        for address in others:
            if address not in live:  # a seed outside our view: maybe the other side of a split
                self._send_sync(address, None, want_reply=True)

    def announce_leaving(self, now: float) -> None:
        """LEAVING now (what was accepted is done: ``departure.py``), LEFT a heartbeat later."""
        self._set_my_status(MemberStatus.LEAVING, now)
        self._announce_directly(now)
        self._leave_at = now + self._ctx.config.heartbeat_interval_s

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        if self._leave_at is not None and now >= self._leave_at and not self.has_left:
            self._leave_at = None
            self._set_my_status(MemberStatus.LEFT, now)
            self._announce_directly(now)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        status = ctx.me.status
        if status is MemberStatus.JOINING:
            if now >= self._next_join:
                self._next_join = now + config.join_retry_interval_s
                ctx.emit(fx.ResolveSeeds(self.seeds))
            return
        if status is MemberStatus.LEFT:
            return
        if now >= self._next_reconnect:
            self._next_reconnect = now + config.reconnect_interval_s
            self._reconnect(now)
            self._safety_net(now)
        if ctx.table.has_dead:
            self._expire(now)

    def _reconnect(self, now: float) -> None:
        """Contact a down member, and seeds outside our view, so that partitions heal."""
        ctx = self._ctx
        down = [m for m in ctx.table.dead() if m.status is MemberStatus.DOWN]
        if down:
            # The most recently lost are the likeliest to come back; long-dead ones are noise.
            down.sort(key=lambda m: ctx.table.status_since(m.node_id), reverse=True)
            target = ctx.rng.choice(down[: ctx.config.reconnect_candidates_count])
            # Its record as we hold it: if it is alive it refutes, and answers with its table.
            ctx.counters["reconnect_attempts"] += 1
            self._send_sync(
                target.address, target.node_id, want_reply=True, records=(ctx.me, target)
            )
        alone = not (ctx.peers.swim or ctx.peers.others)
        if self.seeds and (alone or now >= self._next_seed_contact):
            self._next_seed_contact = now + ctx.config.seed_contact_interval_s
            ctx.emit(fx.ResolveSeeds(self.seeds))

    def _safety_net(self, now: float) -> None:
        """Push-pull with a random member now and then. A table grows with the cluster, so
        the interval does too: what this costs a node per second does not (digests in probes
        and gossip find differences sooner). A random phase keeps nodes started together
        from exchanging tables all at once."""
        ctx, config = self._ctx, self._ctx.config
        members = len(ctx.peers.swim) + len(ctx.peers.others) + 1
        scale = -(-members // config.sync_interval_members_count)
        if now < self._last_sync + config.sync_interval_s * scale * self._sync_phase:
            return
        self._last_sync = now
        self._sync_phase = ctx.rng.uniform(0.5, 1.5)
        peers = ctx.table.peers(MemberStatus.UP, MemberStatus.JOINING)
        if peers:
            peer = ctx.rng.choice(peers)
            self.push_pull(peer.address, peer.node_id)

    def _expire(self, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        table = ctx.table
        for member in table.dead():
            age = now - table.status_since(member.node_id)
            if member.status is MemberStatus.REMOVED:
                if age >= config.removed_tombstone_s:
                    table.purge(member.node_id)
                    ctx.peers.forget(member.node_id)
                continue
            limit = (
                config.down_member_expiry_s
                if member.status is MemberStatus.DOWN
                else config.left_member_expiry_s
            )
            if age >= limit:
                previous = table.mark(member.node_id, MemberStatus.REMOVED, now)
                if previous is not None:
                    ctx.member_changed(table.get(member.node_id) or previous, previous, now)

    # ------------------------------------------------------------ messages

    def _rx_heartbeat(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        heartbeat = env.message
        assert isinstance(heartbeat, msg.Heartbeat)
        record = heartbeat.me
        if record.node_id != env.sender or record.incarnation != env.incarnation:
            ctx.counters["heartbeats_inconsistent"] += 1
            return
        ctx.peers.announced(env.sender, env.incarnation, heartbeat.capabilities)
        ctx.merge((record, *heartbeat.updates), now, sender=env.sender)

    def _rx_sync(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        sync = env.message
        assert isinstance(sync, msg.Sync)
        if not self._admits(env, sync, now):
            return  # a claim to a live member's id (admission.py): nothing of it is taken
        ctx.peers.announced(env.sender, env.incarnation, sync.capabilities)
        for node_id, incarnation, capabilities in sync.announcements or ():
            ctx.peers.relayed(node_id, incarnation, capabilities)
        # A SYNC's sender speaking of itself (joining, leaving) is news only we have heard.
        ctx.merge(sync.records, now, sender=env.sender, queue_sender=True)
        if ctx.me.status is MemberStatus.JOINING and any(
            r.node_id == ctx.node_id and r.incarnation == ctx.incarnation for r in sync.records
        ):
            # A table that already holds us: we were admitted (by a seed's answer, or by a
            # member pushing its table to us because our seed died before it answered).
            self._set_my_status(MemberStatus.UP, now)
        if sync.want_reply and sync.reply_address != ctx.address:
            address = ctx.answer_address(env, sync.reply_address, now)
            if address is None:
                return
            if ctx.may_send_table(now):
                self._send_sync(address, env.sender, want_reply=False)
                return
            # Past the rate of table answers: our record and the sender's, which admits a
            # joining node all the same; the rest reaches it by gossip and push-pull.
            sender = ctx.table.get(env.sender)
            records = (ctx.me,) if sender is None else (ctx.me, sender)
            self._send_sync(address, env.sender, want_reply=False, records=records)

    # ------------------------------------------------------------ internals

    def _set_my_status(self, status: MemberStatus, now: float) -> None:
        ctx = self._ctx
        me = ctx.me
        version = min(me.version + 1, MAX_VERSION)  # never past what the wire carries
        changed = dataclasses.replace(me, status=status, version=version)
        previous = ctx.table.set_me(changed, now)
        ctx.emit(fx.MemberChanged(ctx.me, previous))

    def _heartbeat(self, now: float) -> None:
        """On the control topic, for every subscriber: only while some live member does not
        speak swim (those that do need no heartbeat: they probe)."""
        ctx = self._ctx
        self._next_heartbeat = now + ctx.config.heartbeat_interval_s
        if not ctx.peers.others:
            return
        updates = ctx.table.take_broadcast(ctx.config.gossip_records_per_heartbeat_count)
        heartbeat = msg.Heartbeat(
            ctx.me, tuple(updates), ctx.table.digest(), self._positions(), ctx.capabilities
        )
        ctx.emit(fx.Publish(None, heartbeat, b""))
        ctx.counters["heartbeats_published"] += 1

    def _announce_directly(self, now: float) -> None:
        """Tell every live peer our new state now, not only on the next heartbeat."""
        self._heartbeat(now)
        for peer in self._ctx.table.live_peers():
            self._send_sync(peer.address, peer.node_id, want_reply=False, records=(self._ctx.me,))

    def _send_sync(
        self,
        address: str,
        to: str | None,
        *,
        want_reply: bool,
        records: tuple[Member, ...] | None = None,
    ) -> None:
        """SYNC to ``to`` (None: an address we cannot put a member to, such as a seed) of
        ``records`` (None: the whole table, with what members announced if ``to`` speaks
        swim)."""
        ctx = self._ctx
        known = None
        if records is None:
            records = tuple(ctx.table.records())
            if to is not None and ctx.peers.announced_swim(to):
                known = ctx.peers.announcements()
        ctx.send(address, msg.Sync(records, want_reply, ctx.address, ctx.capabilities, known))
