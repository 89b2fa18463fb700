"""The wire format: typed protocol messages to multipart frames and back, strictly.

``docs/protocol.md`` is the specification; this module is its only
implementation, and a pure codec of ``zcluster.protocol``: it knows bytes,
not behaviour. Decoding never trusts a frame: anything malformed,
truncated, oversized or of another major protocol version raises
:class:`~zcluster.errors.WireError` and nothing else. It is tolerant
where the protocol may grow (revision 1.1): extra header elements, body
fields and member-record fields are ignored, and capabilities travel in
the payload frame of HEARTBEAT and SYNC, which revision 1.0 nodes ignore.

Frames
  direct (DEALER -> ROUTER):  [header, payload]
  fan-out (PUB -> SUB):       [topic, header, payload]
"""

from __future__ import annotations

import functools
import itertools
import struct
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from zcluster.address import is_valid_address
from zcluster.errors import WireError
from zcluster.names import (
    MAX_NAME_BYTES,
    MAX_TOPIC_BYTES,
    VALID_CACHE_COUNT,
    WILDCARD_CHARACTERS,
    check_name,
    check_topic,
    check_user_topic,
    valid_names,
)
from zcluster.names import show as _show
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus, Tags, checked_tags
from zcluster.protocol.messages import (
    DIRECT_KINDS,
    MAX_BATCH_COUNT,
    MAX_REASON_CHARS,
    MAX_SUSPECTERS_COUNT,
    Envelope,
    Kind,
)
from zcluster.uncollected import decode_large

__all__ = [
    "DIRECT_KINDS",
    "MAX_NAME_BYTES",
    "MAX_REASON_CHARS",
    "MAX_TOPIC_BYTES",
    "WILDCARD_CHARACTERS",
    "Envelope",
    "Kind",
    "check_name",
    "check_topic",
    "check_user_topic",
]

PROTOCOL_VERSION = 1
UINT64_MAX = 2**64 - 1

#: first frame of membership traffic on PUB; sorts after every user topic frame,
#: so a subscriber's topic subscriptions reach a publisher before this one
CONTROL_TOPIC = b"~"
#: a HEARTBEAT to one member travels under PERSONAL_PREFIX + its UTF-8 node id + TOPIC_END,
#: which only that member subscribes to (sorts after user topics, before the control topic)
PERSONAL_PREFIX = b"}"
#: user topic frames are TOPIC_PREFIX + UTF-8 topic + TOPIC_END (exact match)
TOPIC_PREFIX = b"t"
TOPIC_END = b"\x00"
#: a publication in one frame (revision 1.2) starts with ONE_FRAME_PREFIX + UTF-8 topic +
#: TOPIC_END, then the header's length (2 bytes, big-endian), the header and the payload
ONE_FRAME_PREFIX = b"u"
#: the longest message a SUB sends a PUB, its MAXMSGSIZE: the longest filter (a prefix,
#: a topic or a node id, and TOPIC_END) after ZMTP 3.1's "SUBSCRIBE" command name (10
#: bytes; ZMTP 3.0 spells it with one) inside a CurveZMQ MESSAGE (33 bytes more)
SUBSCRIPTION_MAX_BYTES = 64 + max(MAX_TOPIC_BYTES, MAX_NAME_BYTES)

MAX_LIST_COUNT = 100_000
#: a view digest is 8 bytes of BLAKE2b, in lowercase hex
DIGEST_CHARS = 16


#: delivery guarantees on the wire (CAUSAL: revision 1.6)
GUARANTEE_CODES = {
    DeliveryGuarantee.AT_MOST_ONCE: 0,
    DeliveryGuarantee.AT_LEAST_ONCE: 1,
    DeliveryGuarantee.EXACTLY_ONCE: 2,
    DeliveryGuarantee.ORDERED: 3,
    DeliveryGuarantee.CAUSAL: 4,
}
_GUARANTEES = {code: guarantee for guarantee, code in GUARANTEE_CODES.items()}
#: header elements of revision 1.0; later revisions may add more, which are ignored
HEADER_FIELDS_COUNT = 6
MEMBER_FIELDS_COUNT = 6
#: most elements a header, a body or a member record may have, known or not
MAX_FIELDS_COUNT = 64
#: capabilities: at most this many names, each 1..MAX_CAPABILITY_CHARS printable ASCII
MAX_CAPABILITIES_COUNT = 64
MAX_CAPABILITY_CHARS = 64

#: most lists and maps in one header, all together: one list of MAX_LIST_COUNT lists (a
#: LOST of that many ranges) and room besides; a megabyte of nested empty lists holds a
#: million, and building them all would hold the node's loop for 84 ms
MAX_CONTAINERS_COUNT = MAX_LIST_COUNT + 1024
#: a header's lists and maps are refused by their declared length, before any element
#: is built (a list of a million numbers costs the decoder more than a hundred headers)
_unpack_header = functools.partial(
    msgpack.unpackb,
    raw=False,
    use_list=True,
    strict_map_key=True,
    max_array_len=MAX_LIST_COUNT,
    max_map_len=MAX_LIST_COUNT,
)


def _unpack_large_header(data: bytes) -> Any:
    """``_unpack_header`` for a frame large enough to hold more than MAX_CONTAINERS_COUNT
    lists and maps: they are counted as they are built, and the frame refused past it."""
    left = MAX_CONTAINERS_COUNT

    def counted(container: Any) -> Any:
        nonlocal left
        left -= 1
        if left < 0:
            raise ValueError(f"exceeds max_containers ({MAX_CONTAINERS_COUNT})")
        return container

    return _unpack_header(data, list_hook=counted, object_hook=counted)


