"""Failure detection as protocol: probes, indirect probes, suspicion and verdicts.

Members that speak swim are probed in rounds (``prober.py``): a direct PING,
then after ``direct_probe_timeout_s`` PING_REQs through
``indirect_probe_count`` other members, each of which answers with the relayed
ACK or, if the target stays silent, a NACK. Still unanswered after
``probe_timeout_s``: SUSPECT, gossiped, and DOWN once the suspicion outlives
its timeout (``suspicion.py``) without a refutation. Members that do not speak
swim heartbeat, and are probed only when silent (``detector.py``).

Probe messages carry gossip (``dissemination.py``) to members that speak swim.
A LEAVING member that does not answer has LEFT. This node never declares down
a member it hears.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping

from zcluster.core.component import Component, NodeContext, Receiver
from zcluster.core.detector import FailureDetector, Verdict
from zcluster.core.dissemination import Piggyback
from zcluster.core.prober import LocalHealth, Probe, RoundRobin
from zcluster.core.suspicion import Suspicions
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member, MemberStatus

_STATUS = {
    Verdict.SUSPECT: MemberStatus.SUSPECT,
    Verdict.DOWN: MemberStatus.DOWN,
    Verdict.LEFT: MemberStatus.LEFT,
}


@dataclasses.dataclass(slots=True)
class _Relay:
    """A probe we run for another member (PING_REQ): where to forward the ACK."""

    requester: str
    requester_address: str
    requester_probe_id: int
    target: str
    deadline: float
    #: when to tell a requester that speaks swim that the target is silent (None: told)
    nack_at: float | None


class FailureDetection(Component):
    def __init__(
        self,
        ctx: NodeContext,
        piggyback: Callable[[str], Piggyback | None],
        push_pull: Callable[[str, str], None],
    ) -> None:
        self._ctx = ctx
        self._piggyback = piggyback
        self._push_pull = push_pull
        #: members that do not speak swim: watched for silence
        self.detector = FailureDetector(ctx.config)
        #: members that speak swim and are SUSPECT
        self.suspicions = Suspicions(ctx.config)
        self.health = LocalHealth(ctx.config.local_health_max_count)
        self._rounds = RoundRobin(ctx.rng)
        self._next_probe = 0.0
        self._probe_seq = 0
        #: probes of silent members that do not speak swim: the target of each
        self._probes: dict[int, str] = {}
        self._round_probes: dict[int, Probe] = {}
        #: when each live member was last heard (any message, or an ACK through a helper)
        self._last_heard: dict[str, float] = {}
        self._relays: dict[int, _Relay] = {}
        #: the next time an outstanding probe or relay has a step due (ticks are frequent)
        self._next_step = math.inf

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {
            msg.Ping: self._rx_ping,
            msg.PingReq: self._rx_ping_req,
            msg.Ack: self._rx_ack,
            msg.Nack: self._rx_nack,
        }

    def heard(self, envelope: msg.Envelope, now: float) -> None:
        """Any message from a member's current incarnation shows it is alive."""
        self.heard_from(envelope.sender, envelope.incarnation, now)

    def heard_from(self, sender: str, incarnation: int, now: float) -> None:
        """A message from ``sender``'s ``incarnation`` (one of a batch the driver read)."""
        member = self._ctx.table.get(sender)  # every message: kept short
        if member is not None and member.incarnation == incarnation:
            self._heard(sender, now)

    def tick(self, now: float) -> None:
        ctx = self._ctx
        status = ctx.me.status
        if status is MemberStatus.JOINING or status is MemberStatus.LEFT:
            return
        if ctx.peers.others:
            self._watch_silence(now)
        if now >= self._next_probe:
            # Kept on the schedule, not on the tick that noticed it is due.
            interval = self.health.scale(ctx.config.probe_interval_s)
            self._next_probe = max(self._next_probe + interval, now)
            self._probe_next(now)
        if now >= self._next_step:
            self._next_step = min(self._round_probes_due(now), self._relays_due(now))
        if self.suspicions:
            self._suspicions_due(now)

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        new_life = previous is None or previous.incarnation != member.incarnation
        was_live = previous is not None and previous.status.is_live
        if member.status.is_live and (new_life or not was_live):
            self.detector.watch(node_id, now)
            self._rounds.added(node_id)
        elif not member.status.is_live:
            self.detector.forget(node_id)
            self._last_heard.pop(node_id, None)
        if member.status is MemberStatus.UP:
            self.detector.refuted(node_id)
        if member.status is not MemberStatus.SUSPECT:
            self.suspicions.stop(node_id)
        elif previous is None or previous.status is not MemberStatus.SUSPECT or new_life:
            self.suspicions.stop(node_id)  # a new suspicion: counted afresh
            self.suspicions.start(node_id, now)

    # ------------------------------------------------------------ members that speak swim

    def _probe_next(self, now: float) -> None:
        ctx, config = self._ctx, self._ctx.config
        peers = ctx.peers
        target = self._rounds.next(peers.swim, peers.speaks_swim)
        member = None if target is None else ctx.table.get(target)
        if member is None:
            return
        probe_id = self._next_probe_id()
        self._round_probes[probe_id] = Probe(
            member.node_id,
            now,
            now + self.health.scale(config.direct_probe_timeout_s),
            now + self.health.scale(config.probe_timeout_s),
        )
        self._next_step = min(self._next_step, self._round_probes[probe_id].indirect_at)
        ctx.counters["probes_sent"] += 1
        ctx.send(member.address, self._ping(probe_id, member.node_id))

    def _round_probes_due(self, now: float) -> float:
        """Take the steps due; returns when the next one is."""
        speaks_swim = self._ctx.peers.speaks_swim
        next_step = math.inf
        for probe_id, probe in list(self._round_probes.items()):
            if not speaks_swim(probe.target):
                del self._round_probes[probe_id]  # no longer live: nothing left to find out
                continue
            if not probe.indirect_sent and now >= probe.indirect_at:
                self._ask_helpers(probe_id, probe)
            if now >= probe.deadline:
                del self._round_probes[probe_id]
                self._probe_failed(probe, now)
            else:
                next_step = min(
                    next_step, probe.deadline if probe.indirect_sent else probe.indirect_at
                )
        return next_step

    def _ask_helpers(self, probe_id: int, probe: Probe) -> None:
        ctx = self._ctx
        probe.indirect_sent = True
        count = ctx.config.indirect_probe_count
        drawn = ctx.peers.sample_swim(ctx.rng, count + 2, besides=probe.target)
        helpers = [m for m in map(ctx.table.get, drawn) if m and m.status is MemberStatus.UP]
        ctx.counters["probes_indirect"] += 1
        for helper in helpers[:count]:
            probe.helpers += 1
            ctx.send(helper.address, self._ping_req(probe_id, probe.target, helper.node_id))

    def _probe_failed(self, probe: Probe, now: float) -> None:
        ctx = self._ctx
        if self._last_heard.get(probe.target, -1.0) >= probe.started:
            return  # the answer was lost or late, but we heard the member since
        # Helpers that did not even say "no answer" suggest we are the slow one.
        missing = probe.helpers - probe.nacks if probe.helpers else 1
        if missing > 0:
            self.health.worse(missing)
            ctx.counters["probe_answers_missed"] += missing
        member = ctx.table.get(probe.target)
        if member is None:
            return
        ctx.counters["probes_failed"] += 1
        if member.status is MemberStatus.LEAVING:
            self._verdict(probe.target, MemberStatus.LEFT, now)
        elif member.status is MemberStatus.SUSPECT:
            ctx.table.add_suspecters(member, (ctx.node_id,))  # one more independent suspicion
        else:
            self._verdict(probe.target, MemberStatus.SUSPECT, now)

    def _suspicions_due(self, now: float) -> None:
        ctx = self._ctx
        table, peers = ctx.table, ctx.peers
        members = 1 + len(peers.swim) + len(peers.others)
        for node_id, since in self.suspicions.items():
            if not peers.speaks_swim(node_id):
                continue  # watched for silence instead
            suspecters = len(table.suspecters(node_id))
            if now - since >= self.suspicions.timeout_s(members, suspecters):
                self._verdict(node_id, MemberStatus.DOWN, now)

    def _relays_due(self, now: float) -> float:
        """Tell requesters that speak swim of targets that stay silent (NACK), forget relays
        whose time is over; returns when the next step is."""
        ctx = self._ctx
        next_step = math.inf
        for probe_id, relay in list(self._relays.items()):
            if relay.nack_at is not None and now >= relay.nack_at:
                relay.nack_at = None
                if ctx.peers.announced_swim(relay.requester):
                    nack = msg.Nack(relay.requester_probe_id, relay.target)
                    ctx.send(relay.requester_address, nack)
            if now >= relay.deadline:
                del self._relays[probe_id]
            else:
                next_step = min(
                    next_step, relay.deadline if relay.nack_at is None else relay.nack_at
                )
        return next_step

    # ------------------------------------------------------------ members that do not

    def _watch_silence(self, now: float) -> None:
        table = self._ctx.table
        watched = [m for m in map(table.get, self._ctx.peers.others) if m is not None]
        for verdict, node_id in self.detector.step(watched, now):
            if verdict is Verdict.PROBE:
                self._probe_silent(node_id, now)
            else:
                self._verdict(node_id, _STATUS[verdict], now)

    def _probe_silent(self, node_id: str, now: float) -> None:
        """A direct PING and PING_REQs through other members, all at once."""
        ctx = self._ctx
        target = ctx.table.get(node_id)
        if target is None:
            return
        probe_id = self._next_probe_id()
        self._probes[probe_id] = node_id
        if len(self._probes) > 4 * max(1, len(ctx.table)):
            # Answers to probes long given up on will never come; keep the map bounded.
            for stale in sorted(self._probes)[: len(self._probes) // 2]:
                del self._probes[stale]
        self.detector.probing(node_id, now)
        ctx.counters["probes_sent"] += 1
        ctx.send(target.address, self._ping(probe_id, node_id))
        helpers = [m for m in ctx.table.peers(MemberStatus.UP) if m.node_id != node_id]
        count = min(ctx.config.indirect_probe_count, len(helpers))
        for helper in ctx.rng.sample(helpers, count):
            ctx.send(helper.address, self._ping_req(probe_id, node_id, helper.node_id))

    # ------------------------------------------------------------ messages

    def _rx_ping(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ping = env.message
        assert isinstance(ping, msg.Ping)
        address = self._ctx.answer_address(env, ping.reply_address, now)
        if address is not None:
            self._ctx.send(address, self._ack(ping.probe_id, self._ctx.node_id, env.sender))

    def _rx_ping_req(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        request = env.message
        assert isinstance(request, msg.PingReq)
        address = ctx.live_address(request.target)
        requester_address = ctx.answer_address(env, request.reply_address, now)
        if address is None or requester_address is None:
            return
        probe_id = self._next_probe_id()
        nack_at = now + ctx.config.direct_probe_timeout_s
        self._relays[probe_id] = _Relay(
            env.sender,
            requester_address,
            request.probe_id,
            request.target,
            now + ctx.config.probe_timeout_s,
            nack_at,
        )
        self._next_step = min(self._next_step, nack_at)
        ctx.send(address, self._ping(probe_id, request.target))

    def _rx_ack(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ack = env.message
        assert isinstance(ack, msg.Ack)
        if env.sender == ack.target and self._restarted(env):
            return  # no proof that the incarnation we probed is alive
        relay = self._relays.pop(ack.probe_id, None)
        if relay is not None:
            reply = self._ack(relay.requester_probe_id, ack.target, relay.requester)
            self._ctx.send(relay.requester_address, reply)
            return
        probe = self._round_probes.get(ack.probe_id)
        if probe is not None and probe.target == ack.target:
            del self._round_probes[ack.probe_id]
            self.health.better()
            self._heard(ack.target, now)
        elif self._probes.pop(ack.probe_id, None) == ack.target:
            self._heard(ack.target, now)

    def _rx_nack(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        nack = env.message
        assert isinstance(nack, msg.Nack)
        probe = self._round_probes.get(nack.probe_id)
        if probe is not None and probe.target == nack.target:
            probe.nacks += 1

    # ------------------------------------------------------------ internals

    def _restarted(self, env: msg.Envelope) -> bool:
        """A newer incarnation answers a probe at a member's address: the member restarted
        (a seedless first node restarted at its address knows nobody: nothing else would
        bring the two together). Exchange tables with it: its answer, first-hand, makes
        its new life known."""
        member = self._ctx.table.get(env.sender)
        if member is None or env.incarnation <= member.incarnation:
            return False
        self._ctx.counters["restarts_found_by_probe"] += 1
        self._push_pull(member.address, member.node_id)
        return True

    def _heard(self, node_id: str, now: float) -> None:
        self._last_heard[node_id] = now
        self.detector.heard(node_id, now)
        self.suspicions.heard(node_id, now)

    def _verdict(self, node_id: str, status: MemberStatus, now: float) -> None:
        ctx = self._ctx
        previous = ctx.table.mark(node_id, status, now)
        if previous is None:
            return
        ctx.counters[f"members_{status}"] += 1
        record = ctx.table.get(node_id) or previous
        if status is MemberStatus.SUSPECT:
            ctx.table.add_suspecters(record, (ctx.node_id,))
        ctx.member_changed(record, previous, now)

    def _next_probe_id(self) -> int:
        self._probe_seq += 1
        return self._probe_seq

    # Probe messages to ``to``, with gossip if it speaks swim (else the revision 1.0 form).

    def _ping(self, probe_id: int, to: str) -> msg.Ping:
        return msg.Ping(probe_id, self._ctx.address, *(self._piggyback(to) or ()))

    def _ping_req(self, probe_id: int, target: str, to: str) -> msg.PingReq:
        gossip = self._piggyback(to) or ()
        return msg.PingReq(probe_id, self._ctx.address, target, *gossip)

    def _ack(self, probe_id: int, target: str, to: str) -> msg.Ack:
        return msg.Ack(probe_id, target, *(self._piggyback(to) or ()))
