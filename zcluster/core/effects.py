"""Outputs of the core: what the driver must do. Imperatives.

Values, never changed once built (not frozen only for speed; see events.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from zcluster.protocol.guarantees import AckStatus
from zcluster.protocol.members import Member
from zcluster.protocol.messages import Dependency, Message, Position


@dataclasses.dataclass(slots=True)
class Send:
    """Send ``message`` (with ``payload``) to the ROUTER at ``address``."""

    address: str
    message: Message
    payload: bytes


@dataclasses.dataclass(slots=True)
class Publish:
    """Send ``message`` on our PUB under user ``topic`` (None: membership traffic)."""

    topic: str | None
    message: Message
    payload: bytes


@dataclasses.dataclass(slots=True)
class Connect:
    """Open a DEALER to the member's ROUTER and subscribe to its PUB."""

    node_id: str
    address: str
    pub_address: str


@dataclasses.dataclass(slots=True)
class Disconnect:
    node_id: str
    address: str
    pub_address: str


@dataclasses.dataclass(slots=True)
class SetSubscription:
    """Add or remove the SUB filter of a user topic (``prefix``: of every topic that
    starts with it)."""

    topic: str
    subscribed: bool
    prefix: bool = False


@dataclasses.dataclass(slots=True)
class Deliver:
    """Call the handler ``name``; when ``request_id`` is set, its result is the reply.

    For a guaranteed message ``receipt`` names it in its stream (sender
    incarnation, epoch, seq): report the handler's outcome with
    :class:`~zcluster.core.events.DeliveryFinished`, which carries it back.
    """

    sender: str
    name: str
    payload: bytes
    request_id: int | None = None
    reply_address: str | None = None
    receipt: tuple[int, int, int] | None = None


@dataclasses.dataclass(slots=True)
class DeliverPublications:
    """Publications of one stream to deliver in this order: one effect for all that
    became deliverable together (a run read at once, a gap filled)."""

    sender: str
    topic: str
    payloads: list[bytes]


@dataclasses.dataclass(slots=True)
class Acknowledged:
    """Guaranteed sends reached a final status: ``(number, status, reason)`` each."""

    receiver: str
    outcomes: tuple[tuple[int, AckStatus, str], ...]


@dataclasses.dataclass(slots=True)
class PublicationsLost:
    """Publications ``first..last`` of ``publisher`` on ``topic`` can never be delivered."""

    publisher: str
    topic: str
    first: int
    last: int


@dataclasses.dataclass(slots=True)
class CausalGap:
    """A CAUSAL message was delivered before some of the messages it depends on, which
    did not come in time or found the hold-back full (``missing``: those not met)."""

    message: Dependency
    missing: tuple[Dependency, ...]


@dataclasses.dataclass(slots=True)
class Prepare:
    """Ask handler ``name``'s validation hook whether it takes ``payload``, as part of
    transaction ``key`` (coordinator, incarnation, number); answer with
    :class:`~zcluster.core.events.PrepareFinished`."""

    key: tuple[str, int, int]
    name: str
    payload: bytes


@dataclasses.dataclass(slots=True)
class TransactionDone:
    """A transaction this node coordinates is decided: committed, or aborted and why
    (``vetoes``: (target, reason); ``unanswered``: targets that did not vote)."""

    number: int
    committed: bool
    reason: str
    vetoes: tuple[tuple[str, str], ...]
    unanswered: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class TransactionInDoubt:
    """A transaction this node had prepared was aborted without its decision, which did
    not come within ``transaction_in_doubt_max_s``."""

    key: tuple[str, int, int]
    name: str


@dataclasses.dataclass(slots=True)
class Persist:
    """Write these records to the durable store, in one batch, in order (they are
    ``zcluster.core.persistence.Record`` values); then feed
    :class:`~zcluster.core.events.Persisted` with ``batch``. Batches are written in the
    order they come: a written batch means every earlier one is."""

    batch: int
    records: tuple[Any, ...]


@dataclasses.dataclass(slots=True)
class CompleteRequest:
    """A request ended: ``ok`` with the reply payload, or failed with ``error``."""

    request_id: int
    ok: bool
    payload: bytes = b""
    error: str = ""
    timed_out: bool = False


@dataclasses.dataclass(slots=True)
class MemberChanged:
    """A member's record changed; ``previous`` is None for a newly seen member."""

    member: Member
    previous: Member | None


@dataclasses.dataclass(slots=True)
class ResolveSeeds:
    """Resolve seed names (DNS may give several addresses) and report SeedsResolved."""

    seeds: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class Drained:
    """A graceful leave stopped waiting for accepted work (all done, or out of time) and
    now announces it: what was confirmed, and what was not."""

    #: subscribers that confirmed having every publication (FLUSHED)
    subscribers_confirmed: tuple[str, ...]
    #: subscribers that did not confirm in time, or became unreachable meanwhile
    subscribers_unconfirmed: tuple[str, ...]
    #: for each of those, our last number on each numbered topic it reads: it may lack any
    #: publication up to it
    at_stake: tuple[tuple[str, tuple[Position, ...]], ...]
    #: guaranteed sends neither acknowledged nor failed
    sends_unacknowledged: int
    #: handlers of guaranteed messages still running
    handlers_unfinished: int
    #: seconds the drain took
    waited_s: float


@dataclasses.dataclass(slots=True)
class JoinRefused:
    """A seed refused to admit this node, saying why (it keeps trying meanwhile)."""

    reason: str


Effect = (
    Send
    | Publish
    | Connect
    | Disconnect
    | SetSubscription
    | Deliver
    | DeliverPublications
    | Acknowledged
    | PublicationsLost
    | CausalGap
    | Prepare
    | TransactionDone
    | TransactionInDoubt
    | Persist
    | CompleteRequest
    | MemberChanged
    | ResolveSeeds
    | Drained
    | JoinRefused
)