# ---------------------------------------------------------------- encoding


def encode_header(
    kind: Kind, sender: str, incarnation: int, seq: int, body: Sequence[Any]
) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        [PROTOCOL_VERSION, int(kind), sender, incarnation, seq, body], use_bin_type=True
    )


def encode_member(member: Member, tags: bool = False) -> list[Any]:
    """A member record: its six fields of revision 1.0, and its tags as a seventh
    (revision 1.4) when ``tags`` and it has some."""
    record: list[Any] = [
        member.node_id,
        member.incarnation,
        member.version,
        int(member.status),
        member.address,
        member.pub_address,
    ]
    if tags and member.tags:
        record.append(dict(member.tags))
    return record


def _members(records: Sequence[Member], tags: bool = False) -> list[list[Any]]:
    return [encode_member(m, tags) for m in records]


def _news(news: Sequence[msg.News], tags: bool = False) -> list[tuple[Any, ...]]:
    return [(encode_member(n.member, tags), n.capabilities, n.suspecters) for n in news]


def _probe(
    head: tuple[Any, ...], news: Sequence[msg.News], view: str | None, tags: bool
) -> tuple[Any, ...]:
    """A probe's body: the revision 1.0 fields, then gossip and view when set (``swim``)."""
    return head if view is None else (*head, _news(news, tags), view)


def _sync(m: msg.Sync, tags: bool = False) -> tuple[Any, ...]:
    head = (_members(m.records, tags), m.want_reply, m.reply_address)
    if m.announcements is None:
        return head
    return (*head, m.announcements)


def _code(guarantee: DeliveryGuarantee) -> int:
    return GUARANTEE_CODES[guarantee]


#: per message class: its body, in wire order (tuples pack as msgpack arrays)
#: per message class that carries member records: its body, with or without their tags
_RECORD_BODIES: dict[type[Any], Callable[[Any, bool], Sequence[Any]]] = {
    msg.Heartbeat: lambda m, t: (
        encode_member(m.me, t),
        _members(m.updates, t),
        m.digest,
        m.positions,
    ),
    msg.Sync: _sync,
    msg.Ping: lambda m, t: _probe((m.probe_id, m.reply_address), m.news, m.view, t),
    msg.PingReq: lambda m, t: _probe((m.probe_id, m.reply_address, m.target), m.news, m.view, t),
    msg.Ack: lambda m, t: _probe((m.probe_id, m.target), m.news, m.view, t),
    msg.Gossip: lambda m, t: (_news(m.news, t), m.view),
}


def _without_tags(body: Callable[[Any, bool], Sequence[Any]]) -> Callable[[Any], Sequence[Any]]:
    return lambda message: body(message, False)


_BODIES: dict[type[Any], Callable[[Any], Sequence[Any]]] = {
    **{kind: _without_tags(body) for kind, body in _RECORD_BODIES.items()},
    msg.Nack: lambda m: (m.probe_id, m.target),
    msg.Beacon: lambda m: (m.seq,),
    msg.Flush: lambda m: (m.positions,),
    msg.Flushed: lambda m: (),
    msg.Refuse: lambda m: (m.code, m.detail),
    msg.Auth: lambda m: (m.scheme,),
    msg.Listen: lambda m: (m.topics, m.prefixes) if m.prefixes else (m.topics,),
    msg.Listening: lambda m: (m.positions,),
    msg.Send: lambda m: (m.name,),
    msg.Request: lambda m: (m.name, m.request_id, m.reply_address),
    msg.Reply: lambda m: (m.request_id, m.ok),
    msg.Prepare: lambda m: (m.number, m.name, list(m.participants), m.timeout_ms),
    msg.Txn: lambda m: (m.coordinator, m.incarnation, m.number, int(m.state), m.reason),
    msg.Publish: lambda m: (m.seq, _code(m.guarantee)),
    msg.Data: lambda m: (
        (m.name, m.number, m.seq, m.low, _code(m.guarantee), m.epoch, m.origin)
        if m.origin
        else (m.name, m.number, m.seq, m.low, _code(m.guarantee), m.epoch)
    ),
    msg.DataBatch: lambda m: (
        m.low,
        m.epoch,
        [
            (name, number, seq, _code(guarantee), size)
            for name, number, seq, guarantee, size in m.records
        ],
    ),
    msg.DataAck: lambda m: (
        m.incarnation,
        m.epoch,
        m.stream_id,
        m.upto,
        m.selective,
        m.failures,
        m.delivered_upto,
        m.pending,
    ),
    msg.Fetch: lambda m: (m.topic, m.ranges, m.reply_address),
    msg.Republish: lambda m: (m.topic, m.seq, _code(m.guarantee)),
    msg.Lost: lambda m: (m.topic, m.ranges),
}


def encode_body(message: msg.Message) -> Sequence[Any]:
    """A message's body fields, in wire order."""
    return _BODIES[type(message)](message)


