"""Inputs of the core: things that happened. Past-tense nouns.

Like every class of the core's vocabulary, they are values: compared by
value and never changed once built. They are not frozen dataclasses only
because a frozen dataclass costs about three times as much to build, and
the hot path builds several of these per message.
"""

from __future__ import annotations

import dataclasses

from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.messages import Envelope


@dataclasses.dataclass(slots=True)
class Started:
    """The driver has bound its sockets; the node may start joining."""


@dataclasses.dataclass(slots=True)
class TimerFired:
    """The periodic tick: every time-based step runs from here."""


@dataclasses.dataclass(slots=True)
class EnvelopeReceived:
    """A frame decoded cleanly. ``topic`` is set for user publications."""

    envelope: Envelope
    payload: bytes
    topic: str | None = None


@dataclasses.dataclass(slots=True)
class PublicationsReceived:
    """A batch of publications the driver read and checked on its fast path.

    Unnumbered (AT_MOST_ONCE) ones need no decision of the core (nothing is
    numbered, kept or acknowledged): the driver handed them to the
    application itself, and reports only who was heard (``(sender,
    incarnation)``, in order of first arrival) and how many (``unnumbered``).
    Numbered ones are the core's: ``(publisher, incarnation, topic, seq,
    guarantee, payload)`` each, in arrival order, for one call instead of an
    event per message.
    """

    senders: tuple[tuple[str, int], ...]
    unnumbered: int
    numbered: list[tuple[str, int, str, int, DeliveryGuarantee, bytes]]


@dataclasses.dataclass(slots=True)
class FrameRejected:
    """A frame failed to decode and was dropped."""

    channel: str
    reason: str


@dataclasses.dataclass(slots=True)
class SeedsResolved:
    """Seed names were resolved to addresses (possibly several per name)."""

    addresses: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class TurnEnded:
    """The driver finished a turn of its loop: send what was batched (acks, fetches)."""


@dataclasses.dataclass(slots=True)
class SendRequested:
    """Send to ``target``'s handler ``name``.

    A reliable ``guarantee`` needs ``number`` (the message's id among this
    incarnation's guaranteed sends, chosen by the caller) and ``ttl_s``; its
    outcome comes back as :class:`~zcluster.core.effects.Acknowledged`.
    """

    target: str
    name: str
    payload: bytes
    guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE
    number: int = 0
    ttl_s: float = 0.0


@dataclasses.dataclass(slots=True)
class DeliveryFinished:
    """The handler of a guaranteed message returned (``error`` None) or failed.

    ``receipt`` is the one its :class:`~zcluster.core.effects.Deliver` carried.
    """

    sender: str
    receipt: tuple[int, int, int]
    error: str | None


@dataclasses.dataclass(slots=True)
class Persisted:
    """The store wrote batch ``batch`` of :class:`~zcluster.core.effects.Persist`: what
    waited for it may go."""

    batch: int


@dataclasses.dataclass(slots=True)
class TransactionStarted:
    """Deliver ``payload`` to handler ``name`` of every target, or of none; the outcome
    comes back as :class:`~zcluster.core.effects.TransactionDone` with ``number``."""

    number: int
    targets: tuple[str, ...]
    name: str
    payload: bytes
    timeout_s: float


@dataclasses.dataclass(slots=True)
class PrepareFinished:
    """A validation hook answered :class:`~zcluster.core.effects.Prepare` ``key``:
    ``error`` None takes the message, else it is the veto's reason."""

    key: tuple[str, int, int]
    error: str | None


@dataclasses.dataclass(slots=True)
class RequestStarted:
    request_id: int
    target: str
    name: str
    payload: bytes
    timeout_s: float


@dataclasses.dataclass(slots=True)
class RequestSent:
    """A request the caller's thread sent itself (blocking API): the core keeps it
    pending only, to match its reply and to time it out ``timeout_s`` from now."""

    request_id: int
    timeout_s: float


@dataclasses.dataclass(slots=True)
class ReplyReady:
    """A handler finished; its result (or error text) goes back to the requester."""

    request_id: int
    reply_address: str
    ok: bool
    payload: bytes


@dataclasses.dataclass(slots=True)
class PublishRequested:
    topic: str
    payload: bytes
    guarantee: DeliveryGuarantee = DeliveryGuarantee.AT_MOST_ONCE


@dataclasses.dataclass(slots=True)
class TopicSubscribed:
    """Receive ``topic``; with ``replay``, new streams start from the publisher's buffer."""

    topic: str
    replay: bool = False


@dataclasses.dataclass(slots=True)
class TopicUnsubscribed:
    topic: str


@dataclasses.dataclass(slots=True)
class PrefixSubscribed:
    """Receive every topic that starts with ``prefix``."""

    prefix: str


@dataclasses.dataclass(slots=True)
class PrefixUnsubscribed:
    prefix: str


@dataclasses.dataclass(slots=True)
class LeaveRequested:
    """A graceful stop: announce leaving, then left."""


Event = (
    Started
    | TimerFired
    | EnvelopeReceived
    | PublicationsReceived
    | FrameRejected
    | SeedsResolved
    | TurnEnded
    | SendRequested
    | DeliveryFinished
    | TransactionStarted
    | PrepareFinished
    | Persisted
    | RequestStarted
    | RequestSent
    | ReplyReady
    | PublishRequested
    | TopicSubscribed
    | TopicUnsubscribed
    | PrefixSubscribed
    | PrefixUnsubscribed
    | LeaveRequested
)
