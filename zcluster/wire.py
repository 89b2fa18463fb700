"""The wire format: envelopes to multipart frames and back, strictly.

``docs/protocol.md`` is the specification; this module is its only
implementation. Decoding never trusts a frame: anything malformed,
truncated, oversized or of another protocol version raises
:class:`~zcluster.errors.WireError` and nothing else.

Frames
  direct (DEALER -> ROUTER):  [header, payload]
  fan-out (PUB -> SUB):       [topic, header, payload]
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Sequence
from typing import Any

import msgpack

from zcluster.address import is_valid_address
from zcluster.core.guarantees import DeliveryGuarantee
from zcluster.core.members import Member, MemberStatus
from zcluster.errors import WireError

PROTOCOL_VERSION = 1
UINT64_MAX = 2**64 - 1

#: first frame of membership traffic on PUB; sorts after every user topic frame,
#: so a subscriber's topic subscriptions reach a publisher before this one
CONTROL_TOPIC = b"~"
#: user topic frames are TOPIC_PREFIX + UTF-8 topic + TOPIC_END (exact match)
TOPIC_PREFIX = b"t"
TOPIC_END = b"\x00"

MAX_NAME_BYTES = 255
MAX_TOPIC_BYTES = 1024
MAX_LIST_COUNT = 100_000
#: a view digest is 8 bytes of BLAKE2b, in lowercase hex
DIGEST_CHARS = 16


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


#: delivery guarantees on the wire; only these four travel (the others are refused earlier)
GUARANTEE_CODES = {
    DeliveryGuarantee.AT_MOST_ONCE: 0,
    DeliveryGuarantee.AT_LEAST_ONCE: 1,
    DeliveryGuarantee.EXACTLY_ONCE: 2,
    DeliveryGuarantee.ORDERED: 3,
}
_GUARANTEES = {code: guarantee for guarantee, code in GUARANTEE_CODES.items()}
#: longest failure reason carried in an acknowledgement
MAX_REASON_CHARS = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded header. ``(sender, incarnation, seq)`` is the message id."""

    kind: Kind
    sender: str
    incarnation: int
    seq: int
    body: tuple[Any, ...]

    @property
    def message_id(self) -> tuple[str, int, int]:
        return (self.sender, self.incarnation, self.seq)


# ---------------------------------------------------------------- encoding


def encode_header(
    kind: Kind, sender: str, incarnation: int, seq: int, body: Sequence[Any]
) -> bytes:
    return msgpack.packb(  # type: ignore[no-any-return]
        [PROTOCOL_VERSION, int(kind), sender, incarnation, seq, list(body)], use_bin_type=True
    )


def encode_member(member: Member) -> list[Any]:
    return [
        member.node_id,
        member.incarnation,
        member.version,
        int(member.status),
        member.address,
        member.pub_address,
    ]


def topic_frame(topic: str) -> bytes:
    """The first PUB frame for a user topic; the SUB filter is this exact value."""
    return TOPIC_PREFIX + topic.encode() + TOPIC_END


def check_topic(topic: object) -> str:
    """Raise WireError unless ``topic`` is a valid topic name."""
    if not isinstance(topic, str) or not topic:
        raise WireError(f"topic must be a non-empty string, got {_show(topic)}")
    if topic in _valid_topics:
        return topic
    _check_topic_text(topic)
    if len(_valid_topics) >= _VALID_CACHE_COUNT:
        _valid_topics.clear()
    _valid_topics.add(topic)
    return topic


#: names and topics repeat on every message: remember recently validated ones
_VALID_CACHE_COUNT = 4096
_valid_topics: set[str] = set()
_valid_names: set[str] = set()
_valid_addresses: set[str] = set()


def _check_topic_text(topic: str) -> None:
    try:
        raw = topic.encode()
    except UnicodeEncodeError:
        raise WireError("topic must be valid Unicode text") from None
    if len(raw) > MAX_TOPIC_BYTES or "\x00" in topic:
        raise WireError(f"topic must be at most {MAX_TOPIC_BYTES} bytes with no NUL")


def check_name(name: object, what: str = "name") -> str:
    """Raise WireError unless ``name`` is a valid node id or handler name."""
    if type(name) is str and name in _valid_names:
        return name
    if not isinstance(name, str) or not name or not name.isprintable() or " " in name:
        raise WireError(f"{what} must be a non-empty printable string without spaces")
    if len(name.encode()) > MAX_NAME_BYTES:
        raise WireError(f"{what} must be at most {MAX_NAME_BYTES} bytes")
    if len(_valid_names) >= _VALID_CACHE_COUNT:
        _valid_names.clear()
    _valid_names.add(name)
    return name


# ---------------------------------------------------------------- decoding


def _show(value: Any) -> str:
    """Describe a rejected value without repr() of untrusted nested data."""
    if value is None or isinstance(value, bool | int | float):
        return repr(value)[:40]
    if isinstance(value, str):
        return repr(value[:40])
    return f"a {type(value).__name__}"


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
    if len(_valid_addresses) >= _VALID_CACHE_COUNT:
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
    if type(value) is not list or len(value) != 6:
        raise WireError("member record must be a list of 6 fields")
    node_id, incarnation, version, status, address, pub_address = value
    if type(status) is not int or not 0 <= status <= max(MemberStatus):
        raise WireError(f"unknown member status {_show(status)}")
    return Member(
        node_id=_node_id(node_id),
        incarnation=_uint(incarnation),
        version=_uint(version),
        status=MemberStatus(status),
        address=_address(address),
        pub_address=_address(pub_address),
    )