class Encoder:
    """Turns one node's messages into frames, numbering their headers 1, 2, 3, ...

    The header's ``seq`` completes the message id ``(sender, incarnation,
    seq)``; it is unique per incarnation, not a delivery sequence number.
    The parts of a header that never change for this node are packed once:
    a header is the bytes of ``[version, kind, sender, incarnation, seq,
    body]``, built from a cached prefix and two packed values. Numbers are
    drawn atomically, so headers may be built in several threads.
    """

    def __init__(
        self, sender: str, incarnation: int, topic_check: Callable[[object], str] | None = None
    ) -> None:
        self.sender = sender
        self.incarnation = incarnation
        #: how the topics of publications are checked once (``check_user_topic``: no
        #: wildcard either, for an application's topics)
        self._check_topic = topic_check or check_topic
        self._next_seq = itertools.count(1).__next__
        self._pack: Callable[[Any], bytes] = msgpack.Packer(use_bin_type=True).pack
        identity = self._pack(sender) + self._pack(incarnation)
        #: per message class: the header bytes up to seq, and the body's builder
        self._forms: dict[type[Any], tuple[bytes, Callable[[Any], Sequence[Any]]]] = {
            cls: (
                _ARRAY_OF_6 + self._pack(PROTOCOL_VERSION) + self._pack(int(cls.KIND)) + identity,
                body,
            )
            for cls, body in _BODIES.items()
        }
        #: whether member records carry their tags (revision 1.4): set by the host while
        #: every member it knows reads extra record fields (capability ``fields``)
        self.tags = False
        self._topic_frames: dict[str, bytes] = {}
        self._one_frame_prefixes: dict[str, bytes] = {}
        unnumbered = msg.Publish(0, DeliveryGuarantee.AT_MOST_ONCE)
        self._publish_prefix: bytes = self._forms[msg.Publish][0]
        self._unnumbered_body: bytes = self._pack(encode_body(unnumbered))

    def header(self, message: msg.Message) -> bytes:
        prefix, body = self._forms[type(message)]
        pack = self._pack
        if self.tags and type(message) in _RECORD_BODIES:
            return (
                prefix + pack(self._next_seq()) + pack(_RECORD_BODIES[type(message)](message, True))
            )
        return prefix + pack(self._next_seq()) + pack(body(message))

    def publication_header(self, seq: int, guarantee: DeliveryGuarantee) -> bytes:
        """The header of ``Publish(seq, guarantee)``, built in place: the hot path of
        fan-out (the same bytes ``header`` makes of the message)."""
        body = self._publish_body(seq, guarantee)
        return self._publish_prefix + self._pack(self._next_seq()) + body

    def _publish_body(self, seq: int, guarantee: DeliveryGuarantee) -> bytes:
        """A PUBLISH body: ``[seq, code]`` numbered, the packed-once ``[0, 0]`` if not."""
        if seq:
            return _ARRAY_OF_2 + self._pack(seq) + _CODE_BYTES[guarantee]
        return self._unnumbered_body

    def publication_frame(
        self, prefix: bytes, seq: int, guarantee: DeliveryGuarantee, payload: bytes
    ) -> bytes:
        """``Publish(seq, guarantee)`` in one frame (revision 1.2) on the topic ``prefix``
        starts (``one_frame_prefix_of``). A PUBLISH header always fits the length field:
        its sender is its longest part, at most MAX_NAME_BYTES. (``publication_header``
        written out, in one join: the hottest path of fan-out.)"""
        envelope_seq = self._pack(self._next_seq())
        body = self._publish_body(seq, guarantee)
        header_bytes = len(self._publish_prefix) + len(envelope_seq) + len(body)
        return b"".join(
            (prefix, _LENGTH(header_bytes), self._publish_prefix, envelope_seq, body, payload)
        )

    def one_frame_prefix_of(self, topic: str) -> bytes:
        """How a one-frame publication on ``topic`` starts, cached (safe from any thread);
        WireError for a topic the wire cannot carry."""
        try:
            return self._one_frame_prefixes[topic]
        except (KeyError, TypeError):  # not yet seen, or not even hashable: check it
            return self._one_frame_prefix(topic)

    def _one_frame_prefix(self, topic: str) -> bytes:
        self._check_topic(topic)
        if len(self._one_frame_prefixes) >= VALID_CACHE_COUNT:
            self._one_frame_prefixes.clear()
        prefix = self._one_frame_prefixes[topic] = one_frame_prefix(topic)
        return prefix

    def direct(self, message: msg.Message, payload: bytes) -> tuple[bytes, bytes]:
        """``[header, payload]`` for a DEALER."""
        if type(message) in _ANNOUNCING_TYPES:
            payload = encode_capabilities(message.capabilities)  # type: ignore[union-attr]
        return self.header(message), payload

    def published(
        self, topic: str | None, message: msg.Message, payload: bytes
    ) -> tuple[bytes, bytes, bytes]:
        """``[topic frame, header, payload]`` for the PUB (``topic`` None: membership)."""
        if topic is not None:
            first = self.topic_frame(topic)
        elif isinstance(message, msg.Heartbeat | msg.Flush) and message.to is not None:
            first = personal_frame(message.to)
        else:
            first = CONTROL_TOPIC
        if type(message) in _ANNOUNCING_TYPES:
            payload = encode_capabilities(message.capabilities)  # type: ignore[union-attr]
        return first, self.header(message), payload

    def topic_frame(self, topic: str) -> bytes:
        """The first PUB frame of a user topic, cached (safe from any thread); WireError
        for a topic the wire cannot carry."""
        try:
            return self._topic_frames[topic]
        except (KeyError, TypeError):  # not yet seen, or not even hashable: check it
            self._check_topic(topic)
            if len(self._topic_frames) >= VALID_CACHE_COUNT:
                self._topic_frames.clear()
            frame = self._topic_frames[topic] = topic_frame(topic)
            return frame


