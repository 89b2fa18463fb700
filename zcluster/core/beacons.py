"""What subscribers need from a publisher once no heartbeat goes to everyone.

A subscriber sends LISTEN on the first heartbeat of a publisher's incarnation:
that heartbeat proves its SUB receives the publisher's PUB, topic
subscriptions included. While every live member speaks swim, nobody
heartbeats on the control topic, so a node sends a HEARTBEAT to each live
member whose incarnation has not listened yet on that member's personal
frame (which only it subscribes to): ``heartbeat_interval_s`` after the member
appears, then every ``listen_retry_s`` until its LISTEN arrives.

Heartbeats also carried the latest number of each numbered topic, so that
subscribers notice lost last publications. While nobody heartbeats, each of
those goes out every ``heartbeat_interval_s`` as a BEACON under its topic's
frame: only that topic's subscribers receive it, so what a node receives
depends on what it reads, not on the size of the cluster.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Mapping

from zcluster.core import effects as fx
from zcluster.core.component import Component, NodeContext, Receiver
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member, MemberStatus


class Beacons(Component):
    def __init__(self, ctx: NodeContext, positions: Callable[[], tuple[msg.Position, ...]]) -> None:
        self._ctx = ctx
        self._positions = positions
        #: the incarnation of each member whose LISTEN arrived
        self._listened: dict[str, int] = {}
        #: members owed a personal heartbeat, and when
        self._due: dict[str, float] = {}
        self._queue: list[tuple[float, int, str]] = []
        self._order = itertools.count()
        self._next_beacon = 0.0

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Listen: self._rx_listen}

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        if not member.status.is_live:
            self._due.pop(node_id, None)
            return
        new_life = previous is None or previous.incarnation != member.incarnation
        was_live = previous is not None and previous.status.is_live
        if (new_life or not was_live) and self._listened.get(node_id) != member.incarnation:
            self._owe(node_id, now + self._ctx.config.heartbeat_interval_s)

    def tick(self, now: float) -> None:
        ctx = self._ctx
        if ctx.me.status is MemberStatus.LEFT:
            return
        # While some member does not speak swim, heartbeats on the control topic reach
        # everyone and do all of this: members are only kept owed until they listen.
        swim = not ctx.peers.others
        queue = self._queue
        while queue and queue[0][0] <= now:
            due, _, node_id = heapq.heappop(queue)
            if self._due.get(node_id) == due:
                del self._due[node_id]
                self._heartbeat_to(node_id, now, send=swim)
        if swim and now >= self._next_beacon:
            self._next_beacon = now + ctx.config.heartbeat_interval_s
            for topic, seq in self._positions():
                ctx.emit(fx.Publish(topic, msg.Beacon(seq), b""))

    def _rx_listen(self, env: msg.Envelope, _: bytes, __: str | None, ___: float) -> None:
        if not self._ctx.is_current(env):
            return  # not taken (Publisher): its sender listens again on our next heartbeat
        listened = self._listened
        listened.pop(env.sender, None)
        listened[env.sender] = env.incarnation
        if len(listened) > self._ctx.config.members_max_count:
            del listened[next(iter(listened))]  # the longest silent
        self._due.pop(env.sender, None)

    def _heartbeat_to(self, node_id: str, now: float, *, send: bool) -> None:
        ctx = self._ctx
        member = ctx.table.get(node_id)
        if member is None or not member.status.is_live:
            return
        if self._listened.get(node_id) == member.incarnation:
            return
        if send:
            heartbeat = msg.Heartbeat(
                ctx.me, (), ctx.table.digest(), self._positions(), ctx.capabilities, to=node_id
            )
            ctx.emit(fx.Publish(None, heartbeat, b""))
            ctx.counters["heartbeats_personal"] += 1
        self._owe(node_id, now + ctx.config.listen_retry_s)

    def _owe(self, node_id: str, due: float) -> None:
        self._due[node_id] = due
        heapq.heappush(self._queue, (due, next(self._order), node_id))
