"""What the components of one node share, and the interface each implements.

A component owns one concern of the protocol (membership, failure
detection, connections, direct messages, reliable delivery, publishing,
subscribing). ``NodeCore`` routes events and received messages to the
components that declared them, and tells every component about time,
membership changes and the end of a loop turn. Components never call each
other's internals: what one needs from another is passed in when the node
is built, as a narrow function.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from zcluster.config import NodeConfig
from zcluster.core import effects as fx
from zcluster.core.limits import TokenBucket
from zcluster.core.membership import MembershipTable
from zcluster.core.peers import Peers
from zcluster.errors import UnsupportedGuarantee
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus, Tags

#: what this core can honour; anything else is refused at its door
SUPPORTED_GUARANTEES = frozenset(
    {
        DeliveryGuarantee.AT_MOST_ONCE,
        DeliveryGuarantee.AT_LEAST_ONCE,
        DeliveryGuarantee.EXACTLY_ONCE,
        DeliveryGuarantee.ORDERED,
        DeliveryGuarantee.CAUSAL,
    }
)


def check_guarantee(guarantee: DeliveryGuarantee) -> DeliveryGuarantee:
    """Raise UnsupportedGuarantee unless this core can honour ``guarantee``."""
    if guarantee not in SUPPORTED_GUARANTEES:  # before any state changes: the core's door
        raise UnsupportedGuarantee(
            f"DeliveryGuarantee.{guarantee.name} is not a guarantee of send() or publish(): "
            "for transactional delivery use send_transaction(); else AT_LEAST_ONCE, "
            "EXACTLY_ONCE, ORDERED or CAUSAL"
        )
    return guarantee


#: a receiver of one message kind: (envelope, payload, user topic or None, now)
Receiver = Callable[[msg.Envelope, bytes, str | None, float], None]
#: a handler of one input event: (event, now)
Command = Callable[[Any, float], None]


class NodeContext:
    """The state every component of one node reads: identity, configuration, the
    member table, counters, randomness, and the list effects are appended to."""

    def __init__(
        self,
        node_id: str,
        incarnation: int,
        address: str,
        pub_address: str,
        config: NodeConfig,
        rng: random.Random,
        capabilities: msg.Capabilities,
        tags: Tags = (),
    ) -> None:
        self.node_id = node_id
        self.incarnation = incarnation
        self.address = address
        self.config = config
        self.rng = rng
        me = Member(node_id, incarnation, 0, MemberStatus.JOINING, address, pub_address, tags)
        self.table = MembershipTable(
            me,
            config.gossip_retransmit_count,
            config.members_max_count,
            config.suspect_confirmations_count + 1,
        )
        #: what this node announces it understands (protocol.capabilities.SUPPORTED)
        self.capabilities = capabilities
        #: what members announced they understand; which live peers speak swim
        self.peers = Peers(self.table, capabilities, config.members_max_count)
        #: counters for metrics: frames rejected, messages sent and received, ...
        self.counters: Counter[str] = Counter()
        self.out: list[fx.Effect] = []
        #: reports a change of a member's record to every component (set by NodeCore)
        self.member_changed: Callable[[Member, Member | None, float], None] = _unset
        #: reports that this node refuted a suspicion of itself (set by NodeCore)
        self.refuted: Callable[[], None] = _nothing
        self._stranger_answers = TokenBucket(
            config.stranger_answers_per_s, config.stranger_answers_per_s
        )
        self._table_answers = TokenBucket(config.table_answers_per_s, config.table_answers_per_s)
        #: whether a durable store keeps what must survive a crash (persistence.py)
        self.durable = False
        #: records of this turn for the store, and effects that wait for them
        self.records: list[Any] = []
        self.deferred: list[fx.Effect] = []

    @property
    def me(self) -> Member:
        return self.table.me

    def emit(self, effect: fx.Effect) -> None:
        self.out.append(effect)

    def send(self, address: str, message: msg.Message, payload: bytes = b"") -> None:
        """A direct message to the ROUTER at ``address``."""
        self.out.append(fx.Send(address, message, payload))

    def persist(self, record: Any) -> None:
        """Note a ``persistence.Record`` for the store (nothing without one)."""
        if self.durable:
            self.records.append(record)

    def defer(self, effect: fx.Effect) -> None:
        """Emit ``effect`` once this turn's records are durable (at once without a store)."""
        if self.durable:
            self.deferred.append(effect)
        else:
            self.out.append(effect)

    def live_address(self, node_id: str) -> str | None:
        """The ROUTER address of a live member; None if it is not one."""
        member = self.table.get(node_id)
        if member is None or not member.status.is_live:
            return None
        return member.address

    def merge(
        self,
        records: Iterable[Member],
        now: float,
        *,
        sender: str,
        relay: bool = False,
        queue_sender: bool = False,
    ) -> None:
        """Apply the records ``sender`` told us and report what changed; ``relay`` what
        gossip brought (what is news to a node that is joining is not news to the
        cluster), ``queue_sender`` what a SYNC's sender says of itself (see merge_all)."""
        relay = relay and self.table.me.status is not MemberStatus.JOINING
        changes = self.table.merge_all(records, now, sender, relay=relay, queue_sender=queue_sender)
        for outcome, record, previous in changes:
            if outcome == "applied":
                self.member_changed(record, previous, now)
            elif outcome == "refuted":
                self.counters["suspicions_refuted"] += 1
                self.emit(fx.MemberChanged(self.me, previous))
                self.refuted()
            elif outcome == "conflict":
                self.counters["node_id_conflicts"] += 1
            elif outcome == "unrefutable":
                self.counters["suspicions_unrefutable"] += 1
            elif outcome == "full":
                self.counters["members_refused_table_full"] += 1
            elif outcome == "reserved":
                self.counters["records_refused_reserved_version"] += 1

    def answer_address(self, envelope: msg.Envelope, named: str, now: float) -> str | None:
        """Where an answer to ``envelope`` goes, whose sender ``named`` a reply address: the
        address our table holds for the sender in that incarnation, whatever it names
        (no reflection to a third party); to a stranger (a joining node, a restart not
        yet known), the named one, within ``stranger_answers_per_s`` for all strangers
        together. None: not answered (counted)."""
        member = self.table.get(envelope.sender)
        if member is not None and member.incarnation == envelope.incarnation:
            return member.address
        if self._stranger_answers.take(now):
            return named
        self.counters["answers_refused_stranger_rate"] += 1
        return None

    def may_send_table(self, now: float) -> bool:
        """Whether an answer may carry our member table now (``table_answers_per_s``)."""
        if self._table_answers.take(now):
            return True
        self.counters["table_answers_withheld"] += 1
        return False

    def is_current(self, envelope: msg.Envelope) -> bool:
        """The sender is a member we know, in the incarnation that sent this."""
        member = self.table.get(envelope.sender)
        return member is not None and member.incarnation == envelope.incarnation


def _unset(member: Member, previous: Member | None, now: float) -> None:
    raise AssertionError("NodeContext.member_changed is set by NodeCore")


def _nothing() -> None:
    """Until NodeCore sets a hook."""


class Component:
    """One concern of the protocol; every method has a do-nothing default."""

    def receivers(self) -> Mapping[type[msg.Message], Receiver]:
        """The message kinds this component acts on, by message class."""
        return {}

    def commands(self) -> Mapping[type, Command]:
        """The input events this component acts on, by event class."""
        return {}

    def tick(self, now: float) -> None:
        """The periodic timer: time-based steps."""

    def member_changed(self, member: Member, previous: Member | None, now: float) -> None:
        """A member's record changed (``previous`` None: newly seen)."""

    @property
    def flush_due(self) -> bool:
        """Work batched during this turn waits for ``end_turn``."""
        return False

    def end_turn(self, now: float) -> None:
        """The driver finished a turn of its loop: send what was batched."""