#: msgpack's marker of an array of 6 elements: a header of revision 1.0
_ARRAY_OF_6 = b"\x96"
#: and of 2, a PUBLISH body, whose guarantee code is a positive fixint: one byte
_ARRAY_OF_2 = b"\x92"
_CODE_BYTES = {guarantee: bytes((code,)) for guarantee, code in GUARANTEE_CODES.items()}
#: message classes whose payload frame carries the sender's capabilities
_ANNOUNCING_TYPES = frozenset({msg.Heartbeat, msg.Sync})


def topic_frame(topic: str) -> bytes:
    """The first PUB frame for a user topic; the SUB filter is this exact value."""
    return TOPIC_PREFIX + topic.encode() + TOPIC_END


def personal_frame(node_id: str) -> bytes:
    """The first PUB frame of a HEARTBEAT to one member; that member's SUB subscribes to it."""
    return PERSONAL_PREFIX + node_id.encode() + TOPIC_END


def one_frame_prefix(topic: str) -> bytes:
    """How a one-frame publication on ``topic`` starts; the SUB filter for that form."""
    return ONE_FRAME_PREFIX + topic.encode() + TOPIC_END


def prefix_filters(prefix: str) -> tuple[bytes, bytes]:
    """The SUB filters, in both forms, of every topic that starts with ``prefix``: the
    topic frames without their end (ZeroMQ filters match prefixes)."""
    encoded = prefix.encode()
    return TOPIC_PREFIX + encoded, ONE_FRAME_PREFIX + encoded


def cut_one_frame(frame: bytes) -> tuple[bytes, bytes, bytes] | None:
    """A one-frame publication's ``(prefix up to the topic's end, header, payload)``, or
    None if its lengths do not add up. The pieces are not checked: see split_one_frame."""
    end = frame.find(TOPIC_END)
    start = end + 3
    size = len(frame)
    if end < 2 or size < start:
        return None
    stop = start + (frame[end + 1] << 8 | frame[end + 2])  # big-endian, as _LENGTH packs
    if size < stop:
        return None
    return frame[: end + 1], frame[start:stop], frame[stop:]


def split_one_frame(frame: bytes) -> tuple[bytes, bytes, bytes]:
    """A one-frame publication as the three frames it stands for: ``[topic frame, header,
    payload]``, for :func:`decode_published`; WireError if it is malformed."""
    pieces = cut_one_frame(frame)
    if pieces is None:
        raise WireError("malformed one-frame publication")
    prefix, header, payload = pieces
    return TOPIC_PREFIX + prefix[1:], header, payload


_LENGTH = struct.Struct(">H").pack


# ---------------------------------------------------------------- decoding

#: validated addresses (see VALID_CACHE_COUNT)
_valid_addresses: set[str] = set()


def _uint(value: Any) -> int:
    if type(value) is not int or not 0 <= value <= UINT64_MAX:
        raise WireError(f"expected an unsigned 64-bit integer, got {type(value).__name__}")
    return value


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise WireError(f"expected a boolean, got {type(value).__name__}")
    return value


def _address(value: Any) -> str:
    if type(value) is str and value in _valid_addresses:
        return value
    if not is_valid_address(value):
        raise WireError("expected a HOST:PORT address")
    if len(_valid_addresses) >= VALID_CACHE_COUNT:
        _valid_addresses.clear()
    _valid_addresses.add(value)
    return str(value)


def _digest(value: Any) -> str:
    if type(value) is not str or len(value) != DIGEST_CHARS:
        raise WireError(f"view digest must be {DIGEST_CHARS} hex characters")
    return value


def _node_id(value: Any) -> str:
    return check_name(value, "node id")


def _member(value: Any) -> Member:
    if type(value) is not list or not MEMBER_FIELDS_COUNT <= len(value) <= MAX_FIELDS_COUNT:
        raise WireError(
            f"member record must be a list of {MEMBER_FIELDS_COUNT} to {MAX_FIELDS_COUNT} fields"
        )
    fields: tuple[Any, ...] = tuple(value[:MEMBER_FIELDS_COUNT])
    node_id, incarnation, version, status, address, pub_address = fields
    tags = _tags(value[MEMBER_FIELDS_COUNT]) if len(value) > MEMBER_FIELDS_COUNT else ()
    if tags:
        fields = (*fields, tags)
    # Gossip repeats each record many times: one seen before is the same Member. (Exact
    # types first: True == 1 and 1.0 == 1 would otherwise find a cached record.)
    if type(incarnation) is int and type(version) is int and type(status) is int:
        try:
            known = _valid_members.get(fields)
        except TypeError:  # an unhashable field (a list, a map): invalid, said below
            known = None
        if known is not None:
            return known
    if type(status) is not int or not 0 <= status < len(_STATUSES):
        raise WireError(f"unknown member status {_show(status)}")
    member = Member(
        _node_id(node_id),
        _uint(incarnation),
        _uint(version),
        _STATUSES[status],
        _address(address),
        _address(pub_address),
        tags,
    )
    if len(_valid_members) >= VALID_CACHE_COUNT:
        _valid_members.clear()
    _valid_members[fields] = member
    return member


def _tags(value: Any) -> Tags:
    """A record's seventh field (revision 1.4): a map of text to text."""
    if type(value) is not dict:
        raise WireError("member tags must be a map")
    try:
        return checked_tags(value)
    except ValueError as exc:
        raise WireError(f"member tags: {exc}") from None


