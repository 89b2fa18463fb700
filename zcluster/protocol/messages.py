"""The protocol messages: one frozen dataclass per kind.

The core consumes and emits these; ``zcluster.wire`` turns them into
frames and back. Field order is the order on the wire (``docs/protocol.md``
section 4). Integers are unsigned 64-bit unless said otherwise.

Messages are values: compared by value, never changed once built. They are
not frozen dataclasses only because a frozen dataclass costs about three
times as much to build, and every message sent or received builds one.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import ClassVar

from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member

#: (first, last) sequence numbers, inclusive
Range = tuple[int, int]
#: (topic, sequence number)
Position = tuple[str, int]
#: longest failure reason a DATA_ACK carries (longer ones are cut by the receiver)
MAX_REASON_CHARS = 1024
#: most DATA one DATA_BATCH carries
MAX_BATCH_COUNT = 1024
#: most suspecters one piece of news names
MAX_SUSPECTERS_COUNT = 64
#: one DATA of a DATA_BATCH: (handler name, number, stream seq, guarantee, payload size)
DataRecord = tuple[str, int, int, DeliveryGuarantee, int]
#: capability names a node announces (sorted, so encodings and traces are stable)
Capabilities = tuple[str, ...]
#: a CAUSAL message's dependency (revision 1.6): (origin, stream kind, channel, incarnation,
#: epoch, seq): the origin's message ``seq`` of that stream happened before this one
Dependency = tuple[str, int, str, int, int, int]
#: stream kinds of a Dependency: a direct stream (channel: the receiver's node id), a topic
#: (channel: the topic; epoch 0)
DIRECT_STREAM = 0
TOPIC_STREAM = 1
#: (node id, incarnation, capabilities): what that incarnation of a member announced
Announcement = tuple[str, int, Capabilities]


class Kind(enum.IntEnum):
    """Message kinds. Values are part of the protocol; never renumber."""

    HEARTBEAT = 1
    SYNC = 3
    PING = 4
    PING_REQ = 5
    ACK = 6
    LISTEN = 7
    SEND = 10
    REQUEST = 11
    REPLY = 12
    PUBLISH = 13
    DATA = 14
    DATA_ACK = 15
    FETCH = 16
    REPUBLISH = 17
    LOST = 18
    LISTENING = 19
    NACK = 20
    GOSSIP = 21
    BEACON = 22
    DATA_BATCH = 23
    FLUSH = 24
    FLUSHED = 25
    REFUSE = 26
    AUTH = 27
    PREPARE = 28
    TXN = 29


@dataclasses.dataclass(slots=True)
class News:
    """A member record as probes and gossip carry it (capability ``swim``), with what the
    sender knows of that incarnation: its ``capabilities`` (empty: unknown) and, for a
    SUSPECT record, the members known to suspect it at that version (``suspecters``)."""

    member: Member
    capabilities: Capabilities
    suspecters: tuple[str, ...]


@dataclasses.dataclass(slots=True)
class Heartbeat:
    """On PUB, every ``heartbeat_interval_s``: the sender's record, gossip, view digest,
    its latest number on recently published topics, and its capabilities."""

    KIND: ClassVar[Kind] = Kind.HEARTBEAT
    me: Member
    updates: tuple[Member, ...]
    digest: str
    positions: tuple[Position, ...]
    capabilities: Capabilities = ()
    #: not a body field: the member it is addressed to, on its personal frame (None: to
    #: every subscriber, on the control topic)
    to: str | None = None


@dataclasses.dataclass(slots=True)
class Sync:
    """Push (and with ``want_reply``, pull) member records: join and anti-entropy."""

    KIND: ClassVar[Kind] = Kind.SYNC
    records: tuple[Member, ...]
    want_reply: bool
    reply_address: str
    capabilities: Capabilities = ()
    #: optional (``swim``): what the sender knows members announced; None: not sent
    announcements: tuple[Announcement, ...] | None = None


@dataclasses.dataclass(slots=True)
class Ping:
    """A probe. Between ``swim`` members it carries gossip (``news``) and the sender's
    view digest; ``view`` None is the revision 1.0 form, without them."""

    KIND: ClassVar[Kind] = Kind.PING
    probe_id: int
    reply_address: str
    news: tuple[News, ...] = ()
    view: str | None = None


@dataclasses.dataclass(slots=True)
class PingReq:
    """Probe ``target`` for the requester and forward its ACK (gossip as in Ping)."""

    KIND: ClassVar[Kind] = Kind.PING_REQ
    probe_id: int
    reply_address: str
    target: str
    news: tuple[News, ...] = ()
    view: str | None = None


@dataclasses.dataclass(slots=True)
class Ack:
    """The answer to a PING: ``target`` is alive (gossip as in Ping)."""

    KIND: ClassVar[Kind] = Kind.ACK
    probe_id: int
    target: str
    news: tuple[News, ...] = ()
    view: str | None = None


@dataclasses.dataclass(slots=True)
class Nack:
    """From a member probing ``target`` on our behalf (PING_REQ): no answer in time."""

    KIND: ClassVar[Kind] = Kind.NACK
    probe_id: int
    target: str


@dataclasses.dataclass(slots=True)
class Gossip:
    """Membership news pushed to a few random members, and the sender's view digest."""

    KIND: ClassVar[Kind] = Kind.GOSSIP
    news: tuple[News, ...]
    view: str


