"""Failure detection as protocol: probes, indirect probes, suspicion and verdicts.

``FailureDetector`` (``detector.py``) decides from silence alone; this
component hears every message, sends the PINGs and PING_REQs it asks for,
relays probes for other members, and turns verdicts into member states.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from zcluster.core.component import Component, NodeContext, Receiver
from zcluster.core.detector import FailureDetector, Verdict
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member, MemberStatus

_STATUS = {
    Verdict.SUSPECT: MemberStatus.SUSPECT,
    Verdict.DOWN: MemberStatus.DOWN,
    Verdict.LEFT: MemberStatus.LEFT,
}


@dataclasses.dataclass(frozen=True, slots=True)
class _Relay:
    """A probe we run for another member (PING_REQ): where to forward the ACK."""

    requester_address: str
    requester_probe_id: int
    target: str
    deadline: float


class FailureDetection(Component):
    def __init__(self, ctx: NodeContext) -> None:
        self._ctx = ctx
        self.detector = FailureDetector(ctx.config)
        self._probe_seq = 0
        self._probes: dict[int, str] = {}
        self._relays: dict[int, _Relay] = {}

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {msg.Ping: self._rx_ping, msg.PingReq: self._rx_ping_req, msg.Ack: self._rx_ack}

    def heard(self, envelope: msg.Envelope, now: float) -> None:
        """Any message from a member's current incarnation shows it is alive."""
        self.heard_from(envelope.sender, envelope.incarnation, now)

    def heard_from(self, sender: str, incarnation: int, now: float) -> None:
        member = self._ctx.table.get(sender)  # every message: kept short
        if member is not None and member.incarnation == incarnation:
            self.detector.heard(sender, now)

    def tick(self, now: float) -> None:
        ctx = self._ctx
        status = ctx.me.status
        if status is MemberStatus.JOINING or status is MemberStatus.LEFT:
            return
        for verdict, node_id in self.detector.step(ctx.table.live_peers(), now):
            if verdict is Verdict.PROBE:
                self._probe(node_id, now)
                continue
            new_status = _STATUS[verdict]
            previous = ctx.table.mark(node_id, new_status, now)
            if previous is not None:
                ctx.counters[f"members_{new_status}"] += 1
                ctx.member_changed(ctx.table.get(node_id) or previous, previous, now)
        for probe_id, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[probe_id]
        if len(self._probes) > 4 * max(1, len(ctx.table)):
            # Answers to probes long given up on will never come; keep the map bounded.
            for probe_id in sorted(self._probes)[: len(self._probes) // 2]:
                del self._probes[probe_id]

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        new_life = previous is None or previous.incarnation != member.incarnation
        was_live = previous is not None and previous.status.is_live
        if member.status.is_live and (new_life or not was_live):
            self.detector.watch(node_id, now)
        elif not member.status.is_live:
            self.detector.forget(node_id)
        if member.status is MemberStatus.UP:
            self.detector.refuted(node_id)

    def _probe(self, node_id: str, now: float) -> None:
        ctx = self._ctx
        target = ctx.table.get(node_id)
        if target is None:
            return
        probe_id = self._next_probe_id()
        self._probes[probe_id] = node_id
        self.detector.probing(node_id, now)
        ctx.counters["probes_sent"] += 1
        ctx.send(target.address, msg.Ping(probe_id, ctx.address))
        helpers = [m for m in ctx.table.peers(MemberStatus.UP) if m.node_id != node_id]
        count = min(ctx.config.indirect_probe_count, len(helpers))
        for helper in ctx.rng.sample(helpers, count):
            ctx.send(helper.address, msg.PingReq(probe_id, ctx.address, node_id))

    def _next_probe_id(self) -> int:
        self._probe_seq += 1
        return self._probe_seq

    def _rx_ping(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ping = env.message
        assert isinstance(ping, msg.Ping)
        self._ctx.send(ping.reply_address, msg.Ack(ping.probe_id, self._ctx.node_id))

    def _rx_ping_req(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        request = env.message
        assert isinstance(request, msg.PingReq)
        address = ctx.live_address(request.target)
        if address is None:
            return
        probe_id = self._next_probe_id()
        self._relays[probe_id] = _Relay(
            request.reply_address,
            request.probe_id,
            request.target,
            now + ctx.config.probe_timeout_s,
        )
        ctx.send(address, msg.Ping(probe_id, ctx.address))

    def _rx_ack(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ack = env.message
        assert isinstance(ack, msg.Ack)
        relay = self._relays.pop(ack.probe_id, None)
        if relay is not None:
            reply = msg.Ack(relay.requester_probe_id, ack.target)
            self._ctx.send(relay.requester_address, reply)
            return
        if self._probes.pop(ack.probe_id, None) == ack.target:
            self.detector.heard(ack.target, now)