#: member statuses by their code (records are decoded by the thousand in a full table)
_STATUSES = tuple(sorted(MemberStatus))
_valid_members: dict[tuple[Any, ...], Member] = {}


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) > MAX_LIST_COUNT:
            raise WireError("expected a bounded list")
        return tuple(map(item, value))

    return parse


def _topic(value: Any) -> str:
    return check_topic(value)


def _guarantee(value: Any) -> DeliveryGuarantee:
    if type(value) is not int or value not in _GUARANTEES:
        raise WireError(f"unknown delivery guarantee {_show(value)}")
    return _GUARANTEES[value]


def _reliable_guarantee(value: Any) -> DeliveryGuarantee:
    guarantee = _guarantee(value)
    if guarantee is DeliveryGuarantee.AT_MOST_ONCE:
        raise WireError("a DATA message must carry a reliable guarantee")
    return guarantee


def _seq(value: Any) -> int:
    seq = _uint(value)
    if seq == 0:
        raise WireError("sequence numbers start at 1")
    return seq


def _data_records(value: Any) -> tuple[msg.DataRecord, ...]:
    if type(value) is not list or not 0 < len(value) <= MAX_BATCH_COUNT:
        raise WireError(f"a DATA_BATCH carries 1 to {MAX_BATCH_COUNT} records")
    return tuple(map(_data_record, value))


def _data_record(value: Any) -> msg.DataRecord:
    if type(value) is not list or len(value) != 5:
        raise WireError("a DATA_BATCH record must be [name, number, seq, guarantee, size]")
    name, number, seq, code, size = value
    return check_name(name), _uint(number), _seq(seq), _reliable_guarantee(code), _uint(size)


def _range(value: Any) -> tuple[int, int]:
    if type(value) is not list or len(value) != 2:
        raise WireError("a range must be a list of 2 sequence numbers")
    first, last = _seq(value[0]), _seq(value[1])
    if first > last:
        raise WireError("a range must not end before it starts")
    return first, last


def _position(value: Any) -> tuple[str, int]:
    if type(value) is not list or len(value) != 2:
        raise WireError("a topic position must be a list of [topic, seq]")
    return check_topic(value[0]), _uint(value[1])


def _failure(value: Any) -> tuple[int, str]:
    if type(value) is not list or len(value) != 2:
        raise WireError("a failure must be a list of [seq, reason]")
    return _seq(value[0]), _text(value[1])


def _participants(value: Any) -> tuple[str, ...]:
    if type(value) is not list or not 0 < len(value) <= msg.MAX_PARTICIPANTS_COUNT:
        raise WireError(f"participants must be 1 to {msg.MAX_PARTICIPANTS_COUNT} node ids")
    return tuple(map(_node_id, value))


def _txn_state(value: Any) -> msg.TxnState:
    if type(value) is not int or value not in _TXN_STATES:
        raise WireError(f"unknown transaction state {_show(value)}")
    return msg.TxnState(value)


_TXN_STATES = frozenset(int(state) for state in msg.TxnState)


def _text(value: Any) -> str:
    """A reason or detail: text of at most MAX_REASON_CHARS characters."""
    if type(value) is not str or len(value) > MAX_REASON_CHARS:
        raise WireError(f"a reason must be text of at most {MAX_REASON_CHARS} characters")
    return value


def _capability(value: Any) -> str:
    if (
        type(value) is not str
        or not 0 < len(value) <= MAX_CAPABILITY_CHARS
        or not (value.isascii() and value.isprintable() and " " not in value)
    ):
        raise WireError(f"a capability must be 1 to {MAX_CAPABILITY_CHARS} printable ASCII")
    return value


def _capability_list(value: Any) -> msg.Capabilities:
    if type(value) is not list or len(value) > MAX_CAPABILITIES_COUNT:
        raise WireError(f"caps must be a list of at most {MAX_CAPABILITIES_COUNT} names")
    try:
        return _valid_capability_lists[tuple(value)]
    except (KeyError, TypeError):  # not seen yet (or not even hashable: invalid)
        pass
    capabilities = tuple(sorted({_capability(name) for name in value}))
    if len(_valid_capability_lists) >= VALID_CACHE_COUNT:
        _valid_capability_lists.clear()
    _valid_capability_lists[tuple(value)] = capabilities
    return capabilities


#: every piece of news repeats its member's capabilities: remember the lists seen
_valid_capability_lists: dict[tuple[Any, ...], msg.Capabilities] = {}


def _news_item(value: Any) -> msg.News:
    if type(value) is not list or not 3 <= len(value) <= MAX_FIELDS_COUNT:
        raise WireError("news must be a list of [member, capabilities, suspecters]")
    suspecters = value[2]
    if type(suspecters) is not list or len(suspecters) > MAX_SUSPECTERS_COUNT:
        raise WireError(f"suspecters must be a list of at most {MAX_SUSPECTERS_COUNT} node ids")
    return msg.News(
        _member(value[0]), _capability_list(value[1]), tuple(_node_id(n) for n in suspecters)
    )


def _announcement(value: Any) -> msg.Announcement:
    if type(value) is not list or not 3 <= len(value) <= MAX_FIELDS_COUNT:
        raise WireError("an announcement must be a list of [node id, incarnation, capabilities]")
    return _node_id(value[0]), _uint(value[1]), _capability_list(value[2])