@dataclasses.dataclass(slots=True)
class Listen:
    """The topics the sender reads from the receiver's PUB (all of them, each time), and
    the prefixes of topics it reads (revision 1.4, capability ``prefix``)."""

    KIND: ClassVar[Kind] = Kind.LISTEN
    topics: tuple[str, ...]
    prefixes: tuple[str, ...] = ()


@dataclasses.dataclass(slots=True)
class Listening:
    """The answer to LISTEN: where each topic stood when the subscriber first listed it."""

    KIND: ClassVar[Kind] = Kind.LISTENING
    positions: tuple[Position, ...]


@dataclasses.dataclass(slots=True)
class Send:
    """A direct message to handler ``name`` (at most once); the payload is the message."""

    KIND: ClassVar[Kind] = Kind.SEND
    name: str


@dataclasses.dataclass(slots=True)
class Request:
    KIND: ClassVar[Kind] = Kind.REQUEST
    name: str
    request_id: int
    reply_address: str


@dataclasses.dataclass(slots=True)
class Reply:
    """A request's result (``ok``) or the error text, in the payload."""

    KIND: ClassVar[Kind] = Kind.REPLY
    request_id: int
    ok: bool


@dataclasses.dataclass(slots=True)
class Publish:
    """On PUB under a user topic; ``seq`` 0 (AT_MOST_ONCE) or the topic's number."""

    KIND: ClassVar[Kind] = Kind.PUBLISH
    seq: int
    guarantee: DeliveryGuarantee


@dataclasses.dataclass(slots=True)
class Beacon:
    """On PUB under a user topic: the publisher's latest number on that topic."""

    KIND: ClassVar[Kind] = Kind.BEACON
    seq: int


@dataclasses.dataclass(slots=True)
class Flush:
    """On PUB, on a subscriber's personal frame, by a publisher that is leaving (capability
    ``drain``): everything it published is ahead of this in the subscriber's queue, and
    ``positions`` are its last numbers on the subscriber's numbered topics. Answered with
    FLUSHED once the subscriber has all of them (or reported what it cannot have)."""

    KIND: ClassVar[Kind] = Kind.FLUSH
    positions: tuple[Position, ...]
    #: not a body field: the subscriber it is addressed to (its personal frame)
    to: str | None = None


@dataclasses.dataclass(slots=True)
class Flushed:
    """The answer to FLUSH: the subscriber has every publication that preceded it."""

    KIND: ClassVar[Kind] = Kind.FLUSHED


#: REFUSE's ``code``: the joiner's node id belongs to a live member (``detail``: its address)
REFUSED_ID_IN_USE = 1


@dataclasses.dataclass(slots=True)
class Refuse:
    """The answer to a join that cannot be admitted (capability ``refuse``): ``code`` says
    why (``REFUSED_ID_IN_USE``), ``detail`` adds what the joiner should know."""

    KIND: ClassVar[Kind] = Kind.REFUSE
    code: int
    detail: str


#: most participants one transaction may have
MAX_PARTICIPANTS_COUNT = 64


class TxnState(enum.IntEnum):
    """Where a transaction stands, as a TXN message says it (revision 1.6). Values are
    part of the protocol."""

    #: the sender is in doubt and asks for the receiver's state
    QUERY = 0
    #: a participant's yes vote: it holds the message until told the decision
    PREPARED = 1
    #: a participant's no vote (a veto, or it could not take the message), with a reason
    REFUSED = 2
    #: committed: the coordinator's decision, or a participant that applied it
    COMMIT = 3
    #: aborted: the coordinator's decision, or a participant that applied it (or gave up)
    ABORT = 4
    #: the sender knows nothing of the transaction (never prepared it, or forgot it)
    UNKNOWN = 5


