"""NodeCore: one node's whole protocol as a pure state machine.

``effects = core.handle(event, now)``: the driver (real sockets) or the
simulated network feeds events with the current time and carries out the
effects in order. The core holds no sockets, reads no clock and draws
randomness only from the ``random.Random`` it is given.

NodeCore itself only routes: each concern is a component (``component.py``)
that declares the events and message kinds it acts on. The order of the
components is the order in which they hear about time, membership changes
and the end of a turn.
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from collections.abc import Callable
from typing import Any

from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.admission import Admission
from zcluster.core.batches import Transmit
from zcluster.core.beacons import Beacons
from zcluster.core.causal import CausalDelivery
from zcluster.core.component import Component, NodeContext, Receiver, check_guarantee
from zcluster.core.connections import Connections
from zcluster.core.departure import Departure
from zcluster.core.direct import DirectMessages
from zcluster.core.dissemination import Dissemination
from zcluster.core.gossip import Gossip
from zcluster.core.persistence import Persistence, RestoredState, SendKept
from zcluster.core.probes import FailureDetection
from zcluster.core.publisher import Publisher
from zcluster.core.reliable import ReliableDelivery
from zcluster.core.subscriber import Subscriber
from zcluster.core.transactions import Transactions
from zcluster.protocol import capabilities
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, Tags

CAUSAL = DeliveryGuarantee.CAUSAL


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
        capabilities: msg.Capabilities = SUPPORTED,
        tags: Tags = (),
        durable: bool = False,
    ) -> None:
        self.config = config or NodeConfig()
        self.node_id = node_id
        self.incarnation = incarnation
        self.address = address
        ctx = NodeContext(
            node_id,
            incarnation,
            address,
            pub_address,
            self.config,
            rng or random.Random(incarnation),
            capabilities,
            tags,
        )
        ctx.member_changed = self._member_changed
        ctx.durable = durable
        self._ctx = ctx
        self.table = ctx.table
        self.counters: Counter[str] = ctx.counters
        self.connections = Connections(ctx)
        self.publisher = Publisher(
            ctx,
            self.connections.is_connected,
            lambda body: self.causal.stamp(body),
            lambda *publication: self.causal.published(*publication),
        )
        self.reliable = ReliableDelivery(
            ctx, self._leaving, lambda *arrival: self.causal.direct_arrived(*arrival)
        )
        self.admission = Admission(ctx, lambda member: self.gossip.ask(member))
        self.gossip = Gossip(ctx, tuple(seeds), self.publisher.positions, self.admission.admits)
        self.departure = Departure(
            ctx,
            started=lambda: self.gossip.started,
            listening=self.publisher.listening,
            latest=self.publisher.publications.latest,
            handlers_running=lambda: self.reliable.handlers_running,
            sends_pending=self.reliable.sends_pending,
            announce_leaving=self.gossip.announce_leaving,
        )
        self.dissemination = Dissemination(ctx, self.gossip.push_pull)
        self.detection = FailureDetection(ctx, self.dissemination.piggyback, self.gossip.push_pull)
        ctx.refuted = self.detection.health.worse
        self.beacons = Beacons(ctx, self.publisher.positions)
        self.subscriber = Subscriber(
            ctx, lambda *arrival: self.causal.publication_arrived(*arrival)
        )
        self.causal = CausalDelivery(
            ctx,
            self.reliable.receiver.stream,
            self.subscriber.subscriptions.stream,
            self.subscriber.reads,
            self.reliable.deliver,
            self.reliable.refuse,
        )
        self.direct = DirectMessages(ctx, self._leaving)
        self.transactions = Transactions(ctx, self._leaving)
        self._components: tuple[Component, ...] = (
            self.admission,
            self.gossip,
            self.departure,
            self.dissemination,
            self.detection,
            self.beacons,
            self.publisher,
            self.connections,
            self.reliable,
            self.subscriber,
            self.causal,
            self.direct,
            self.transactions,
            Persistence(ctx),  # last: the records of every other component's turn end
        )
        self._commands: dict[type, Callable[[Any, float], None]] = {
            ev.TimerFired: self._on_timer,
            ev.EnvelopeReceived: self._on_envelope,
            ev.PublicationsReceived: self._on_publications,
            ev.FrameRejected: self._on_rejected,
            ev.TurnEnded: self._on_turn_ended,
            ev.SendRequested: self._on_send,
        }
        #: the components that batch work per turn (asked after every event: keep it short)
        self._flushers = tuple(
            c for c in self._components if type(c).flush_due is not Component.flush_due
        )
        #: the components with time-based steps, and those that send what they batched
        self._tickers = tuple(c for c in self._components if type(c).tick is not Component.tick)
        self._enders = tuple(
            c for c in self._components if type(c).end_turn is not Component.end_turn
        )
        #: AUTH is taken by the runtime (runtime/secured.py) in the modes that use it;
        #: one that reaches the core came where nobody asked for it
        self._receivers: dict[type[msg.Message], tuple[Receiver, ...]] = {
            msg.Auth: (self._unexpected_auth,)
        }
        for component in self._components:
            for event_type, command in component.commands().items():
                assert event_type not in self._commands, event_type
                self._commands[event_type] = command
            for message_type, receiver in component.receivers().items():
                self._receivers[message_type] = (*self._receivers.get(message_type, ()), receiver)

    # ================================================================ API

    def handle(self, event: ev.Event, now: float) -> list[fx.Effect]:
        """Feed one event; returns the effects to carry out, in order.

        Raises UnsupportedGuarantee, before any change, for a send or a
        publication asking for a guarantee this core cannot honour.
        """
        self._commands[type(event)](event, now)
        out, self._ctx.out = self._ctx.out, []
        return out

    def restore(self, state: RestoredState, now: float) -> list[SendKept]:
        """Take back what an earlier life left in the durable store, before ``Started``;
        returns the guaranteed sends that go out again (each one's outcome comes as for
        any send, by its number)."""
        interrupted = self.reliable.receiver.restore(state.deliveries, now)
        self.counters["state_deliveries_interrupted"] += interrupted
        self.counters["state_deliveries_restored"] += len(state.deliveries)
        self.transactions.restore(state.decisions, now)
        self.transactions.restore_participation(state.prepared, state.applied, now)
        self.counters["state_decisions_restored"] += len(state.decisions)
        return self.reliable.restore(state.sends, now)

    def discard_effects(self) -> None:
        """Forget what an event that raised had decided: the host drops that event."""
        self._ctx.out = []

    @property
    def me(self) -> Member:
        return self.table.me

    @property
    def records_carry_tags(self) -> bool:
        """Whether member records may carry their tags (every member reads them)."""
        return self._ctx.peers.records_carry_tags

    @property
    def one_frame_publications(self) -> bool:
        """Whether publications may be sent in one frame (every member reads that form)."""
        return self._ctx.peers.one_frame_publications

    @property
    def has_left(self) -> bool:
        return self.gossip.has_left

    @property
    def seeds(self) -> tuple[str, ...]:
        return self.gossip.seeds

    def members(self) -> list[Member]:
        return sorted(self.table.records(), key=lambda m: m.node_id)

    def member(self, node_id: str) -> Member | None:
        return self.table.get(node_id)

    def digest(self) -> str:
        return self.table.digest()

    def capabilities_of(self, node_id: str) -> tuple[str, ...] | None:
        """What the member announced it understands (None: not heard yet)."""
        return self._ctx.peers.capabilities_of(node_id)

    def subscribers(self, topic: str) -> frozenset[str]:
        return self.publisher.subscribers(topic)

    def listeners(self) -> frozenset[str]:
        return self.publisher.listeners()

    @property
    def topics(self) -> frozenset[str]:
        return self.subscriber.topics

    @property
    def flush_due(self) -> bool:
        """Acknowledgements or fetches wait for the end of this turn (feed TurnEnded)."""
        for component in self._flushers:  # noqa: SIM110 - any() and a generator cost 3x
            if component.flush_due:
                return True
        return False

    def accepts_guaranteed_send(self, node_id: str) -> bool:
        return self.reliable.accepts(node_id)

    def outbox_count(self, node_id: str) -> int:
        """Guaranteed messages to ``node_id`` not yet acknowledged, expired or failed."""
        return self.reliable.sender.count(node_id)

    def take_send(self, event: ev.SendRequested, now: float) -> list[Transmit] | None:
        """Take a guaranteed send outside ``handle``, for a host's fast path (which holds
        whatever serializes its calls of this core).

        Returns what to transmit now, as the Send effects of ``handle`` would carry it:
        nothing while the receiver is down (the send is kept, as ``handle`` keeps it)
        or while the send waits in its batch (``sends_waiting``: feed ``TurnEnded`` soon).
        None if the core refuses the send: ``handle`` it, which reports why.
        """
        guarantee = check_guarantee(event.guarantee)
        if not guarantee.is_reliable or guarantee is CAUSAL or self.reliable.refusal(event.target):
            return None  # (a CAUSAL send is stamped with what this core knows: handle it)
        return self.reliable.take(event, now)

    @property
    def sends_waiting(self) -> bool:
        """Guaranteed sends wait in a batch for the end of this turn (feed TurnEnded)."""
        return bool(self.reliable.batches)

    def can_publish_guaranteed(self, topic: str) -> bool:
        return self.publisher.publications.can_take(topic)

    # ================================================================ routing

    def _on_timer(self, _: ev.TimerFired, now: float) -> None:
        if not self.gossip.started:
            return
        for component in self._tickers:
            component.tick(now)
        self._on_turn_ended(None, now)

    def _unexpected_auth(self, envelope: msg.Envelope, *_: object) -> None:
        self.counters["auth_unexpected"] += 1

    def _on_envelope(self, event: ev.EnvelopeReceived, now: float) -> None:
        envelope = event.envelope
        self.counters["messages_received"] += 1
        self.detection.heard(envelope, now)
        for receiver in self._receivers[type(envelope.message)]:
            receiver(envelope, event.payload, event.topic, now)

    def _on_publications(self, event: ev.PublicationsReceived, now: float) -> None:
        self.counters["messages_received"] += event.unnumbered + len(event.numbered)
        self.counters["publications_fast_path"] += event.unnumbered + len(event.numbered)
        for sender, incarnation in event.senders:
            self.detection.heard_from(sender, incarnation, now)
        if event.numbered:
            self.subscriber.take_numbered(event.numbered, now)

    def _on_rejected(self, event: ev.FrameRejected, _: float) -> None:
        self.counters["frames_rejected"] += 1
        self.counters[f"frames_rejected_{event.channel}"] += 1

    def _on_turn_ended(self, _: ev.TurnEnded | None, now: float) -> None:
        for component in self._enders:
            component.end_turn(now)

    def _on_send(self, event: ev.SendRequested, now: float) -> None:
        guarantee = check_guarantee(event.guarantee)
        if guarantee is CAUSAL:
            self._send_causal(event, now)
        elif guarantee.is_reliable:
            self.reliable.send(event, now)
        else:
            self.direct.send(event)

    def _send_causal(self, event: ev.SendRequested, now: float) -> None:
        target = event.target
        refusal = ""
        if self._ctx.peers.lacks(target, capabilities.CAUSAL):
            refusal = f"{target!r} runs a release that does not read CAUSAL messages"
        stamped = dataclasses.replace(event, payload=self.causal.stamp(event.payload))
        limit = self.config.max_message_bytes
        if not refusal and len(stamped.payload) > limit:
            refusal = f"the message with its CAUSAL stamp exceeds max_message_bytes ({limit})"
        entry = self.reliable.send(stamped, now, refusal)
        if entry is not None:
            self.causal.sent_direct(target, self.reliable.sender.epoch(target), entry.seq, now)

    def _leaving(self) -> bool:
        return self.departure.leaving

    def _member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        self._ctx.peers.member_changed(member)
        self._ctx.emit(fx.MemberChanged(member, previous))
        for component in self._components:
            component.member_changed(member, previous, now)