def decode_capabilities(payload: bytes) -> msg.Capabilities:
    """The payload frame of HEARTBEAT and SYNC: empty (revision 1.0) or ``{"caps": [...]}``."""
    if not payload:
        return ()
    if len(payload) > MAX_CAPABILITIES_BYTES:
        raise WireError(f"capabilities of {len(payload)} bytes exceed {MAX_CAPABILITIES_BYTES}")
    try:
        # Keys other than "caps" are ignored whatever they hold, so any key type is fine.
        raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise WireError(f"capabilities are not valid msgpack: {type(exc).__name__}") from None
    if type(raw) is not dict:
        raise WireError("capabilities must be a map")
    return _capability_list(raw.get("caps", []))


def encode_capabilities(capabilities: msg.Capabilities) -> bytes:
    if not capabilities:
        return b""
    return msgpack.packb({"caps": list(capabilities)})  # type: ignore[no-any-return]


#: a map of at most MAX_CAPABILITIES_COUNT names of at most MAX_CAPABILITY_CHARS, and slack
MAX_CAPABILITIES_BYTES = 2 * MAX_CAPABILITIES_COUNT * (MAX_CAPABILITY_CHARS + 2)

Parse = Callable[[Any], Any]

#: per kind: the message class and the parsers of its required body fields, in order
_SCHEMAS: dict[Kind, tuple[type[msg.Message], tuple[Parse, ...]]] = {
    Kind.HEARTBEAT: (msg.Heartbeat, (_member, _list_of(_member), _digest, _list_of(_position))),
    Kind.SYNC: (msg.Sync, (_list_of(_member), _bool, _address)),
    Kind.PING: (msg.Ping, (_uint, _address)),
    Kind.PING_REQ: (msg.PingReq, (_uint, _address, _node_id)),
    Kind.ACK: (msg.Ack, (_uint, _node_id)),
    Kind.LISTEN: (msg.Listen, (_list_of(_topic),)),
    Kind.SEND: (msg.Send, (check_name,)),
    Kind.REQUEST: (msg.Request, (check_name, _uint, _address)),
    Kind.REPLY: (msg.Reply, (_uint, _bool)),
    Kind.PUBLISH: (msg.Publish, (_uint, _guarantee)),
    Kind.DATA: (msg.Data, (check_name, _uint, _seq, _seq, _reliable_guarantee, _uint)),
    Kind.DATA_BATCH: (msg.DataBatch, (_seq, _uint, _data_records)),
    Kind.DATA_ACK: (
        msg.DataAck,
        (_uint, _uint, _uint, _uint, _list_of(_seq), _list_of(_failure), _uint, _list_of(_seq)),
    ),
    Kind.FETCH: (msg.Fetch, (_topic, _list_of(_range), _address)),
    Kind.REPUBLISH: (msg.Republish, (_topic, _seq, _guarantee)),
    Kind.LOST: (msg.Lost, (_topic, _list_of(_range))),
    Kind.LISTENING: (msg.Listening, (_list_of(_position),)),
    Kind.NACK: (msg.Nack, (_uint, _node_id)),
    Kind.GOSSIP: (msg.Gossip, (_list_of(_news_item), _digest)),
    Kind.BEACON: (msg.Beacon, (_uint,)),
    Kind.FLUSH: (msg.Flush, (_list_of(_position),)),
    Kind.FLUSHED: (msg.Flushed, ()),
    Kind.REFUSE: (msg.Refuse, (_uint, _text)),
    Kind.PREPARE: (msg.Prepare, (_uint, check_name, _participants, _uint)),
    Kind.TXN: (msg.Txn, (_node_id, _uint, _uint, _txn_state, _text)),
    Kind.AUTH: (msg.Auth, (_text,)),
}

#: the kinds this revision reads, by code (a dict lookup, not the enum's constructor)
_KINDS: dict[int, Kind] = {int(kind): kind for kind in _SCHEMAS}

_GOSSIP_FIELDS: tuple[Parse, ...] = (_list_of(_news_item), _digest)
#: per kind: the parsers of the optional body fields this revision knows, in order
_OPTIONAL: dict[Kind, tuple[Parse, ...]] = {
    Kind.PING: _GOSSIP_FIELDS,
    Kind.PING_REQ: _GOSSIP_FIELDS,
    Kind.ACK: _GOSSIP_FIELDS,
    Kind.SYNC: (_list_of(_announcement),),
    Kind.LISTEN: (_list_of(_topic),),
    Kind.DATA: (_uint,),
}

#: kinds whose payload frame carries the sender's capabilities
_ANNOUNCING = frozenset({Kind.HEARTBEAT, Kind.SYNC})