@dataclasses.dataclass(slots=True)
class Prepare:
    """Phase one of the sender's transaction ``number``: may the receiver's handler
    ``name`` take the payload? Answered with TXN (PREPARED or REFUSED) within
    ``timeout_ms``; ``participants`` are every target of the transaction."""

    KIND: ClassVar[Kind] = Kind.PREPARE
    number: int
    name: str
    participants: tuple[str, ...]
    timeout_ms: int


@dataclasses.dataclass(slots=True)
class Txn:
    """Where transaction ``number`` of ``coordinator`` (in ``incarnation``) stands for
    the sender: a vote, a decision, its acknowledgement, a question or an answer."""

    KIND: ClassVar[Kind] = Kind.TXN
    coordinator: str
    incarnation: int
    number: int
    state: TxnState
    reason: str


@dataclasses.dataclass(slots=True)
class Auth:
    """Who the sender is, said on a connection before anything else is taken from it (in
    the security modes that need it): the payload is a credential of ``scheme``, a JWT
    (``jwt``) or a node certificate (``certificate``). Sent again before it expires."""

    KIND: ClassVar[Kind] = Kind.AUTH
    scheme: str


@dataclasses.dataclass(slots=True)
class Data:
    """A guaranteed direct message: number ``seq`` of the sender's stream ``epoch`` to us.

    ``number`` is the sender's id of the message (for EXACTLY_ONCE); everything
    below ``low`` is settled at the sender.
    """

    KIND: ClassVar[Kind] = Kind.DATA
    name: str
    number: int
    seq: int
    low: int
    guarantee: DeliveryGuarantee
    epoch: int
    #: optional (revision 1.6): the sender's incarnation that gave it ``number``, when not
    #: the envelope's (a send restored from a store after a restart keeps its id); 0: same
    origin: int = 0


@dataclasses.dataclass(slots=True)
class DataAck:
    """What the receiver's state ``stream_id`` of stream (``incarnation``, ``epoch``) holds.

    Finished (handler returned or failed): ``<= upto`` and ``selective``; failed
    ones with their reasons in ``failures``. Arrived and waiting: ``<=
    delivered_upto`` and ``pending``. Every number is a stream sequence number.
    """

    KIND: ClassVar[Kind] = Kind.DATA_ACK
    incarnation: int
    epoch: int
    stream_id: int
    upto: int
    selective: tuple[int, ...]
    failures: tuple[tuple[int, str], ...]
    delivered_upto: int
    pending: tuple[int, ...]


@dataclasses.dataclass(slots=True)
class DataBatch:
    """Several DATA to one receiver in one message (capability ``batch``), in order:
    each record ``(name, number, seq, guarantee, size)`` is the DATA of those fields
    with the batch's ``low`` (the sender's latest) and ``epoch`` (one numbering). The
    payload frame is the records' payloads back to back, ``size`` bytes each."""

    KIND: ClassVar[Kind] = Kind.DATA_BATCH
    low: int
    epoch: int
    records: tuple[DataRecord, ...]


@dataclasses.dataclass(slots=True)
class Fetch:
    """Ask a publisher to resend numbered publications of ``topic``."""

    KIND: ClassVar[Kind] = Kind.FETCH
    topic: str
    ranges: tuple[Range, ...]
    reply_address: str


@dataclasses.dataclass(slots=True)
class Republish:
    """One fetched publication, direct; the payload is the publication."""

    KIND: ClassVar[Kind] = Kind.REPUBLISH
    topic: str
    seq: int
    guarantee: DeliveryGuarantee


@dataclasses.dataclass(slots=True)
class Lost:
    """Fetched numbers the publisher no longer holds."""

    KIND: ClassVar[Kind] = Kind.LOST
    topic: str
    ranges: tuple[Range, ...]


Message = (
    Auth
    | Heartbeat
    | Sync
    | Ping
    | PingReq
    | Ack
    | Nack
    | Gossip
    | Listen
    | Listening
    | Send
    | Request
    | Reply
    | Publish
    | Beacon
    | Flush
    | Flushed
    | Refuse
    | Data
    | DataBatch
    | DataAck
    | Fetch
    | Republish
    | Lost
    | Prepare
    | Txn
)

#: kinds sent DEALER -> ROUTER; the others travel on PUB
DIRECT_KINDS = frozenset(
    k for k in Kind if k not in (Kind.HEARTBEAT, Kind.PUBLISH, Kind.BEACON, Kind.FLUSH)
)


@dataclasses.dataclass(slots=True)
class Envelope:
    """A message with its header. ``(sender, incarnation, seq)`` is the message id."""

    sender: str
    incarnation: int
    seq: int
    message: Message

    @property
    def kind(self) -> Kind:
        return self.message.KIND

    @property
    def message_id(self) -> tuple[str, int, int]:
        return (self.sender, self.incarnation, self.seq)