def _list_of(item: Callable[[Any], Any]) -> Callable[[Any], tuple[Any, ...]]:
    def parse(value: Any) -> tuple[Any, ...]:
        if type(value) is not list or len(value) > MAX_LIST_COUNT:
            raise WireError("expected a bounded list")
        return tuple(item(v) for v in value)

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
    reason = value[1]
    if type(reason) is not str or len(reason) > MAX_REASON_CHARS:
        raise WireError(f"a failure reason must be text of at most {MAX_REASON_CHARS} characters")
    return _seq(value[0]), reason


_BODY_SCHEMAS: dict[Kind, tuple[Callable[[Any], Any], ...]] = {
    Kind.HEARTBEAT: (_member, _list_of(_member), _digest, _list_of(_position)),
    Kind.SYNC: (_list_of(_member), _bool, _address),
    Kind.PING: (_uint, _address),
    Kind.PING_REQ: (_uint, _address, _node_id),
    Kind.ACK: (_uint, _node_id),
    Kind.LISTEN: (_list_of(_topic),),
    Kind.SEND: (check_name,),
    Kind.REQUEST: (check_name, _uint, _address),
    Kind.REPLY: (_uint, _bool),
    Kind.PUBLISH: (_uint, _guarantee),
    Kind.DATA: (check_name, _uint, _seq, _seq, _reliable_guarantee, _uint),
    Kind.DATA_ACK: (
        _uint,
        _uint,
        _uint,
        _uint,
        _list_of(_seq),
        _list_of(_failure),
        _uint,
        _list_of(_seq),
    ),
    Kind.FETCH: (_topic, _list_of(_range), _address),
    Kind.REPUBLISH: (_topic, _seq, _guarantee),
    Kind.LOST: (_topic, _list_of(_range)),
    Kind.LISTENING: (_list_of(_position),),
}

DIRECT_KINDS = frozenset(
    {
        Kind.SYNC,
        Kind.PING,
        Kind.PING_REQ,
        Kind.ACK,
        Kind.LISTEN,
        Kind.SEND,
        Kind.REQUEST,
        Kind.REPLY,
        Kind.DATA,
        Kind.DATA_ACK,
        Kind.FETCH,
        Kind.REPUBLISH,
        Kind.LOST,
        Kind.LISTENING,
    }
)


def decode_header(data: bytes, max_header_bytes: int) -> Envelope:
    """Decode and validate one header frame."""
    if len(data) > max_header_bytes:
        raise WireError(f"header of {len(data)} bytes exceeds {max_header_bytes}")
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            use_list=True,
            strict_map_key=True,
        )
    except Exception as exc:  # msgpack raises many unrelated types on garbage
        raise WireError(f"header is not valid msgpack: {type(exc).__name__}") from None
    if type(raw) is not list or len(raw) != 6:
        raise WireError("header must be a list of 6 fields")
    version, kind, sender, incarnation, seq, body = raw
    if version != PROTOCOL_VERSION or type(version) is not int:
        raise WireError(f"unsupported protocol version {_show(version)} (this node speaks 1)")
    if type(kind) is not int or kind not in _BODY_SCHEMAS:
        raise WireError(f"unknown message kind {_show(kind)}")
    kind = Kind(kind)
    schema = _BODY_SCHEMAS[kind]
    if type(body) is not list or len(body) != len(schema):
        raise WireError(f"{kind.name} body must be a list of {len(schema)} fields")
    try:
        fields = tuple(parse(value) for parse, value in zip(schema, body, strict=True))
    except (UnicodeError, ValueError) as exc:
        raise WireError(f"{kind.name} body is invalid: {exc}") from None
    return Envelope(kind, _node_id(sender), _uint(incarnation), _uint(seq), fields)


def decode_direct(frames: Sequence[bytes], max_header_bytes: int) -> tuple[Envelope, bytes]:
    """Decode ``[header, payload]`` as read from a ROUTER (routing id removed)."""
    if len(frames) != 2:
        raise WireError(f"direct message must have 2 frames, got {len(frames)}")
    envelope = decode_header(frames[0], max_header_bytes)
    if envelope.kind not in DIRECT_KINDS:
        raise WireError(f"{envelope.kind.name} is not a direct message kind")
    return envelope, frames[1]


def decode_published(
    frames: Sequence[bytes], max_header_bytes: int
) -> tuple[str | None, Envelope, bytes]:
    """Decode ``[topic, header, payload]`` as read from a SUB.

    Returns the user topic (None for membership traffic), the envelope and the payload.
    """
    if len(frames) != 3:
        raise WireError(f"published message must have 3 frames, got {len(frames)}")
    first, header, payload = frames
    envelope = decode_header(header, max_header_bytes)
    if first == CONTROL_TOPIC:
        if envelope.kind is not Kind.HEARTBEAT:
            raise WireError(f"{envelope.kind.name} cannot be sent on the control topic")
        return None, envelope, payload
    if envelope.kind is not Kind.PUBLISH:
        raise WireError(f"{envelope.kind.name} cannot be sent on a user topic")
    seq, guarantee = envelope.body
    if (seq == 0) != (guarantee is DeliveryGuarantee.AT_MOST_ONCE):
        raise WireError("a publication is numbered exactly when it carries a guarantee")
    if not (first.startswith(TOPIC_PREFIX) and first.endswith(TOPIC_END) and len(first) > 2):
        raise WireError("malformed topic frame")
    try:
        topic = bytes(first[1:-1]).decode()
    except UnicodeDecodeError:
        raise WireError("topic is not valid UTF-8") from None
    return check_topic(topic), envelope, payload