def decode_header(data: bytes, max_header_bytes: int, payload: bytes = b"") -> Envelope:
    """Decode and validate one header frame (``payload``: its message's payload frame,
    which carries the capabilities of HEARTBEAT and SYNC)."""
    if len(data) > max_header_bytes:
        raise WireError(f"header of {len(data)} bytes exceeds {max_header_bytes}")
    try:
        if len(data) > MAX_CONTAINERS_COUNT:  # (each list or map takes a byte at least)
            raw = decode_large(_unpack_large_header, data)
        else:
            raw = _unpack_header(data)
    except ValueError as exc:
        if "exceeds max_containers" in str(exc):
            raise WireError(
                f"a header holds at most {MAX_CONTAINERS_COUNT} lists and maps in all"
            ) from None
        if "exceeds max_" in str(exc):
            raise WireError(
                f"expected a bounded list: a list or map in the header declares more than "
                f"{MAX_LIST_COUNT} entries"
            ) from None
        raise WireError(f"header is not valid msgpack: {type(exc).__name__}") from None
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise WireError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if type(raw) is not list or not HEADER_FIELDS_COUNT <= len(raw) <= MAX_FIELDS_COUNT:
        raise WireError(
            f"header must be a list of {HEADER_FIELDS_COUNT} to {MAX_FIELDS_COUNT} fields"
        )
    version, kind, sender, incarnation, seq, body = raw[:HEADER_FIELDS_COUNT]
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise WireError(f"unsupported protocol version {_show(version)} (this node speaks 1)")
    code = kind
    kind = _KINDS.get(code) if type(code) is int else None
    if kind is None:
        raise WireError(f"unknown message kind {_show(code)}")
    cls, schema = _SCHEMAS[kind]
    if type(body) is not list or not len(schema) <= len(body) <= MAX_FIELDS_COUNT:
        raise WireError(
            f"{kind.name} body must be a list of {len(schema)} to {MAX_FIELDS_COUNT} fields"
        )
    try:
        fields = [parse(value) for parse, value in zip(schema, body, strict=False)]
        if len(body) > len(schema) and kind in _OPTIONAL:
            extra = body[len(schema) :]
            optional = [parse(value) for parse, value in zip(_OPTIONAL[kind], extra, strict=False)]
        else:
            optional = []
    except (UnicodeError, ValueError) as exc:
        raise WireError(f"{kind.name} body is invalid: {exc}") from None
    if kind in _ANNOUNCING:
        fields.append(decode_capabilities(payload))
    return Envelope(_node_id(sender), _uint(incarnation), _uint(seq), cls(*fields, *optional))


def decode_direct(frames: Sequence[bytes], max_header_bytes: int) -> tuple[Envelope, bytes]:
    """Decode ``[header, payload]`` as read from a ROUTER (routing id removed)."""
    if len(frames) != 2:
        raise WireError(f"direct message must have 2 frames, got {len(frames)}")
    envelope = decode_header(frames[0], max_header_bytes, frames[1])
    if envelope.kind not in DIRECT_KINDS:
        raise WireError(f"{envelope.kind.name} is not a direct message kind")
    batch = envelope.message
    if type(batch) is msg.DataBatch and sum(r[4] for r in batch.records) != len(frames[1]):
        raise WireError("DATA_BATCH sizes do not add up to its payload")
    return envelope, frames[1]


def read_publish(header: bytes) -> tuple[str, int, int, DeliveryGuarantee] | None:
    """``(sender, incarnation, topic_seq, guarantee)`` of a valid PUBLISH header of the
    revision 1.0 shape, else None: the fast path of fan-out.

    It accepts only what :func:`decode_header` accepts; anything else (including
    every invalid header) returns None and takes the full decoder, which
    explains what is wrong. A sender's PUBLISH headers share their bytes up to
    ``seq``: once one was read in full, that prefix is remembered, and the
    next are recognised by their bytes: the prefix, an unsigned integer
    (``seq``), and the body, ``[0, 0]`` unnumbered or ``[topic_seq, code]``.
    """
    size = len(header)
    if size <= _UNNUMBERED_MIN_BYTES:
        return _read_publish_in_full(header)
    prefixes = _publish_prefixes
    if header[-3:] == _UNNUMBERED_BODY:
        known = _after_uint(prefixes, header, size - 3)
        if known is not None:
            return known
    else:
        guarantee = _NUMBERED_GUARANTEES.get(header[-1])
        if guarantee is not None:
            # [topic_seq, code]: the array marker, an unsigned integer, the code
            for width, marker in _SEQ_FORMS:
                start = size - 1 - width
                if header[start] == marker and header[start - 1] == _ARRAY_OF_2_CODE:
                    topic_seq = int.from_bytes(header[start + 1 : size - 1], "big")
                    break
            else:
                start = size - 2
                topic_seq = header[start]
                if topic_seq >= _FIXINT_END or header[start - 1] != _ARRAY_OF_2_CODE:
                    topic_seq = 0
            if topic_seq:
                known = _after_uint(prefixes, header, start - 1)
                if known is not None:
                    return known[0], known[1], topic_seq, guarantee
    return _read_publish_in_full(header)


def _after_uint(
    prefixes: dict[bytes, tuple[str, int, int, DeliveryGuarantee]], header: bytes, end: int
) -> tuple[str, int, int, DeliveryGuarantee] | None:
    """What a remembered prefix says of ``header`` when the prefix is followed by one
    unsigned integer ending at ``end``; None if no prefix is remembered there."""
    for width, marker in _SEQ_FORMS:  # the msgpack forms of an unsigned integer
        start = end - width
        if start > 0 and header[start] == marker:
            known = prefixes.get(header[:start])
            if known is not None:
                return known
    if header[end - 1] < _FIXINT_END:
        return prefixes.get(header[: end - 1])
    return None


