"""Guaranteed direct messages as protocol: DATA out of the outboxes, DATA_ACK back.

The bookkeeping lives in ``outbox.py`` (sending side) and ``inbound.py``
(receiving side); this component connects them to the wire, to time, to
membership (a receiver that leaves fails what it was sent) and to the
application (handler outcomes come back as DeliveryFinished).
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Iterable, Mapping

from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.batches import Batches, Transmit
from zcluster.core.component import Command, Component, NodeContext, Receiver
from zcluster.core.inbound import Arrival, DirectReceiver
from zcluster.core.outbox import DirectSender, Outgoing
from zcluster.core.persistence import DeliveryNoted, SendKept, SendSettled
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import AckStatus, DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus

Outcome = tuple[int, AckStatus, str]
#: a guaranteed message in its stream: (sender incarnation, epoch, seq)
Receipt = tuple[int, int, int]

#: why a guaranteed message that arrives while this node leaves is not handled
REFUSED_LEAVING = "receiver was leaving the cluster; not handled"


class ReliableDelivery(Component):
    def __init__(
        self,
        ctx: NodeContext,
        leaving: Callable[[], bool],
        causal_arrived: Callable[[str, str, bytes, Receipt, float], None],
    ) -> None:
        self._ctx = ctx
        self._leaving = leaving
        #: a CAUSAL message goes there instead of to its handler (causal.py)
        self._causal_arrived = causal_arrived
        self.sender = DirectSender(ctx.config, ctx.rng)
        self.receiver = DirectReceiver(ctx.config, ctx.counters, first_stream_id=ctx.incarnation)
        config = ctx.config
        # Each frame of a batch must pass the receiver's limits: header and payload alike.
        batch_bytes = min(
            config.data_batch_max_bytes, config.max_message_bytes, config.max_header_bytes
        )
        self.batches = Batches(
            config.data_batch_max_count, batch_bytes, self.sender.holds, self.sender.low
        )
        #: guaranteed messages handed to handlers whose outcome has not come back
        self.handlers_running = 0
        #: with a store: exactly-once messages handed over and not finished (what a crash
        #: can cut short), and those waiting for one of them to finish, in arrival order
        self._in_hand = 0
        self._next_in_hand: collections.deque[tuple[str, Arrival, Receipt]] = collections.deque()

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        return {
            msg.Data: self._rx_data,
            msg.DataBatch: self._rx_data_batch,
            msg.DataAck: self._rx_data_ack,
        }

    def commands(self) -> Mapping[type, Command]:
        return {ev.DeliveryFinished: self._on_delivery_finished}

    def accepts(self, node_id: str) -> bool:
        """A guaranteed send may go to a live or down member (it may come back),
        not to an unknown one, nor to one that left or was removed."""
        member = self._ctx.table.get(node_id)
        return member is not None and not member.status.is_gone

    # ------------------------------------------------------------ sending

    def send(self, event: ev.SendRequested, now: float, refusal: str = "") -> Outgoing | None:
        """Take a guaranteed send, or fail it at once (``refusal``, or ``refusal()``'s
        reason); returns its outbox entry if taken."""
        reason = refusal or self.refusal(event.target)
        if reason:
            outcome = (event.number, AckStatus.FAILED, reason)
            self._ctx.emit(fx.Acknowledged(event.target, (outcome,)))
            return None
        entry = self._add(event, now)
        for transmit in self._transmits(event.target, entry):
            self._ctx.send(*transmit)
        # nothing while the receiver is down: it may come back; the retry timer waits
        return entry

    def refusal(self, target: str) -> str:
        """Why a guaranteed send to ``target`` must fail at once ("" if it need not)."""
        if not self.accepts(target):
            return f"{target!r} is not a member (unknown, left or removed)"
        limit = self._ctx.config.outbox_max_count
        if self.sender.count(target) >= limit:
            return f"outbox to {target!r} is full ({limit})"
        return ""

    def take(self, event: ev.SendRequested, now: float) -> list[Transmit]:
        """Put a send that is not refused in its outbox; returns what to transmit now:
        its DATA, or a batch it completed, or nothing (it waits in its batch, or the
        receiver is down)."""
        return self._transmits(event.target, self._add(event, now))

    def _add(self, event: ev.SendRequested, now: float) -> Outgoing:
        target, number, deadline = event.target, event.number, now + event.ttl_s
        name, payload, guarantee = event.name, event.payload, event.guarantee
        entry = self.sender.add(target, number, name, payload, guarantee, deadline, now)
        self._ctx.counters["reliable_sent"] += 1
        kept = SendKept(target, number, name, payload, guarantee, deadline, self._ctx.incarnation)
        self._ctx.persist(kept)
        return entry

    def restore(self, sends: Iterable[SendKept], now: float) -> list[SendKept]:
        """Take back the sends an earlier life had not settled (oldest first): each goes
        out again, to its receiver once it is live; returns those still within their
        ttl (the others leave the store)."""
        restored: list[SendKept] = []
        for kept in sends:
            if kept.deadline <= now:
                self._ctx.counters["state_sends_expired"] += 1
                self._ctx.persist(SendSettled(kept.target, kept.number))
                continue
            target, number, deadline = kept.target, kept.number, kept.deadline
            name, payload, guarantee = kept.name, kept.payload, kept.guarantee
            # sent again under its first id, so that exactly-once knows it (DATA's origin)
            self.sender.add(target, number, name, payload, guarantee, deadline, now, kept.origin)
            restored.append(kept)
        self._ctx.counters["state_sends_restored"] += len(restored)
        return restored

    def _report(self, target: str, outcomes: tuple[Outcome, ...]) -> None:
        """Final statuses: the sender hears them, and the sends leave the store."""
        ctx = self._ctx
        ctx.emit(fx.Acknowledged(target, outcomes))
        if ctx.durable:
            for number, _, _ in outcomes:
                ctx.persist(SendSettled(target, number))

    def _transmits(self, target: str, entry: Outgoing) -> list[Transmit]:
        address = self._ctx.live_address(target)
        if address is None:
            return []
        data = self._data(target, entry)
        if not self._ctx.peers.reads_batches(target):
            return [(address, data, entry.payload)]
        return self._counted(self.batches.add(target, address, data, entry.payload))

    def _counted(self, transmits: list[Transmit]) -> list[Transmit]:
        for _, message, _ in transmits:
            if type(message) is msg.DataBatch:
                self._ctx.counters["reliable_batches_sent"] += 1
        return transmits

    def _data(self, target: str, entry: Outgoing) -> msg.Data:
        low, epoch = self.sender.numbering(target)
        origin = entry.origin if entry.origin != self._ctx.incarnation else 0
        if origin and not self._ctx.peers.reads_extra_fields(target):
            origin = 0  # (a revision 1.0 peer refuses extra fields: it sees a new message)
        return msg.Data(entry.name, entry.number, entry.seq, low, entry.guarantee, epoch, origin)

    def tick(self, now: float) -> None:
        if not self.sender.timers_due(now):
            return
        ctx = self._ctx
        # Expire first: no copy of a message leaves at or after its deadline, which the
        # exactly-once window relies on (config.dedup_retention_s).
        expired: dict[str, list[Outcome]] = {}
        for target, entry in self.sender.expired(now):
            why = "no acknowledgement within its ttl"
            expired.setdefault(target, []).append((entry.number, AckStatus.EXPIRED, why))
        for target, outcomes in expired.items():
            ctx.counters["reliable_expired"] += len(outcomes)
            self._report(target, tuple(outcomes))
        for target, entry in self.sender.due_retries(now, self._is_reachable):
            address = ctx.live_address(target)
            if address is not None:
                ctx.counters["reliable_retransmits"] += 1
                ctx.send(address, self._data(target, entry), entry.payload)

    def _is_reachable(self, node_id: str) -> bool:
        return self._ctx.live_address(node_id) is not None

    def _rx_data_ack(self, env: msg.Envelope, _: bytes, __: str | None, now: float) -> None:
        ctx = self._ctx
        ack = env.message
        assert isinstance(ack, msg.DataAck)
        receiver = ctx.table.get(env.sender)
        if ack.incarnation != ctx.incarnation or (
            receiver is not None and receiver.incarnation != env.incarnation
        ):  # meant for an earlier life of ours, or sent by an earlier life of the receiver
            ctx.counters["reliable_acks_stale"] += 1
            return
        done = self.sender.acknowledged(env.sender, ack, now)
        if not done:
            return
        reasons = dict(ack.failures)
        outcomes = tuple(
            (entry.number, AckStatus.FAILED, reasons[entry.seq])
            if entry.seq in reasons
            else (entry.number, AckStatus.DELIVERED, "")
            for entry in done
        )
        self._report(env.sender, outcomes)

    # ------------------------------------------------------------ receiving

    def _rx_data(self, env: msg.Envelope, payload: bytes, _: str | None, now: float) -> None:
        data = env.message
        assert isinstance(data, msg.Data)
        if self._takes_from(env):
            self._take(env, data, payload, now)

    def _rx_data_batch(self, env: msg.Envelope, payload: bytes, _: str | None, now: float) -> None:
        """Each DATA of the batch in turn, as if it had come alone."""
        batch = env.message
        assert isinstance(batch, msg.DataBatch)
        if not self._takes_from(env):
            return
        self._ctx.counters["reliable_batches_received"] += 1
        low, epoch, start = batch.low, batch.epoch, 0
        for name, number, seq, guarantee, size in batch.records:
            data = msg.Data(name, number, seq, low, guarantee, epoch)
            self._take(env, data, payload[start : start + size], now)
            start += size

    def _takes_from(self, env: msg.Envelope) -> bool:
        """Whether DATA from this sender may be taken at all (counted if not)."""
        ctx = self._ctx
        known = ctx.table.get(env.sender)
        if known is None or known.incarnation != env.incarnation:
            # Not a member we know in that incarnation (a stranger, or news not heard yet):
            # nothing is held or acknowledged for it; a member's copy comes again.
            ctx.counters["reliable_sender_unknown"] += 1
            return False
        if known.status.is_gone:
            # That incarnation left or was removed: its stream is retired, and a copy must
            # not start a new one (it would run again). Not taken, not acknowledged; if a
            # removed sender refutes and comes back, its stream goes on where it was.
            ctx.counters["reliable_sender_gone"] += 1
            return False
        return True

    def _take(self, env: msg.Envelope, data: msg.Data, payload: bytes, now: float) -> None:
        ctx = self._ctx
        leaving = self._leaving()
        room = (
            not ctx.durable
            or not self._next_in_hand  # (one is always taken when none waits)
            or self.receiver.held_bytes.room_for(len(payload))
        )
        for arrival in self.receiver.receive(
            env.sender, env.incarnation, data, payload, now, queued_room=room
        ):
            receipt = (env.incarnation, arrival.epoch, arrival.seq)
            if leaving:
                # Not handled, and the sender told so at once (FAILED): it need not wait
                # for our leave, which may be waiting for it (both stopping together).
                ctx.counters["reliable_refused_leaving"] += 1
                self.receiver.finished(env.sender, receipt, REFUSED_LEAVING)
                continue
            guarantee = arrival.guarantee
            if guarantee is DeliveryGuarantee.CAUSAL:
                self._causal_arrived(env.sender, arrival.name, arrival.payload, receipt, now)
            elif guarantee is DeliveryGuarantee.EXACTLY_ONCE and ctx.durable:
                # waiting for its turn, charged to the hold-back's bytes (room checked)
                self.receiver.held_bytes.used += len(arrival.payload)
                self._next_in_hand.append((env.sender, arrival, receipt))
                self._hand_over(now)
            else:
                self.deliver(env.sender, arrival.name, arrival.payload, receipt)

    def _hand_over(self, now: float) -> None:
        """Exactly-once messages with a store: each is noted as handed over before it is
        (after a crash it is not run again), at most ``exactly_once_in_hand_max_count``
        at a time, so that a crash cuts few short."""
        waiting, limit = self._next_in_hand, self._ctx.config.exactly_once_in_hand_max_count
        while waiting and self._in_hand < limit:
            sender, arrival, receipt = waiting.popleft()
            self.receiver.held_bytes.used -= len(arrival.payload)
            self._in_hand += 1
            noted = DeliveryNoted(sender, arrival.origin, arrival.number, False, None, now)
            self._ctx.persist(noted)
            self.deliver(sender, arrival.name, arrival.payload, receipt, durable=True)

    def deliver(
        self, sender: str, name: str, payload: bytes, receipt: Receipt, *, durable: bool = False
    ) -> None:
        """Hand a guaranteed message to its handler (``durable``: once this turn's records
        are written); its outcome comes back as DeliveryFinished."""
        self._ctx.counters["reliable_delivered"] += 1
        self.handlers_running += 1
        effect = fx.Deliver(sender, name, payload, receipt=receipt)
        if durable:
            self._ctx.defer(effect)
        else:
            self._ctx.emit(effect)

    def refuse(self, sender: str, receipt: Receipt, why: str) -> None:
        """A guaranteed message that arrived will not reach its handler: its sender is
        told so (FAILED, ``why``)."""
        self.receiver.finished(sender, receipt, why)

    def _on_delivery_finished(self, event: ev.DeliveryFinished, now: float) -> None:
        self.handlers_running = max(0, self.handlers_running - 1)
        if event.error is not None:
            self._ctx.counters["reliable_handler_failures"] += 1
        message_id = self.receiver.finished(event.sender, event.receipt, event.error)
        if message_id is not None and self._ctx.durable:
            (origin, number), sender, error = message_id, event.sender, event.error
            self._ctx.persist(DeliveryNoted(sender, origin, number, True, error, now))
            self._in_hand = max(0, self._in_hand - 1)
            self._hand_over(now)

    @property
    def flush_due(self) -> bool:
        return bool(self.receiver.ack_due) or bool(self.batches)

    def end_turn(self, now: float) -> None:
        """Send the batches of this turn (their receivers are live: ``member_changed``
        drops the batch of one that is not), and the acknowledgements batched during
        it: one per sender."""
        ctx, receiver = self._ctx, self.receiver
        if self.batches.has_open:
            for transmit in self._counted([t for _, t in self.batches.end()]):
                ctx.send(*transmit)
        if not receiver.ack_due:
            return
        for sender in receiver.ack_due:
            stream = receiver.stream(sender)
            member = ctx.table.get(sender)
            if stream is not None and member is not None and not member.status.is_gone:
                ctx.send(member.address, stream.ack(ctx.config.ack_selective_max_count))
        receiver.ack_due.clear()

    def sends_pending(self) -> int:
        """Guaranteed sends to live members not yet acknowledged or failed (those to a
        down member wait for it to come back, or expire)."""
        table = self._ctx.table
        pending = 0
        for target, count in self.sender.counts():
            member = table.get(target)
            if member is not None and member.status.is_live:
                pending += count
        return pending

    # ------------------------------------------------------------ membership

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        node_id = member.node_id
        restarted = previous is not None and previous.incarnation != member.incarnation
        if restarted or not member.status.is_live:
            # What waits in its batch stays in the outbox, resent when it can be (a
            # restarted receiver may not read batches any more).
            self.batches.drop(node_id)
        if member.status.is_gone:
            self._fail_all(member)
            self.receiver.retire(node_id)
        elif member.status.is_live:
            self.sender.resume(node_id, now, restarted=restarted)

    def _fail_all(self, member: Member) -> None:
        why = "receiver left the cluster"
        if member.status is MemberStatus.REMOVED:
            why = "receiver was removed from the cluster"
        failed = self.sender.fail_all(member.node_id)
        if not failed:
            return
        self._ctx.counters["reliable_failed_receiver_gone"] += len(failed)
        arrived = f"{why} before confirming; it may have handled it"
        outcomes = tuple(
            (e.number, AckStatus.FAILED, arrived if e.received else why) for e in failed
        )
        self._report(member.node_id, outcomes)
