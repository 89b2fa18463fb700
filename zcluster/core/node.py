"""NodeCore: one node's whole protocol as a pure state machine.

``effects = core.handle(event, now)``: the driver (real sockets) or the
simulated network feeds events with the current time and carries out the
effects in order. The core holds no sockets, reads no clock and draws
randomness only from the ``random.Random`` it is given.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.detector import FailureDetector, Verdict
from zcluster.core.guarantees import AckStatus
from zcluster.core.inbound import DirectReceiver
from zcluster.core.members import Member, MemberStatus
from zcluster.core.membership import MembershipTable
from zcluster.core.outbox import DirectSender, Outgoing
from zcluster.core.topics import Publication, Publications, Subscriptions
from zcluster.wire import (
    CONTROL_TOPIC,
    GUARANTEE_CODES,
    Envelope,
    Kind,
    encode_header,
    encode_member,
    topic_frame,
)

_EMPTY = b""


@dataclasses.dataclass(frozen=True, slots=True)
class _Relay:
    """A probe we run for another member (PING_REQ): where to forward the ACK."""

    requester_address: str
    requester_probe_id: int
    target: str
    deadline: float


class NodeCore:
    """The protocol state of one node."""

    def __init__(
        self,
        node_id: str,
        incarnation: int,
        address: str,
        pub_address: str,
        *,
        seeds: tuple[str, ...] = (),
        config: NodeConfig | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or NodeConfig()
        self.node_id = node_id
        self.incarnation = incarnation
        self.address = address
        self.seeds = tuple(s for s in seeds if s != address)
        self._rng = rng or random.Random(incarnation)
        me = Member(node_id, incarnation, 0, MemberStatus.JOINING, address, pub_address)
        self.table = MembershipTable(
            me, self.config.gossip_retransmit_count, self.config.members_max_count
        )
        self.detector = FailureDetector(self.config)
        #: counters for metrics: frames rejected, messages sent and received, ...
        self.counters: Counter[str] = Counter()
        self._out: list[fx.Effect] = []
        self._seq = 0
        self._probe_seq = 0
        self._probes: dict[int, str] = {}
        self._relays: dict[int, _Relay] = {}
        self._requests: dict[int, float] = {}
        self._connected: dict[str, tuple[str, str]] = {}
        self._listening_to: dict[str, int] = {}
        #: each subscriber's topics, with our latest number on each when it first said so
        self._peer_topics: dict[str, dict[str, int]] = {}
        self._topics: set[str] = set()
        self._started = False
        self._leave_at: float | None = None
        self._next_heartbeat = 0.0
        self._next_sync = 0.0
        self._next_divergence_sync = 0.0
        self._next_seed_contact = 0.0
        #: when each peer's heartbeats started showing a view digest different from ours
        self._mismatch_since: dict[str, float] = {}
        self._next_join = 0.0
        self._next_reconnect = 0.0
        # --- delivery guarantees (docs/delivery.md)
        self.sender = DirectSender(self.config, self._rng)
        self.receiver = DirectReceiver(self.config, self.counters, first_stream_id=incarnation)
        self.publications = Publications(self.config)
        self.subscriptions = Subscriptions(self.config, self.counters)
        #: publishers told which topics we read that have not answered yet, and when to retry
        self._listen_unanswered: dict[str, float] = {}
        self._handlers: dict[type, Callable[[Any, float], None]] = {
            ev.Started: self._on_started,
            ev.TimerFired: self._on_timer,
            ev.EnvelopeReceived: self._on_envelope,
            ev.FrameRejected: self._on_rejected,
            ev.SeedsResolved: self._on_seeds,
            ev.TurnEnded: self._on_turn_ended,
            ev.SendRequested: self._on_send,
            ev.DeliveryFinished: self._on_delivery_finished,
            ev.RequestStarted: self._on_request,
            ev.ReplyReady: self._on_reply_ready,
            ev.PublishRequested: self._on_publish,
            ev.TopicSubscribed: self._on_subscribed,
            ev.TopicUnsubscribed: self._on_unsubscribed,
            ev.LeaveRequested: self._on_leave,
        }
        self._receivers: dict[Kind, Callable[[Envelope, bytes, str | None, float], None]] = {
            Kind.HEARTBEAT: self._rx_heartbeat,
            Kind.SYNC: self._rx_sync,
            Kind.PING: self._rx_ping,
            Kind.PING_REQ: self._rx_ping_req,
            Kind.ACK: self._rx_ack,
            Kind.LISTEN: self._rx_listen,
            Kind.LISTENING: self._rx_listening,
            Kind.SEND: self._rx_send,
            Kind.REQUEST: self._rx_request,
            Kind.REPLY: self._rx_reply,
            Kind.PUBLISH: self._rx_publish,
            Kind.DATA: self._rx_data,
            Kind.DATA_ACK: self._rx_data_ack,
            Kind.FETCH: self._rx_fetch,
            Kind.REPUBLISH: self._rx_republish,
            Kind.LOST: self._rx_lost,
        }

    # ================================================================ API

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Feed one event; returns the effects to carry out, in order."""
        self._handlers[type(event)](event, now)
        out, self._out = self._out, []
        return out

    @property
    def me(self) -> Member:
        return self.table.me

    @property
    def has_left(self) -> bool:
        return self.me.status is MemberStatus.LEFT

    def members(self) -> list[Member]:
        return sorted(self.table.records(), key=lambda m: m.node_id)

    def member(self, node_id: str) -> Member | None:
        return self.table.get(node_id)

    def digest(self) -> str:
        return self.table.digest()

    def subscribers(self, topic: str) -> frozenset[str]:
        """Live members that told us they receive our publications on ``topic``."""
        return frozenset(
            node_id
            for node_id, topics in self._peer_topics.items()
            if topic in topics and node_id in self._connected
        )

    def listeners(self) -> frozenset[str]:
        """Live members that told us they receive our PUB (any topic)."""
        return frozenset(n for n in self._peer_topics if n in self._connected)

    @property
    def topics(self) -> frozenset[str]:
        return frozenset(self._topics)

    @property
    def flush_due(self) -> bool:
        """Acknowledgements or fetches wait for the end of this turn (feed TurnEnded)."""
        return bool(self.receiver.ack_due) or self.subscriptions.new_gap

    def accepts_guaranteed_send(self, node_id: str) -> bool:
        """A guaranteed send may go to a live or down member (it may come back),
        not to an unknown one, nor to one that left or was removed."""
        member = self.table.get(node_id)
        return (
            member is not None
            and node_id != self.node_id
            and member.status not in (MemberStatus.LEFT, MemberStatus.REMOVED)
        )

    def outbox_count(self, node_id: str) -> int:
        """Guaranteed messages to ``node_id`` not yet acknowledged, expired or failed."""
        return self.sender.count(node_id)

    # ================================================================ inputs

    def _on_started(self, _: ev.Started, now: float) -> None:
        self._started = True
        self._next_heartbeat = now
        self._next_sync = now + self.config.sync_interval_s
        self._next_reconnect = now + self.config.reconnect_interval_s
        self._next_seed_contact = now + self.config.seed_contact_interval_s
        if self.seeds:
            self._out.append(fx.MemberChanged(self.me, None))
            self._out.append(fx.ResolveSeeds(self.seeds))
            self._next_join = now + self.config.join_retry_interval_s
        else:
            self._set_my_status(MemberStatus.UP, now)
        self._heartbeat(now)

    def _on_timer(self, _: ev.TimerFired, now: float) -> None:
        if not self._started:
            return
        config = self.config
        if self._leave_at is not None and now >= self._leave_at and not self.has_left:
            self._leave_at = None
            self._set_my_status(MemberStatus.LEFT, now)
            self._announce_directly(now)
        if now >= self._next_heartbeat:
            self._heartbeat(now)
        self._expire_requests(now)
        self._delivery_timers(now)
        if self._listen_unanswered:
            self._retry_listen(now)
        if self.me.status is MemberStatus.JOINING:
            if now >= self._next_join:
                self._next_join = now + config.join_retry_interval_s
                self._out.append(fx.ResolveSeeds(self.seeds))
            return
        if self.has_left:
            return
        self._detect(now)
        if now >= self._next_sync:
            self._next_sync = now + config.sync_interval_s
            peers = self.table.peers(MemberStatus.UP, MemberStatus.JOINING)
            if peers:
                self._send_sync(self._rng.choice(peers).address, want_reply=True, now=now)
        if now >= self._next_reconnect:
            self._next_reconnect = now + config.reconnect_interval_s
            self._reconnect(now)
        self._expire(now)

    def _on_envelope(self, event: ev.EnvelopeReceived, now: float) -> None:
        envelope = event.envelope
        self.counters["messages_received"] += 1
        known = self.table.get(envelope.sender)
        if known is not None and known.incarnation == envelope.incarnation:
            self.detector.heard(envelope.sender, now)
        self._receivers[envelope.kind](envelope, event.payload, event.topic, now)

    def _on_rejected(self, event: ev.FrameRejected, _: float) -> None:
        self.counters["frames_rejected"] += 1
        self.counters[f"frames_rejected_{event.channel}"] += 1

    def _on_seeds(self, event: ev.SeedsResolved, now: float) -> None:
        others = [a for a in event.addresses if a != self.address]
        if self.me.status is MemberStatus.JOINING:
            if event.addresses and not others:
                # Every seed is this node (each pod seeded with pod-0): form the cluster.
                self._set_my_status(MemberStatus.UP, now)
            for address in others:
                self._send_sync(address, want_reply=True, now=now, only_me=True)
            return
        live = {m.address for m in self.table.live_peers()}
        for address in others:
            if address not in live:  # a seed outside our view: maybe the other side of a split
                self._send_sync(address, want_reply=True, now=now)

    def _on_send(self, event: ev.SendRequested, now: float) -> None:
        target = self._live_address(event.target)
        if not event.guarantee.is_reliable:
            if target is None:
                self.counters["sends_dropped_not_member"] += 1
                return
            self._send(target, Kind.SEND, (event.name,), event.payload)
            return
        reason = ""
        if not self.accepts_guaranteed_send(event.target):
            reason = f"{event.target!r} is not a member (unknown, left or removed)"
        elif self.sender.count(event.target) >= self.config.outbox_max_count:
            reason = f"outbox to {event.target!r} is full ({self.config.outbox_max_count})"
        if reason:
            outcome = (event.number, AckStatus.FAILED, reason)
            self._out.append(fx.Acknowledged(event.target, (outcome,)))
            return
        entry = self.sender.add(
            event.target,
            event.number,
            event.name,
            event.payload,
            event.guarantee,
            now + event.ttl_s,
            now,
        )
        self.counters["reliable_sent"] += 1
        if target is not None:
            self._transmit(target, event.target, entry)
        # else: a down member may come back; the retry timer parks it until then

    def _on_delivery_finished(self, event: ev.DeliveryFinished, _: float) -> None:
        if event.error is not None:
            self.counters["reliable_handler_failures"] += 1
        self.receiver.finished(event.sender, event.receipt, event.error)

    def _on_turn_ended(self, _: ev.TurnEnded, now: float) -> None:
        self._flush(now)

    def _on_request(self, event: ev.RequestStarted, now: float) -> None:
        target = self._live_address(event.target)
        if target is None:
            self._out.append(
                fx.CompleteRequest(
                    event.request_id, False, error=f"{event.target!r} is not a live member"
                )
            )
            return
        if len(self._requests) >= self.config.pending_requests_max_count:
            self._out.append(
                fx.CompleteRequest(event.request_id, False, error="too many pending requests")
            )
            return
        self._requests[event.request_id] = now + event.timeout_s
        self._send(
            target, Kind.REQUEST, (event.name, event.request_id, self.address), event.payload
        )

    def _on_reply_ready(self, event: ev.ReplyReady, _: float) -> None:
        self._send(event.reply_address, Kind.REPLY, (event.request_id, event.ok), event.payload)

    def _on_publish(self, event: ev.PublishRequested, _: float) -> None:
        guarantee, topic = event.guarantee, event.topic
        body: tuple[int, int] = (0, 0)
        if guarantee.is_reliable:
            if self.publications.can_take(topic):
                seq = self.publications.append(topic, guarantee, event.payload)
                body = (seq, GUARANTEE_CODES[guarantee])
            else:
                self.counters["publications_unsequenced_too_many_topics"] += 1
        self._seq += 1
        header = encode_header(Kind.PUBLISH, self.node_id, self.incarnation, self._seq, body)
        self._out.append(fx.Publish((topic_frame(topic), header, event.payload)))
        self.counters["messages_published"] += 1

    def _on_subscribed(self, event: ev.TopicSubscribed, now: float) -> None:
        if event.replay:
            self.subscriptions.replay_topics.add(event.topic)
        if event.topic in self._topics:
            return
        self._topics.add(event.topic)
        self._out.append(fx.SetSubscription(topic_frame(event.topic), True))
        self._tell_listening(now)

    def _on_unsubscribed(self, event: ev.TopicUnsubscribed, now: float) -> None:
        if event.topic not in self._topics:
            return
        self._topics.discard(event.topic)
        self.subscriptions.replay_topics.discard(event.topic)
        self.subscriptions.forget_topic(event.topic)
        self._out.append(fx.SetSubscription(topic_frame(event.topic), False))
        self._tell_listening(now)

    def _on_leave(self, _: ev.LeaveRequested, now: float) -> None:
        if not self._started or self.me.status in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return
        self._set_my_status(MemberStatus.LEAVING, now)
        self._announce_directly(now)
        self._leave_at = now + self.config.heartbeat_interval_s

    # ================================================================ receivers

    def _rx_heartbeat(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        sender_record, updates, digest, positions = env.body
        if sender_record.node_id != env.sender or sender_record.incarnation != env.incarnation:
            self.counters["heartbeats_inconsistent"] += 1
            return
        # Everyone connected to the sender hears this heartbeat: relay none of it.
        self._merge_all((sender_record, *updates), now, first_hand_from=None)
        current = self.table.get(env.sender)
        if current is None or current.incarnation != env.incarnation:
            return
        if now >= self._next_divergence_sync and self.me.status is not MemberStatus.JOINING:
            self._check_divergence(env.sender, current.address, digest, now)
        if current.status.is_live and self._listening_to.get(env.sender) != env.incarnation:
            # First heartbeat of this incarnation: its PUB reaches us; say which topics we read.
            self._listening_to[env.sender] = env.incarnation
            self._tell_listening_to(env.sender, current.address, now)
        if self._topics and positions:
            self._heard_topic_positions(env.sender, env.incarnation, positions)

    def _rx_sync(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        records, want_reply, reply_address = env.body
        # A SYNC's sender speaking of itself (joining, leaving) is news only we have heard.
        self._merge_all(records, now, first_hand_from=env.sender)
        if self.me.status is MemberStatus.JOINING and any(
            r.node_id == self.node_id and r.incarnation == self.incarnation for r in records
        ):
            # A table that already holds us: we were admitted (by a seed's answer, or by a
            # member pushing its table to us because our seed died before it answered).
            self._set_my_status(MemberStatus.UP, now)
        if want_reply and reply_address != self.address:
            self._send_sync(reply_address, want_reply=False, now=now)

    def _rx_ping(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        probe_id, reply_address = env.body
        self._send(reply_address, Kind.ACK, (probe_id, self.node_id), _EMPTY)

    def _rx_ping_req(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        requester_probe, requester_address, target = env.body
        address = self._live_address(target)
        if address is None:
            return
        probe_id = self._next_probe_id()
        self._relays[probe_id] = _Relay(
            requester_address, requester_probe, target, now + self.config.probe_timeout_s
        )
        self._send(address, Kind.PING, (probe_id, self.address), _EMPTY)

    def _rx_ack(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        probe_id, target = env.body
        relay = self._relays.pop(probe_id, None)
        if relay is not None:
            self._send(
                relay.requester_address, Kind.ACK, (relay.requester_probe_id, target), _EMPTY
            )
            return
        if self._probes.pop(probe_id, None) == target:
            self.detector.heard(target, now)

    def _rx_listen(self, env: Envelope, _: bytes, __: str | None, ___: float) -> None:
        (topics,) = env.body
        current = self.table.get(env.sender)
        if current is not None and current.incarnation == env.incarnation:
            # The subscriber's streams start where each topic stood when it first told us;
            # a repeated LISTEN (our answer was lost) gets the same answer.
            before = self._peer_topics.get(env.sender, {})
            latest = self.publications.latest
            starts = {t: before[t] if t in before else latest(t) for t in topics}
            self._peer_topics[env.sender] = starts
            positions = [[t, start] for t, start in starts.items()]
            self._send(current.address, Kind.LISTENING, (positions,), _EMPTY)

    def _rx_listening(self, env: Envelope, _: bytes, __: str | None, ___: float) -> None:
        (positions,) = env.body
        self._listen_unanswered.pop(env.sender, None)
        for topic, start in positions:
            if topic in self._topics:
                ready = self.subscriptions.subscription_began(
                    env.sender, env.incarnation, topic, start
                )
                self._deliver_publications(env.sender, topic, ready)

    def _rx_send(self, env: Envelope, payload: bytes, _: str | None, __: float) -> None:
        (name,) = env.body
        self._out.append(fx.Deliver(env.sender, name, payload))

    def _rx_request(self, env: Envelope, payload: bytes, _: str | None, __: float) -> None:
        name, request_id, reply_address = env.body
        self._out.append(fx.Deliver(env.sender, name, payload, request_id, reply_address))

    def _rx_reply(self, env: Envelope, payload: bytes, _: str | None, __: float) -> None:
        request_id, ok = env.body
        if self._requests.pop(request_id, None) is None:
            self.counters["replies_unmatched"] += 1
            return
        if ok:
            self._out.append(fx.CompleteRequest(request_id, True, payload))
        else:
            error = bytes(payload).decode("utf-8", "replace")
            self._out.append(fx.CompleteRequest(request_id, False, error=error))

    def _rx_publish(self, env: Envelope, payload: bytes, topic: str | None, _: float) -> None:
        if topic is None or topic not in self._topics:
            return
        seq, guarantee = env.body
        if seq == 0:
            self._out.append(fx.DeliverPublication(env.sender, topic, payload))
            return
        self._take_publication(env, topic, (seq, guarantee, payload))

    def _rx_republish(self, env: Envelope, payload: bytes, _: str | None, __: float) -> None:
        topic, seq, guarantee = env.body
        self.counters["publications_repaired"] += 1
        if topic in self._topics:
            self._take_publication(env, topic, (seq, guarantee, payload))

    def _rx_lost(self, env: Envelope, _: bytes, __: str | None, ___: float) -> None:
        topic, ranges = env.body
        ready = self.subscriptions.lost(env.sender, env.incarnation, topic, ranges)
        self._deliver_publications(env.sender, topic, ready)

    def _rx_fetch(self, env: Envelope, _: bytes, __: str | None, ___: float) -> None:
        topic, ranges, reply_address = env.body
        found, lost = self.publications.lookup(topic, ranges)
        self.counters["publications_resent"] += len(found)
        for seq, guarantee, payload in found:
            body = (topic, seq, GUARANTEE_CODES[guarantee])
            self._send(reply_address, Kind.REPUBLISH, body, payload)
        if lost:
            self._send(reply_address, Kind.LOST, (topic, [list(r) for r in lost]), _EMPTY)

    def _rx_data(self, env: Envelope, payload: bytes, _: str | None, now: float) -> None:
        arrivals = self.receiver.receive(env.sender, env.incarnation, env.body, payload, now)
        for arrival in arrivals:
            receipt = (env.incarnation, arrival.epoch, arrival.seq)
            self._out.append(fx.Deliver(env.sender, arrival.name, arrival.payload, receipt=receipt))

    def _rx_data_ack(self, env: Envelope, _: bytes, __: str | None, now: float) -> None:
        incarnation, epoch, peer_stream, upto, selective, failures, received_upto, pending = (
            env.body
        )
        receiver = self.table.get(env.sender)
        if incarnation != self.incarnation or (
            receiver is not None and receiver.incarnation != env.incarnation
        ):  # meant for an earlier life of ours, or sent by an earlier life of the receiver
            self.counters["reliable_acks_stale"] += 1
            return
        done = self.sender.acknowledged(
            env.sender, (epoch, peer_stream, upto, selective, received_upto, pending), now
        )
        if not done:
            return
        reasons = dict(failures)
        self._out.append(
            fx.Acknowledged(
                env.sender,
                tuple(
                    (entry.number, AckStatus.FAILED, reasons[entry.seq])
                    if entry.seq in reasons
                    else (entry.number, AckStatus.DELIVERED, "")
                    for entry in done
                ),
            )
        )

    # ================================================================ membership

    def _merge_all(
        self, records: Iterable[Member], now: float, *, first_hand_from: str | None
    ) -> None:
        changes = self.table.merge_all(records, now, first_hand_from)
        for outcome, record, previous in changes:
            if outcome == "applied":
                self._member_changed(record, previous, now)
            elif outcome == "refuted":
                self.counters["suspicions_refuted"] += 1
                self._emit_me_changed(previous)
            elif outcome == "conflict":
                self.counters["node_id_conflicts"] += 1
            elif outcome == "full":
                self.counters["members_refused_table_full"] += 1

    def _check_divergence(self, sender: str, address: str, digest: str, now: float) -> None:
        """Push-pull with a peer whose view has differed from ours for a whole heartbeat.

        Views differ briefly after every change until its gossip lands; only a
        difference that outlives a heartbeat interval is worth a table exchange.
        """
        if digest == self.table.digest():  # computing our digest costs O(members)
            self._mismatch_since.pop(sender, None)
            return
        since = self._mismatch_since.setdefault(sender, now)
        if now - since < self.config.heartbeat_interval_s:
            return
        del self._mismatch_since[sender]
        self._next_divergence_sync = now + self.config.divergence_sync_interval_s
        self.counters["divergence_syncs"] += 1
        self._send_sync(address, want_reply=True, now=now)

    def _member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        self._out.append(fx.MemberChanged(member, previous))
        node_id = member.node_id
        new_life = previous is None or previous.incarnation != member.incarnation
        was_live = previous is not None and previous.status.is_live
        if member.status.is_live and (new_life or not was_live):
            self.detector.watch(node_id, now)
        elif not member.status.is_live:
            self.detector.forget(node_id)
        if member.status is MemberStatus.UP:
            self.detector.refuted(node_id)
        if new_life or not member.status.is_live:
            self._peer_topics.pop(node_id, None)
            self._listening_to.pop(node_id, None)
            self._mismatch_since.pop(node_id, None)
        self._reconcile_connection(member)
        self._delivery_member_changed(member, previous, new_life, now)

    def _reconcile_connection(self, member: Member) -> None:
        node_id = member.node_id
        want = (member.address, member.pub_address) if member.status.is_live else None
        have = self._connected.get(node_id)
        if want == have:
            return
        if have is not None:
            del self._connected[node_id]
            self._out.append(fx.Disconnect(node_id, *have))
        if want is not None:
            self._connected[node_id] = want
            self._out.append(fx.Connect(node_id, *want))

    def _set_my_status(self, status: MemberStatus, now: float) -> None:
        me = self.me
        changed = dataclasses.replace(me, status=status, version=me.version + 1)
        self._emit_me_changed(self.table.set_me(changed, now))

    def _emit_me_changed(self, previous: Member | None) -> None:
        self._out.append(fx.MemberChanged(self.me, previous))

    def _detect(self, now: float) -> None:
        for verdict, node_id in self.detector.step(self.table.live_peers(), now):
            if verdict is Verdict.PROBE:
                self._probe(node_id, now)
                continue
            status = {
                Verdict.SUSPECT: MemberStatus.SUSPECT,
                Verdict.DOWN: MemberStatus.DOWN,
                Verdict.LEFT: MemberStatus.LEFT,
            }[verdict]
            previous = self.table.mark(node_id, status, now)
            if previous is not None:
                self.counters[f"members_{status}"] += 1
                self._member_changed(self.table.get(node_id) or previous, previous, now)

    def _probe(self, node_id: str, now: float) -> None:
        target = self.table.get(node_id)
        if target is None:
            return
        probe_id = self._next_probe_id()
        self._probes[probe_id] = node_id
        self.detector.probing(node_id, now)
        self.counters["probes_sent"] += 1
        self._send(target.address, Kind.PING, (probe_id, self.address), _EMPTY)
        helpers = [m for m in self.table.peers(MemberStatus.UP) if m.node_id != node_id]
        count = min(self.config.indirect_probe_count, len(helpers))
        for helper in self._rng.sample(helpers, count):
            self._send(helper.address, Kind.PING_REQ, (probe_id, self.address, node_id), _EMPTY)

    def _next_probe_id(self) -> int:
        self._probe_seq += 1
        return self._probe_seq

    def _reconnect(self, now: float) -> None:
        """Contact a down member, and seeds outside our view, so that partitions heal."""
        down = self.table.peers(MemberStatus.DOWN)
        if down:
            # The most recently lost are the likeliest to come back; long-dead ones are noise.
            down.sort(key=lambda m: self.table.status_since(m.node_id), reverse=True)
            target = self._rng.choice(down[: self.config.reconnect_candidates_count])
            self._send_sync(target.address, want_reply=True, now=now)
        alone = not self.table.live_peers()
        if self.seeds and (alone or now >= self._next_seed_contact):
            self._next_seed_contact = now + self.config.seed_contact_interval_s
            self._out.append(fx.ResolveSeeds(self.seeds))

    def _expire(self, now: float) -> None:
        config = self.config
        for member in self.table.peers(MemberStatus.DOWN, MemberStatus.LEFT, MemberStatus.REMOVED):
            age = now - self.table.status_since(member.node_id)
            if member.status is MemberStatus.REMOVED:
                if age >= config.removed_tombstone_s:
                    self.table.purge(member.node_id)
                continue
            limit = (
                config.down_member_expiry_s
                if member.status is MemberStatus.DOWN
                else config.left_member_expiry_s
            )
            if age >= limit:
                previous = self.table.mark(member.node_id, MemberStatus.REMOVED, now)
                if previous is not None:
                    self._member_changed(self.table.get(member.node_id) or previous, previous, now)
        for probe_id, relay in list(self._relays.items()):
            if now >= relay.deadline:
                del self._relays[probe_id]
        if len(self._probes) > 4 * max(1, len(self.table)):
            # Answers to probes long given up on will never come; keep the map bounded.
            for probe_id in sorted(self._probes)[: len(self._probes) // 2]:
                del self._probes[probe_id]

    def _expire_requests(self, now: float) -> None:
        for request_id, deadline in list(self._requests.items()):
            if now >= deadline:
                del self._requests[request_id]
                self._out.append(
                    fx.CompleteRequest(request_id, False, error="timed out", timed_out=True)
                )

    # ================================================================ sending

    def _heartbeat(self, now: float) -> None:
        self._next_heartbeat = now + self.config.heartbeat_interval_s
        updates = self.table.take_gossip(self.config.gossip_records_per_heartbeat_count)
        body = (
            encode_member(self.me),
            [encode_member(m) for m in updates],
            self.table.digest(),
            self.publications.positions(),
        )
        self._seq += 1
        header = encode_header(Kind.HEARTBEAT, self.node_id, self.incarnation, self._seq, body)
        self._out.append(fx.Publish((CONTROL_TOPIC, header, _EMPTY)))

    def _announce_directly(self, now: float) -> None:
        """Tell every live peer our new state now, not only on the next heartbeat."""
        self._heartbeat(now)
        for peer in self.table.live_peers():
            self._send_sync(peer.address, want_reply=False, now=now, only_me=True)

    def _send_sync(
        self, address: str, *, want_reply: bool, now: float, only_me: bool = False
    ) -> None:
        records = [self.me] if only_me else self.table.records()
        body = ([encode_member(m) for m in records], want_reply, self.address)
        self._send(address, Kind.SYNC, body, _EMPTY)

    def _tell_listening(self, now: float) -> None:
        for node_id in self._listening_to:
            member = self.table.get(node_id)
            if member is not None and member.status.is_live:
                self._tell_listening_to(node_id, member.address, now)

    def _tell_listening_to(self, node_id: str, address: str, now: float) -> None:
        """Send LISTEN; it is sent again until the publisher answers (LISTENING), since
        where our streams start depends on that answer."""
        self._send(address, Kind.LISTEN, (sorted(self._topics),), _EMPTY)
        self._listen_unanswered[node_id] = now + self.config.listen_retry_s

    def _retry_listen(self, now: float) -> None:
        for node_id, due in list(self._listen_unanswered.items()):
            if now < due:
                continue
            member = self.table.get(node_id)
            if member is None or not member.status.is_live:
                del self._listen_unanswered[node_id]
            else:
                self._tell_listening_to(node_id, member.address, now)

    def _send(
        self, address: str, kind: Kind, body: tuple[Any, ...] | list[Any], payload: bytes
    ) -> None:
        self._seq += 1
        header = encode_header(kind, self.node_id, self.incarnation, self._seq, body)
        self._out.append(fx.Send(address, (header, payload)))

    def _live_address(self, node_id: str) -> str | None:
        member = self.table.get(node_id)
        if member is None or not member.status.is_live:
            return None
        return member.address

    # ================================================================ delivery guarantees

    def _transmit(self, address: str, target: str, entry: Outgoing) -> None:
        sender = self.sender
        code = GUARANTEE_CODES[entry.guarantee]
        body = (entry.name, entry.number, entry.seq, sender.low(target), code, sender.epoch(target))
        self._send(address, Kind.DATA, body, entry.payload)

    def _delivery_timers(self, now: float) -> None:
        for target, entry in self.sender.due_retries(now, self._is_reachable):
            address = self._live_address(target)
            if address is not None:
                self.counters["reliable_retransmits"] += 1
                self._transmit(address, target, entry)
        expired: dict[str, list[tuple[int, AckStatus, str]]] = {}
        for target, entry in self.sender.expired(now):
            why = "no acknowledgement within its ttl"
            expired.setdefault(target, []).append((entry.number, AckStatus.EXPIRED, why))
        for target, outcomes in expired.items():
            self.counters["reliable_expired"] += len(outcomes)
            self._out.append(fx.Acknowledged(target, tuple(outcomes)))
        self._flush(now)

    def _is_reachable(self, node_id: str) -> bool:
        return self._live_address(node_id) is not None

    def _flush(self, now: float) -> None:
        """Send the acknowledgements and fetches batched during this turn."""
        receiver = self.receiver
        for sender in receiver.ack_due:
            stream = receiver.stream(sender)
            member = self.table.get(sender)
            if stream is not None and member is not None:
                body = stream.ack_body(self.config.ack_selective_max_count)
                self._send(member.address, Kind.DATA_ACK, body, _EMPTY)
        receiver.ack_due.clear()
        self.subscriptions.new_gap = False
        for publisher, topic, ranges in self.subscriptions.due_fetches(now):
            address = self._live_address(publisher)
            if address is not None:
                self.counters["publication_fetches"] += 1
                wanted = [list(r) for r in ranges]
                self._send(address, Kind.FETCH, (topic, wanted, self.address), _EMPTY)

    def _heard_topic_positions(
        self, publisher: str, incarnation: int, positions: tuple[tuple[str, int], ...]
    ) -> None:
        """A heartbeat's latest numbers: tail loss shows as a gap. A stream that starts
        here starts provisionally at that number; LISTENING gives the real start."""
        for topic, latest in positions:
            if topic in self._topics:
                ready = self.subscriptions.position(publisher, incarnation, topic, latest, latest)
                self._deliver_publications(publisher, topic, ready)

    def _take_publication(self, env: Envelope, topic: str, item: Publication) -> None:
        # A stream that starts here starts provisionally after this number (see above).
        start = item[0] - 1
        ready = self.subscriptions.publication(env.sender, env.incarnation, topic, item, start)
        self._deliver_publications(env.sender, topic, ready)

    def _deliver_publications(self, publisher: str, topic: str, ready: list[Publication]) -> None:
        for _, _, payload in ready:
            self._out.append(fx.DeliverPublication(publisher, topic, payload))
        losses = self.subscriptions.losses
        if losses:
            for loss in losses:
                self._out.append(
                    fx.PublicationsLost(loss.publisher, loss.topic, loss.first, loss.last)
                )
            losses.clear()

    def _delivery_member_changed(
        self, member: Member, previous: Member | None, new_life: bool, now: float
    ) -> None:
        node_id = member.node_id
        gone = member.status in (MemberStatus.LEFT, MemberStatus.REMOVED)
        if gone:
            why = "receiver left the cluster"
            if member.status is MemberStatus.REMOVED:
                why = "receiver was removed from the cluster"
            failed = self.sender.fail_all(node_id)
            if failed:
                self.counters["reliable_failed_receiver_gone"] += len(failed)
                arrived = f"{why} before confirming; it may have handled it"
                outcomes = tuple(
                    (e.number, AckStatus.FAILED, arrived if e.received else why) for e in failed
                )
                self._out.append(fx.Acknowledged(node_id, outcomes))
            self.receiver.forget(node_id)
        elif member.status.is_live:
            self.sender.resume(node_id, now, restarted=new_life and previous is not None)
        if gone or (new_life and previous is not None):
            # What the old life of this publisher left missing can never be fetched.
            for topic, ready in self.subscriptions.forget_publisher(node_id):
                self._deliver_publications(node_id, topic, ready)