def _read_publish_in_full(header: bytes) -> tuple[str, int, int, DeliveryGuarantee] | None:
    fields = _publish_fields(header)
    if fields is None:
        return None
    sender, incarnation, _, (topic_seq, code) = fields
    if type(topic_seq) is not int or type(code) is not int:
        return None
    if topic_seq == 0 and code == 0:
        found = (sender, incarnation, 0, DeliveryGuarantee.AT_MOST_ONCE)
    elif not 1 <= topic_seq <= UINT64_MAX or code not in _NUMBERED_GUARANTEES:
        return None
    else:
        found = (sender, incarnation, topic_seq, _NUMBERED_GUARANTEES[code])
    prefix = _ARRAY_OF_6 + _PUBLISH_KIND + msgpack.packb(sender) + msgpack.packb(incarnation)
    if header.startswith(prefix):
        # As this implementation sends it: remember its prefix (what follows is
        # recognised by its bytes, whatever their encoding). Unnumbered, as any found.
        if len(_publish_prefixes) >= VALID_CACHE_COUNT:
            _publish_prefixes.clear()
        _publish_prefixes[prefix] = (sender, incarnation, 0, DeliveryGuarantee.AT_MOST_ONCE)
    return found


def _publish_fields(header: bytes) -> tuple[str, int, int, list[Any]] | None:
    """The fields of a PUBLISH header of exactly 6 elements with a body of 2, checked but
    for the body's values; None for anything else (including anything invalid)."""
    if len(header) > _FAST_HEADER_BYTES:
        return None
    try:
        raw = _unpack_header(header)
    except Exception:  # msgpack raises many unrelated types on garbage
        return None
    if type(raw) is not list or len(raw) != HEADER_FIELDS_COUNT:
        return None
    version, kind, sender, incarnation, seq, body = raw
    if (
        type(version) is not int
        or version != PROTOCOL_VERSION
        or type(kind) is not int
        or kind != Kind.PUBLISH
        or type(body) is not list
        or len(body) != 2
        or type(sender) is not str
        or sender not in valid_names
        or type(incarnation) is not int
        or not 0 <= incarnation <= UINT64_MAX
        or type(seq) is not int
        or not 0 <= seq <= UINT64_MAX
    ):
        return None
    return sender, incarnation, seq, body


_NUMBERED_GUARANTEES = {
    code: guarantee
    for code, guarantee in _GUARANTEES.items()
    if guarantee is not DeliveryGuarantee.AT_MOST_ONCE
}
#: headers read by the fast path: an unnumbered PUBLISH from a valid node id is far smaller
_FAST_HEADER_BYTES = 1024
#: how a PUBLISH header of revision 1.0 starts after its array marker
_PUBLISH_KIND = msgpack.packb(PROTOCOL_VERSION) + msgpack.packb(int(Kind.PUBLISH))
#: how an unnumbered one ends
_UNNUMBERED_BODY = msgpack.packb([0, 0])
_UNNUMBERED_MIN_BYTES = 8
_ARRAY_OF_2_CODE = _ARRAY_OF_2[0]
#: (width in bytes, first byte) of msgpack's unsigned integers wider than a positive fixint,
#: most likely first; a positive fixint is one byte below _FIXINT_END
_SEQ_FORMS = ((5, 0xCE), (3, 0xCD), (9, 0xCF), (2, 0xCC))
_FIXINT_END = 0x80
#: remembered header prefixes (up to seq) of PUBLISHes read in full, with what they say
#: (sender, incarnation) in the form of an unnumbered one
_publish_prefixes: dict[bytes, tuple[str, int, int, DeliveryGuarantee]] = {}


def decode_published(
    frames: Sequence[bytes], max_header_bytes: int
) -> tuple[str | None, Envelope, bytes]:
    """Decode ``[topic, header, payload]`` as read from a SUB, or a one-frame publication.

    Returns the user topic (None for membership traffic), the envelope and the payload.
    """
    one_frame = len(frames) == 1 and frames[0].startswith(ONE_FRAME_PREFIX)
    if one_frame:
        frames = split_one_frame(frames[0])
    if len(frames) != 3:
        raise WireError(f"published message must have 3 frames, got {len(frames)}")
    first, header, payload = frames
    envelope = decode_header(header, max_header_bytes, payload)
    message = envelope.message
    if first == CONTROL_TOPIC:
        if envelope.kind is not Kind.HEARTBEAT:
            raise WireError(f"{envelope.kind.name} cannot be sent on the control topic")
        return None, envelope, payload
    if first.startswith(PERSONAL_PREFIX):
        if not isinstance(message, msg.Heartbeat | msg.Flush):
            raise WireError(f"{envelope.kind.name} cannot be sent on a personal frame")
        message.to = _node_id(_frame_text(first))  # built just now: set where it was sent
        return None, envelope, payload
    if type(message) is msg.Publish:
        if (message.seq == 0) != (message.guarantee is DeliveryGuarantee.AT_MOST_ONCE):
            raise WireError("a publication is numbered exactly when it carries a guarantee")
    elif one_frame:
        raise WireError(f"{envelope.kind.name} cannot be sent in one frame")
    elif type(message) is not msg.Beacon:
        raise WireError(f"{envelope.kind.name} cannot be sent on a user topic")
    if not first.startswith(TOPIC_PREFIX):
        raise WireError("malformed topic frame")
    return check_topic(_frame_text(first)), envelope, payload


def _frame_text(frame: bytes) -> str:
    """The name between a PUB frame's one-byte prefix and its NUL terminator."""
    if not (frame.endswith(TOPIC_END) and len(frame) > 2):
        raise WireError("malformed topic frame")
    try:
        return bytes(frame[1:-1]).decode()
    except UnicodeDecodeError:
        raise WireError("topic is not valid UTF-8") from None
