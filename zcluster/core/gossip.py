"""Membership: joining, heartbeats and gossip, anti-entropy, graceful leave, expiry.

A node joins by sending SYNC to its seeds until one admits it. Every
heartbeat carries the sender's own record and a few recent changes
(gossip), the view digest and the sender's capabilities; a digest that
differs from ours for a whole heartbeat triggers a full table exchange.
Down members and seeds outside the view are contacted now and then, so
partitions heal. A graceful leave first lets running handlers of
guaranteed messages finish, then announces LEAVING, then LEFT.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import ONE_FRAME, SUPPORTED
from zcluster.protocol.members import Member, MemberStatus

#: members whose reading of our PUB no longer matters
_GONE_FOR_GOOD = frozenset({MemberStatus.LEFT, MemberStatus.REMOVED})


class Gossip(Component):
    def __init__(
        self,
        ctx: NodeContext,
        seeds: tuple[str, ...],
        positions: Callable[[], tuple[msg.Position, ...]],
        handlers_running: Callable[[], int],
    ) -> None:
        self._ctx = ctx
        self.seeds = tuple(s for s in seeds if s != ctx.address)
        self._positions = positions
        self._handlers_running = handlers_running
        self.started = False
        #: set once a leave was asked for: new application messages are refused
        self.leaving = False
        self._drain_until: float | None = None
        self._leave_at: float | None = None
        self._next_heartbeat = 0.0
        self._next_sync = 0.0
        self._next_divergence_sync = 0.0
        self._next_seed_contact = 0.0
        self._next_join = 0.0
        self._next_reconnect = 0.0
        #: when each peer's heartbeats started showing a view digest different from ours
        self._mismatch_since: dict[str, float] = {}
        #: each peer's capabilities, with the incarnation that announced them
        self._capabilities: dict[str, tuple[int, msg.Capabilities]] = {}
        #: whether every member reads one-frame publications (recomputed after changes)
        self._one_frame = False
        self._one_frame_stale = True

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Heartbeat: self._rx_heartbeat, msg.Sync: self._rx_sync}

    def commands(self) -> Mapping[type, Command]:
        return {
            ev.Started: self._on_started,
            ev.SeedsResolved: self._on_seeds,
            ev.LeaveRequested: self._on_leave,
        }

    @property
    def has_left(self) -> bool:
        return self._ctx.me.status is MemberStatus.LEFT

    @property
    def one_frame_publications(self) -> bool:
        """Whether publications may go out in one frame: every member we know of, but
        those gone for good, announced ONE_FRAME (docs/protocol.md 9.4: PUB is read by
        all). Computed again only after a membership or capability change."""
        if self._one_frame_stale:
            self._one_frame_stale = False
            me, capabilities_of = self._ctx.node_id, self.capabilities_of
            self._one_frame = all(
                ONE_FRAME in (capabilities_of(member.node_id) or ())
                for member in self._ctx.table.records()
                if member.node_id != me and member.status not in _GONE_FOR_GOOD
            )
        return self._one_frame

    def capabilities_of(self, node_id: str) -> msg.Capabilities | None:
        """What the member's current incarnation announced (None: nothing heard yet)."""
        known = self._capabilities.get(node_id)
        member = self._ctx.table.get(node_id)
        if known is None or member is None or known[0] != member.incarnation:
            return None
        return known[1]

    # ------------------------------------------------------------ events

    def _on_started(self, _: ev.Started, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        self.started = True
        self._next_heartbeat = now
        self._next_sync = now + config.sync_interval_s
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
                self._send_sync(address, want_reply=True, only_me=True)
            return
        live = {m.address for m in ctx.table.live_peers()}
        for address in others:
            if address not in live:  # a seed outside our view: maybe the other side of a split
                self._send_sync(address, want_reply=True)

    def _on_leave(self, _: ev.LeaveRequested, now: float) -> None:
        status = self._ctx.me.status
        if not self.started or self.leaving or status in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return
        self.leaving = True
        if self._handlers_running():
            # Let running handlers finish, so their senders hear DELIVERED, not "left".
            self._drain_until = now + self._ctx.config.leave_timeout_s
        else:
            self._announce_leaving(now)

    def _announce_leaving(self, now: float) -> None:
        self._set_my_status(MemberStatus.LEAVING, now)
        self._announce_directly(now)
        self._leave_at = now + self._ctx.config.heartbeat_interval_s

    # ------------------------------------------------------------ time

    def tick(self, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        if self._drain_until is not None:
            running = self._handlers_running()
            if not running or now >= self._drain_until:
                ctx.counters["leave_handlers_unfinished"] += running
                self._drain_until = None
                self._announce_leaving(now)
        if self._leave_at is not None and now >= self._leave_at and not self.has_left:
            self._leave_at = None
            self._set_my_status(MemberStatus.LEFT, now)
            self._announce_directly(now)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        if ctx.me.status is MemberStatus.JOINING:
            if now >= self._next_join:
                self._next_join = now + config.join_retry_interval_s
                ctx.emit(fx.ResolveSeeds(self.seeds))
            return
        if self.has_left:
            return
        if now >= self._next_sync:
            self._next_sync = now + config.sync_interval_s
            peers = ctx.table.peers(MemberStatus.UP, MemberStatus.JOINING)
            if peers:
                self._send_sync(ctx.rng.choice(peers).address, want_reply=True)
        if now >= self._next_reconnect:
            self._next_reconnect = now + config.reconnect_interval_s
            self._reconnect(now)
        self._expire(now)

    def _reconnect(self, now: float) -> None:
        """Contact a down member, and seeds outside our view, so that partitions heal."""
        ctx = self._ctx
        down = ctx.table.peers(MemberStatus.DOWN)
        if down:
            # The most recently lost are the likeliest to come back; long-dead ones are noise.
            down.sort(key=lambda m: ctx.table.status_since(m.node_id), reverse=True)
            target = ctx.rng.choice(down[: ctx.config.reconnect_candidates_count])
            self._send_sync(target.address, want_reply=True)
        alone = not ctx.table.live_peers()
        if self.seeds and (alone or now >= self._next_seed_contact):
            self._next_seed_contact = now + ctx.config.seed_contact_interval_s
            ctx.emit(fx.ResolveSeeds(self.seeds))

    def _expire(self, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        table = ctx.table
        for member in table.peers(MemberStatus.DOWN, MemberStatus.LEFT, MemberStatus.REMOVED):
            age = now - table.status_since(member.node_id)
            if member.status is MemberStatus.REMOVED:
                if age >= config.removed_tombstone_s:
                    table.purge(member.node_id)
                    self._capabilities.pop(member.node_id, None)
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
        self._heard_capabilities(env, heartbeat.capabilities)
        # Everyone connected to the sender hears this heartbeat: relay none of it.
        self._merge_all((record, *heartbeat.updates), now, first_hand_from=None)
        current = ctx.table.get(env.sender)
        if current is None or current.incarnation != env.incarnation:
            return
        if now >= self._next_divergence_sync and ctx.me.status is not MemberStatus.JOINING:
            self._check_divergence(env.sender, current.address, heartbeat.digest, now)

    def _rx_sync(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        sync = env.message
        assert isinstance(sync, msg.Sync)
        self._heard_capabilities(env, sync.capabilities)
        # A SYNC's sender speaking of itself (joining, leaving) is news only we have heard.
        self._merge_all(sync.records, now, first_hand_from=env.sender)
        if ctx.me.status is MemberStatus.JOINING and any(
            r.node_id == ctx.node_id and r.incarnation == ctx.incarnation for r in sync.records
        ):
            # A table that already holds us: we were admitted (by a seed's answer, or by a
            # member pushing its table to us because our seed died before it answered).
            self._set_my_status(MemberStatus.UP, now)
        if sync.want_reply and sync.reply_address != ctx.address:
            self._send_sync(sync.reply_address, want_reply=False)

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        new_life = previous is None or previous.incarnation != member.incarnation
        if new_life or not member.status.is_live:
            self._mismatch_since.pop(member.node_id, None)
        self._one_frame_stale = True

    # ------------------------------------------------------------ internals

    def _heard_capabilities(self, env: msg.Envelope, capabilities: msg.Capabilities) -> None:
        """Remember what the sender announced; a late message of an earlier life is ignored."""
        known = self._capabilities.get(env.sender)
        if known is None or known[0] <= env.incarnation:
            announced = (env.incarnation, capabilities)
            if announced != known:
                self._capabilities[env.sender] = announced
                self._one_frame_stale = True

    def _merge_all(
        self, records: Iterable[Member], now: float, *, first_hand_from: str | None
    ) -> None:
        ctx = self._ctx
        for outcome, record, previous in ctx.table.merge_all(records, now, first_hand_from):
            if outcome == "applied":
                ctx.member_changed(record, previous, now)
            elif outcome == "refuted":
                ctx.counters["suspicions_refuted"] += 1
                ctx.emit(fx.MemberChanged(ctx.me, previous))
            elif outcome == "conflict":
                ctx.counters["node_id_conflicts"] += 1
            elif outcome == "full":
                ctx.counters["members_refused_table_full"] += 1

    def _check_divergence(self, sender: str, address: str, digest: str, now: float) -> None:
        """Push-pull with a peer whose view has differed from ours for a whole heartbeat.

        Views differ briefly after every change until its gossip lands; only a
        difference that outlives a heartbeat interval is worth a table exchange.
        """
        ctx = self._ctx
        if digest == ctx.table.digest():  # computing our digest costs O(members)
            self._mismatch_since.pop(sender, None)
            return
        since = self._mismatch_since.setdefault(sender, now)
        if now - since < ctx.config.heartbeat_interval_s:
            return
        del self._mismatch_since[sender]
        self._next_divergence_sync = now + ctx.config.divergence_sync_interval_s
        ctx.counters["divergence_syncs"] += 1
        self._send_sync(address, want_reply=True)

    def _set_my_status(self, status: MemberStatus, now: float) -> None:
        ctx = self._ctx
        me = ctx.me
        changed = dataclasses.replace(me, status=status, version=me.version + 1)
        previous = ctx.table.set_me(changed, now)
        ctx.emit(fx.MemberChanged(ctx.me, previous))

    def _heartbeat(self, now: float) -> None:
        ctx = self._ctx
        self._next_heartbeat = now + ctx.config.heartbeat_interval_s
        updates = ctx.table.take_gossip(ctx.config.gossip_records_per_heartbeat_count)
        heartbeat = msg.Heartbeat(
            ctx.me, tuple(updates), ctx.table.digest(), self._positions(), SUPPORTED
        )
        ctx.emit(fx.Publish(None, heartbeat, b""))

    def _announce_directly(self, now: float) -> None:
        """Tell every live peer our new state now, not only on the next heartbeat."""
        self._heartbeat(now)
        for peer in self._ctx.table.live_peers():
            self._send_sync(peer.address, want_reply=False, only_me=True)

    def _send_sync(self, address: str, *, want_reply: bool, only_me: bool = False) -> None:
        ctx = self._ctx
        records = (ctx.me,) if only_me else tuple(ctx.table.records())
        ctx.send(address, msg.Sync(records, want_reply, ctx.address, SUPPORTED))
