"""Tests of the wire format (zcluster/wire.py) and of HOST:PORT parsing (zcluster/address.py).

The contract under test: decoding never trusts a frame; anything malformed raises
WireError and nothing else, and everything encoded by this module decodes back
to the same fields.
"""

from __future__ import annotations

from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import wire
from zcluster.address import format_address, is_valid_address, parse_address
from zcluster.core.guarantees import DeliveryGuarantee
from zcluster.core.members import Member, MemberStatus
from zcluster.errors import ConfigError, WireError
from zcluster.wire import (
    CONTROL_TOPIC,
    DIRECT_KINDS,
    GUARANTEE_CODES,
    MAX_LIST_COUNT,
    MAX_NAME_BYTES,
    MAX_TOPIC_BYTES,
    PROTOCOL_VERSION,
    UINT64_MAX,
    Envelope,
    Kind,
    check_name,
    check_topic,
    decode_direct,
    decode_header,
    decode_published,
    encode_header,
    encode_member,
    topic_frame,
)

MAX = 1 << 20
PAYLOAD = b"\x00payload\xff"

PROPERTY = settings(max_examples=300, deadline=None, database=None)
PROPERTY_SMALL = settings(max_examples=150, deadline=None, database=None)

M1 = Member("n1", 7, 3, MemberStatus.UP, "127.0.0.1:7000", "127.0.0.1:7001")
M2 = Member("node-2.example", UINT64_MAX, 0, MemberStatus.REMOVED, "[::1]:80", "host-name:65535")
M3 = Member("ü", 0, UINT64_MAX, MemberStatus.JOINING, "10.0.0.1:1", "10.0.0.1:2")

DIGEST = "0123456789abcdef"

#: for every kind: (encoded body, expected decoded body)
CASES: dict[Kind, tuple[list[Any], tuple[Any, ...]]] = {
    Kind.HEARTBEAT: (
        [encode_member(M1), [encode_member(M2), encode_member(M3)], DIGEST, [["news", 7]]],
        (M1, (M2, M3), DIGEST, (("news", 7),)),
    ),
    Kind.SYNC: (
        [[encode_member(M2), encode_member(M1)], True, "10.1.2.3:5"],
        ((M2, M1), True, "10.1.2.3:5"),
    ),
    Kind.PING: ([42, "127.0.0.1:9"], (42, "127.0.0.1:9")),
    Kind.PING_REQ: ([UINT64_MAX, "[::1]:9", "n3"], (UINT64_MAX, "[::1]:9", "n3")),
    Kind.ACK: ([0, "n3"], (0, "n3")),
    Kind.LISTEN: ([["news", "a b/c", "ünïcode"]], (("news", "a b/c", "ünïcode"),)),
    Kind.SEND: (["handler.v1"], ("handler.v1",)),
    Kind.REQUEST: (["echo", 9, "host-name:1"], ("echo", 9, "host-name:1")),
    Kind.REPLY: ([9, False], (9, False)),
    Kind.PUBLISH: ([3, 1], (3, DeliveryGuarantee.AT_LEAST_ONCE)),
    Kind.DATA: (["work", 11, 5, 2, 3, 1], ("work", 11, 5, 2, DeliveryGuarantee.ORDERED, 1)),
    Kind.DATA_ACK: (
        [9, 1, 2, 4, [6, 8], [[6, "handler raised"]], 5, [10]],
        (9, 1, 2, 4, (6, 8), ((6, "handler raised"),), 5, (10,)),
    ),
    Kind.FETCH: (["news", [[1, 3], [7, 7]], "[::1]:9"], ("news", ((1, 3), (7, 7)), "[::1]:9")),
    Kind.REPUBLISH: (["news", 2, 2], ("news", 2, DeliveryGuarantee.EXACTLY_ONCE)),
    Kind.LOST: (["news", [[1, 40]]], ("news", ((1, 40),))),
    Kind.LISTENING: ([[["news", 0], ["b", 9]]], ((("news", 0), ("b", 9)),)),
}


def raw_header(*fields: Any) -> bytes:
    """msgpack-encode an arbitrary (possibly invalid) header list."""
    return msgpack.packb(list(fields), use_bin_type=True)


def valid_raw(kind: Kind) -> list[Any]:
    """A valid header for ``kind`` as a Python list (to be altered, then packed)."""
    return [PROTOCOL_VERSION, int(kind), "sender-1", 5, 6, list(CASES[kind][0])]


def frames_for(kind: Kind, header: bytes) -> tuple[str, list[bytes]]:
    """Frames in which ``kind`` legitimately travels: ('direct'|'pub', frames)."""
    if kind in DIRECT_KINDS:
        return "direct", [header, PAYLOAD]
    first = CONTROL_TOPIC if kind is Kind.HEARTBEAT else topic_frame("news")
    return "pub", [first, header, PAYLOAD]


# ---------------------------------------------------------------- round trips


def test_cases_cover_every_kind() -> None:
    assert set(CASES) == set(Kind)
    assert set(Kind) - {Kind.HEARTBEAT, Kind.PUBLISH} == DIRECT_KINDS


def test_kind_values_are_fixed_by_the_protocol() -> None:
    assert {k.name: int(k) for k in Kind} == {
        "HEARTBEAT": 1,
        "SYNC": 3,
        "PING": 4,
        "PING_REQ": 5,
        "ACK": 6,
        "LISTEN": 7,
        "SEND": 10,
        "REQUEST": 11,
        "REPLY": 12,
        "PUBLISH": 13,
        "DATA": 14,
        "DATA_ACK": 15,
        "FETCH": 16,
        "REPUBLISH": 17,
        "LOST": 18,
        "LISTENING": 19,
    }


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_round_trip_every_kind(kind: Kind) -> None:
    body, expected = CASES[kind]
    header = encode_header(kind, "sender-1", 123, UINT64_MAX, body)
    assert isinstance(header, bytes)

    envelope = decode_header(header, MAX)
    assert envelope == Envelope(kind, "sender-1", 123, UINT64_MAX, expected)
    assert envelope.kind is kind
    assert envelope.sender == "sender-1"
    assert envelope.incarnation == 123
    assert envelope.seq == UINT64_MAX
    assert envelope.body == expected
    assert envelope.message_id == ("sender-1", 123, UINT64_MAX)

    route, frames = frames_for(kind, header)
    if route == "direct":
        got, payload = decode_direct(frames, MAX)
        assert (got, payload) == (envelope, PAYLOAD)
    else:
        topic, got, payload = decode_published(frames, MAX)
        assert topic == (None if kind is Kind.HEARTBEAT else "news")
        assert (got, payload) == (envelope, PAYLOAD)


def test_members_come_back_as_member_objects() -> None:
    header = encode_header(Kind.HEARTBEAT, "n1", 1, 1, CASES[Kind.HEARTBEAT][0])
    me, gossip, digest, _ = decode_header(header, MAX).body
    assert digest == DIGEST
    assert type(me) is Member
    assert all(type(m) is Member for m in gossip)
    assert me.status is MemberStatus.UP
    assert [m.status for m in gossip] == [MemberStatus.REMOVED, MemberStatus.JOINING]
    assert encode_member(M2) == [
        "node-2.example",
        UINT64_MAX,
        0,
        int(MemberStatus.REMOVED),
        "[::1]:80",
        "host-name:65535",
    ]


def test_tuple_bodies_encode_like_lists() -> None:
    as_tuple = encode_header(Kind.REPLY, "n1", 1, 2, (3, True))
    as_list = encode_header(Kind.REPLY, "n1", 1, 2, [3, True])
    assert as_tuple == as_list
    assert decode_header(as_tuple, MAX).body == (3, True)


@pytest.mark.parametrize("digest", ["", "0123", "0123456789abcdef0", 12345, None])
def test_heartbeat_view_digest_must_be_sixteen_characters(digest: Any) -> None:
    raw = valid_raw(Kind.HEARTBEAT)
    raw[5][2] = digest
    with pytest.raises(WireError, match="view digest"):
        decode_header(msgpack.packb(raw), MAX)


def test_empty_lists_are_valid_bodies() -> None:
    listen = decode_header(encode_header(Kind.LISTEN, "n1", 0, 0, [[]]), MAX)
    assert listen.body == ((),)
    heartbeat = decode_header(
        encode_header(Kind.HEARTBEAT, "n1", 0, 0, [encode_member(M1), [], DIGEST, []]), MAX
    )
    assert heartbeat.body == (M1, (), DIGEST, ())


@pytest.mark.parametrize(
    ("kind", "body", "match"),
    [
        (Kind.DATA, ["w", 1, 1, 1, 0, 1], "must carry a reliable guarantee"),
        (Kind.DATA, ["w", 1, 0, 1, 1, 1], "sequence numbers start at 1"),
        (Kind.DATA, ["w", 1, 1, 1, 9, 1], "unknown delivery guarantee"),
        (Kind.FETCH, ["t", [[5, 4]], "h:1"], "must not end before it starts"),
        (Kind.FETCH, ["t", [[5]], "h:1"], "list of 2 sequence numbers"),
        (Kind.DATA_ACK, [1, 1, 1, 1, [], [[1, "x" * 1025]], 1, []], "at most 1024 characters"),
        (Kind.DATA_ACK, [1, 1, 1, 1, [], [[1]], 1, []], r"list of \[seq, reason\]"),
    ],
)
def test_delivery_bodies_are_checked(kind: Kind, body: list[Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_header(encode_header(kind, "n1", 1, 1, body), MAX)


@pytest.mark.parametrize("body", [[0, 1], [4, 0]])
def test_publication_is_numbered_exactly_when_guaranteed(body: list[int]) -> None:
    header = encode_header(Kind.PUBLISH, "n1", 1, 1, body)
    with pytest.raises(WireError, match="numbered exactly when"):
        decode_published([topic_frame("t"), header, b""], MAX)


def test_header_of_exactly_max_header_bytes_is_accepted() -> None:
    header = encode_header(Kind.PING, "n1", 1, 1, [1, "127.0.0.1:1"])
    assert decode_header(header, len(header)).kind is Kind.PING
    with pytest.raises(
        WireError, match=rf"header of {len(header)} bytes exceeds {len(header) - 1}"
    ):
        decode_header(header, len(header) - 1)


def test_list_count_bound() -> None:
    at_limit = encode_header(Kind.LISTEN, "n1", 0, 0, [["t"] * MAX_LIST_COUNT])
    assert len(decode_header(at_limit, 10 * MAX).body[0]) == MAX_LIST_COUNT
    over = encode_header(Kind.LISTEN, "n1", 0, 0, [["t"] * (MAX_LIST_COUNT + 1)])
    with pytest.raises(WireError, match="bounded list"):
        decode_header(over, 10 * MAX)


# -------------------------------------------------------- strategies for properties

NAME_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
)
names = st.text(NAME_CHARS, min_size=1, max_size=40)
uint64 = st.integers(min_value=0, max_value=UINT64_MAX)
# host names: dot-separated labels of letters and digits, with inner hyphens
hosts = st.from_regex(
    r"[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,6}[a-z0-9])?){0,2}", fullmatch=True
)
ports = st.integers(min_value=1, max_value=65535)
addresses = st.one_of(
    st.builds(format_address, hosts, ports),
    st.builds(lambda p: format_address("::1", p), ports),
)
members = st.builds(
    Member,
    node_id=names,
    incarnation=uint64,
    version=uint64,
    status=st.sampled_from(MemberStatus),
    address=addresses,
    pub_address=addresses,
)
topics = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=30)

msgpack_leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=UINT64_MAX),
    st.sampled_from([0, 1, 2, -1, UINT64_MAX, -(2**63), 2**63, 13, 255, 65535, 65536]),
    st.floats(),
    st.text(max_size=20),
    st.binary(max_size=20),
)
nested_values = st.recursive(
    msgpack_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=7),
        st.dictionaries(
            st.one_of(st.text(max_size=8), st.binary(max_size=8), st.integers(-5, 5)),
            children,
            max_size=4,
        ),
    ),
    max_leaves=40,
)


def decodes_or_wire_error(data: bytes) -> Envelope | None:
    """decode_header; WireError is fine, any other exception fails the test."""
    try:
        envelope = decode_header(data, MAX)
    except WireError:
        return None
    assert isinstance(envelope, Envelope)
    assert isinstance(envelope.kind, Kind)
    return envelope


# ------------------------------------------------------------ property tests


@PROPERTY
@given(st.sampled_from(list(Kind)), names, uint64, uint64)
def test_property_header_fields_round_trip(kind: Kind, sender: str, inc: int, seq: int) -> None:
    body, expected = CASES[kind]
    envelope = decode_header(encode_header(kind, sender, inc, seq, body), MAX)
    assert envelope == Envelope(kind, sender, inc, seq, expected)


@PROPERTY
@given(members, st.lists(members, max_size=5), st.booleans(), addresses)
def test_property_member_records_round_trip(
    me: Member, gossip: list[Member], flag: bool, address: str
) -> None:
    heartbeat = encode_header(
        Kind.HEARTBEAT,
        me.node_id,
        me.incarnation,
        0,
        [encode_member(me), [encode_member(m) for m in gossip], DIGEST, []],
    )
    topic, envelope, _ = decode_published([CONTROL_TOPIC, heartbeat, b""], MAX)
    assert topic is None
    assert envelope.body == (me, tuple(gossip), DIGEST, ())

    sync = encode_header(
        Kind.SYNC, me.node_id, 1, 1, [[encode_member(m) for m in gossip], flag, address]
    )
    envelope, _ = decode_direct([sync, b""], MAX)
    assert envelope.body == (tuple(gossip), flag, address)


@PROPERTY
@given(topics, st.binary(max_size=16))
def test_property_accepted_topics_travel_on_pub(topic: str, payload: bytes) -> None:
    assert check_topic(topic) == topic
    header = encode_header(Kind.PUBLISH, "n1", 1, 2, [0, 0])
    got, envelope, body = decode_published([topic_frame(topic), header, payload], MAX)
    assert (got, envelope.kind, body) == (topic, Kind.PUBLISH, payload)


@PROPERTY
@given(st.binary(max_size=600))
def test_property_arbitrary_bytes_header(data: bytes) -> None:
    decodes_or_wire_error(data)


@PROPERTY
@given(st.binary(max_size=64).map(lambda b: b"\x96\x01" + b))
def test_property_arbitrary_bytes_after_plausible_prefix(data: bytes) -> None:
    # starts like a 6-element header of version 1, so decoding gets past the first checks
    decodes_or_wire_error(data)


frames_strategy = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [encode_header(k, "n1", 1, 1, CASES[k][0]) for k in Kind]
            + [CONTROL_TOPIC, topic_frame("news"), b"t", b"t\x00", b"\x00", b"t\xff\x00"]
        ),
    ),
    min_size=0,
    max_size=4,
)


@PROPERTY
@given(frames_strategy)
def test_property_arbitrary_frames_decode_direct(frames: list[bytes]) -> None:
    try:
        envelope, payload = decode_direct(frames, MAX)
    except WireError:
        return
    assert len(frames) == 2
    assert envelope.kind in DIRECT_KINDS
    assert payload == frames[1]


@PROPERTY
@given(frames_strategy)
def test_property_arbitrary_frames_decode_published(frames: list[bytes]) -> None:
    try:
        topic, envelope, payload = decode_published(frames, MAX)
    except WireError:
        return
    assert len(frames) == 3
    assert payload == frames[2]
    if topic is None:
        assert frames[0] == CONTROL_TOPIC
        assert envelope.kind is Kind.HEARTBEAT
    else:
        assert envelope.kind is Kind.PUBLISH
        assert frames[0] == topic_frame(topic)


@PROPERTY
@given(nested_values)
def test_property_arbitrary_msgpack_values_as_header(value: Any) -> None:
    decodes_or_wire_error(msgpack.packb(value, use_bin_type=True))


@PROPERTY
@given(st.sampled_from(list(Kind)), st.data())
def test_property_arbitrary_value_in_one_header_position(kind: Kind, data: st.DataObject) -> None:
    """A valid header with one field (top-level or body) replaced by an arbitrary value."""
    raw = valid_raw(kind)
    value = data.draw(nested_values, label="value")
    positions = [("top", i) for i in range(6)] + [("body", i) for i in range(len(raw[5]))]
    where, index = data.draw(st.sampled_from(positions), label="position")
    if where == "top":
        raw[index] = value
    else:
        raw[5][index] = value
    envelope = decodes_or_wire_error(msgpack.packb(raw, use_bin_type=True))
    if envelope is not None:
        # whatever was accepted re-encodes to a header that decodes to the same envelope
        again = encode_header(
            envelope.kind,
            envelope.sender,
            envelope.incarnation,
            envelope.seq,
            [_reencode(v) for v in envelope.body],
        )
        assert decode_header(again, MAX) == envelope


def _reencode(value: Any) -> Any:
    if isinstance(value, Member):
        return encode_member(value)
    if isinstance(value, tuple):
        return [_reencode(v) for v in value]
    if isinstance(value, DeliveryGuarantee):
        return GUARANTEE_CODES[value]
    return value


@PROPERTY
@given(st.sampled_from(list(Kind)), st.data())
def test_property_mutated_valid_header(kind: Kind, data: st.DataObject) -> None:
    header = bytearray(encode_header(kind, "sender-1", 5, 6, CASES[kind][0]))
    operation = data.draw(st.sampled_from(["flip", "truncate", "append", "flip-many"]))
    if operation == "flip":
        index = data.draw(st.integers(0, len(header) - 1))
        header[index] ^= data.draw(st.integers(1, 255))
    elif operation == "flip-many":
        for _ in range(data.draw(st.integers(2, 6))):
            index = data.draw(st.integers(0, len(header) - 1))
            header[index] = data.draw(st.integers(0, 255))
    elif operation == "truncate":
        header = header[: data.draw(st.integers(0, len(header) - 1))]
    else:
        header += data.draw(st.binary(min_size=1, max_size=16))
    if operation in ("truncate", "append"):
        # a prefix or an extended frame is never a whole msgpack document
        with pytest.raises(WireError):
            decode_header(bytes(header), MAX)
    else:
        decodes_or_wire_error(bytes(header))


# ------------------------------------------------------------ specific rejections


@pytest.mark.parametrize("version", [0, 2, True, 1.0, "1", None, -1, UINT64_MAX])
def test_rejects_other_protocol_versions(version: Any) -> None:
    raw = valid_raw(Kind.PING)
    raw[0] = version
    with pytest.raises(WireError, match=r"unsupported protocol version .* \(this node speaks 1\)"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("kind", [0, 2, 8, 9, 20, 255, -1, True, 4.0, "PING", None])
def test_rejects_unknown_kinds(kind: Any) -> None:
    raw = valid_raw(Kind.PING)
    raw[1] = kind
    with pytest.raises(WireError, match="unknown message kind"):
        decode_header(msgpack.packb(raw), MAX)


def test_rejects_oversized_header_before_parsing() -> None:
    with pytest.raises(WireError, match="header of 11 bytes exceeds 10"):
        decode_header(b"\xc1" * 11, 10)  # not even msgpack: the size check comes first


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "not valid msgpack"),
        (b"\xc1", "not valid msgpack"),
        (b"\x96\x01", "not valid msgpack"),  # truncated
        (
            encode_header(Kind.ACK, "n1", 0, 0, [0, "n1"]) + b"\x00",
            "not valid msgpack",
        ),  # extra data
        (b"\x96\x01\x04\xa2\xff\xfe\x00\x00\x92\x00\xa1a", "not valid msgpack"),  # invalid UTF-8
        (msgpack.packb({"a": 1}), "header must be a list of 6 fields"),
        (msgpack.packb({1: 1}), "not valid msgpack"),  # non-string map key
        (msgpack.packb([1, 4, "n1", 0, 0]), "header must be a list of 6 fields"),
        (msgpack.packb([1, 4, "n1", 0, 0, [0, "a:1"], None]), "header must be a list of 6 fields"),
        (msgpack.packb(7), "header must be a list of 6 fields"),
        (msgpack.packb(None), "header must be a list of 6 fields"),
    ],
)
def test_rejects_non_header_documents(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_header(data, MAX)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_rejects_body_of_wrong_length(kind: Kind) -> None:
    body = CASES[kind][0]
    for wrong in (body[:-1] if body else None, [*body, 0]):
        if wrong is None:
            continue
        raw = valid_raw(kind)
        raw[5] = wrong
        with pytest.raises(
            WireError, match=rf"{kind.name} body must be a list of {len(body)} fields"
        ):
            decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("body", [None, 0, "x", {"a": 1}, b"\x00"])
def test_rejects_body_that_is_not_a_list(body: Any) -> None:
    raw = valid_raw(Kind.PUBLISH)
    raw[5] = body
    with pytest.raises(WireError, match="PUBLISH body must be a list of 2 fields"):
        decode_header(msgpack.packb(raw, use_bin_type=True), MAX)


@pytest.mark.parametrize("position", [3, 4], ids=["incarnation", "seq"])
@pytest.mark.parametrize(
    "value, type_name",
    [
        (-1, "int"),
        (-(2**63), "int"),
        (True, "bool"),
        (False, "bool"),
        (1.0, "float"),
        ("1", "str"),
        (None, "NoneType"),
    ],
)
def test_rejects_bad_unsigned_integers(position: int, value: Any, type_name: str) -> None:
    raw = valid_raw(Kind.PING)
    raw[position] = value
    with pytest.raises(WireError, match=rf"expected an unsigned 64-bit integer, got {type_name}"):
        decode_header(msgpack.packb(raw), MAX)


def test_unsigned_integer_bounds() -> None:
    raw = valid_raw(Kind.PING)
    raw[3] = raw[4] = UINT64_MAX
    assert decode_header(msgpack.packb(raw), MAX).message_id == ("sender-1", UINT64_MAX, UINT64_MAX)
    # 2**64 has no msgpack encoding at all, so check the validator itself
    assert wire._uint(UINT64_MAX) == UINT64_MAX
    with pytest.raises(WireError, match="unsigned 64-bit"):
        wire._uint(2**64)
    with pytest.raises(WireError, match="unsigned 64-bit"):
        wire._uint(-1)
    with pytest.raises(OverflowError):
        encode_header(Kind.PING, "n1", 0, 2**64, [0, "a:1"])


@pytest.mark.parametrize(
    "kind, index, value, message",
    [
        (Kind.PING, 0, -1, "unsigned 64-bit integer, got int"),
        (Kind.PING, 0, True, "unsigned 64-bit integer, got bool"),
        (Kind.ACK, 0, 2.5, "unsigned 64-bit integer, got float"),
        (Kind.REQUEST, 1, False, "unsigned 64-bit integer, got bool"),
        (Kind.REPLY, 0, True, "unsigned 64-bit integer, got bool"),
        (Kind.REPLY, 1, 1, "expected a boolean, got int"),
        (Kind.REPLY, 1, None, "expected a boolean, got NoneType"),
        (Kind.SYNC, 1, 0, "expected a boolean, got int"),
    ],
)
def test_rejects_wrong_scalar_types_in_bodies(
    kind: Kind, index: int, value: Any, message: str
) -> None:
    raw = valid_raw(kind)
    raw[5][index] = value
    with pytest.raises(WireError, match=message):
        decode_header(msgpack.packb(raw), MAX)


BAD_NAMES = [
    "",
    "a b",
    " ",
    "tab\there",
    "new\nline",
    "nul\x00",
    "\x7f",
    "x" * (MAX_NAME_BYTES + 1),
    "é" * 128,
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_rejects_invalid_sender_node_id(name: str) -> None:
    raw = valid_raw(Kind.PING)
    raw[2] = name
    with pytest.raises(WireError, match="node id must be"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("value", [None, 1, b"n1", ["n1"]])
def test_rejects_non_string_sender(value: Any) -> None:
    raw = valid_raw(Kind.PING)
    raw[2] = value
    with pytest.raises(WireError, match="node id must be a non-empty printable string"):
        decode_header(msgpack.packb(raw, use_bin_type=True), MAX)


def test_node_id_length_limit_is_in_utf8_bytes() -> None:
    for ok in ("x" * MAX_NAME_BYTES, "é" * (MAX_NAME_BYTES // 2)):
        raw = valid_raw(Kind.PING)
        raw[2] = ok
        assert decode_header(msgpack.packb(raw), MAX).sender == ok
    raw = valid_raw(Kind.PING)
    raw[2] = "x" * (MAX_NAME_BYTES + 1)
    with pytest.raises(WireError, match=f"node id must be at most {MAX_NAME_BYTES} bytes"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize(
    "kind, index", [(Kind.PING_REQ, 2), (Kind.ACK, 1)], ids=["PING_REQ", "ACK"]
)
@pytest.mark.parametrize("name", ["", "a b", "x" * 256])
def test_rejects_invalid_node_id_in_body(kind: Kind, index: int, name: str) -> None:
    raw = valid_raw(kind)
    raw[5][index] = name
    with pytest.raises(WireError, match="node id must be"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("name", ["", "a b", "x" * 256, None])
def test_rejects_invalid_handler_names(name: Any) -> None:
    for kind in (Kind.SEND, Kind.REQUEST):
        raw = valid_raw(kind)
        raw[5][0] = name
        with pytest.raises(WireError, match="name must be"):
            decode_header(msgpack.packb(raw), MAX)


BAD_ADDRESSES = [
    "",
    "host",
    ":80",
    "host:0",
    "host:65536",
    "::1:80",
    "h st:1",
    "host:8a",
    "[::1:80",
    80,
    None,
    b"a:1",
]


@pytest.mark.parametrize("address", BAD_ADDRESSES)
def test_rejects_invalid_address_in_sync(address: Any) -> None:
    raw = valid_raw(Kind.SYNC)
    raw[5][2] = address
    with pytest.raises(WireError, match="expected a HOST:PORT address"):
        decode_header(msgpack.packb(raw, use_bin_type=True), MAX)


@pytest.mark.parametrize("field", [4, 5], ids=["address", "pub_address"])
@pytest.mark.parametrize("address", ["host", "host:0", "::1:80"])
def test_rejects_invalid_address_in_member_record(field: int, address: str) -> None:
    record = encode_member(M1)
    record[field] = address
    raw = valid_raw(Kind.SYNC)
    raw[5][0] = [encode_member(M2), record]
    with pytest.raises(WireError, match="expected a HOST:PORT address"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize(
    "kind, index",
    [(Kind.PING, 1), (Kind.PING_REQ, 1), (Kind.REQUEST, 2)],
    ids=["PING", "PING_REQ", "REQUEST"],
)
def test_rejects_invalid_reply_addresses(kind: Kind, index: int) -> None:
    raw = valid_raw(kind)
    raw[5][index] = "no-port"
    with pytest.raises(WireError, match="expected a HOST:PORT address"):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize(
    "record, message",
    [
        (["n1", 1, 1, 1, "a:1"], "member record must be a list of 6 fields"),
        (["n1", 1, 1, 1, "a:1", "a:2", 0], "member record must be a list of 6 fields"),
        ({"node_id": "n1"}, "member record must be a list of 6 fields"),
        ("n1", "member record must be a list of 6 fields"),
        (["n1", 1, 1, 7, "a:1", "a:2"], "unknown member status 7"),
        (["n1", 1, 1, -1, "a:1", "a:2"], "unknown member status -1"),
        (["n1", 1, 1, True, "a:1", "a:2"], "unknown member status True"),
        (["n1", 1, 1, "up", "a:1", "a:2"], "unknown member status 'up'"),
        (["n1", -1, 1, 1, "a:1", "a:2"], "unsigned 64-bit"),
        (["n1", 1, True, 1, "a:1", "a:2"], "unsigned 64-bit integer, got bool"),
        (["", 1, 1, 1, "a:1", "a:2"], "node id must be"),
    ],
)
def test_rejects_bad_member_records(record: Any, message: str) -> None:
    raw = valid_raw(Kind.HEARTBEAT)
    raw[5][0] = record
    with pytest.raises(WireError, match=message):
        decode_header(msgpack.packb(raw), MAX)
    # and inside the gossip list
    raw = valid_raw(Kind.HEARTBEAT)
    raw[5][1] = [encode_member(M2), record]
    with pytest.raises(WireError, match=message):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize(
    "value", [None, "news", {"news": 1}, [""], ["a\x00b"], ["x" * (MAX_TOPIC_BYTES + 1)], [1]]
)
def test_rejects_bad_listen_bodies(value: Any) -> None:
    raw = valid_raw(Kind.LISTEN)
    raw[5][0] = value
    with pytest.raises(WireError):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("count", [0, 1, 3, 4])
def test_decode_direct_rejects_wrong_frame_counts(count: int) -> None:
    header = encode_header(Kind.ACK, "n1", 0, 0, [0, "n1"])
    with pytest.raises(WireError, match=f"direct message must have 2 frames, got {count}"):
        decode_direct([header] * count, MAX)


@pytest.mark.parametrize("count", [0, 1, 2, 4, 5])
def test_decode_published_rejects_wrong_frame_counts(count: int) -> None:
    header = encode_header(Kind.PUBLISH, "n1", 0, 0, [0, 0])
    frames = [topic_frame("news"), header, b"", b"", b""][:count]
    with pytest.raises(WireError, match=f"published message must have 3 frames, got {count}"):
        decode_published(frames, MAX)


def test_heartbeat_on_user_topic_is_rejected() -> None:
    header = encode_header(Kind.HEARTBEAT, "n1", 0, 0, CASES[Kind.HEARTBEAT][0])
    with pytest.raises(WireError, match="HEARTBEAT cannot be sent on a user topic"):
        decode_published([topic_frame("news"), header, b""], MAX)


def test_publish_on_control_topic_is_rejected() -> None:
    header = encode_header(Kind.PUBLISH, "n1", 0, 0, [0, 0])
    with pytest.raises(WireError, match="PUBLISH cannot be sent on the control topic"):
        decode_published([CONTROL_TOPIC, header, b""], MAX)


@pytest.mark.parametrize(
    "first, message",
    [
        (b"news\x00", "malformed topic frame"),  # no prefix
        (b"tnews", "malformed topic frame"),  # no terminator
        (b"t\x00", "malformed topic frame"),  # empty topic
        (b"t", "malformed topic frame"),
        (b"", "malformed topic frame"),
        (b"\x00", "malformed topic frame"),
        (b"~~", "malformed topic frame"),
        (b"Tnews\x00", "malformed topic frame"),
        (b"t\xff\xfe\x00", "topic is not valid UTF-8"),
        (b"t\xc3\x00", "topic is not valid UTF-8"),  # truncated 2-byte sequence
        (b"t\xed\xa0\x80\x00", "topic is not valid UTF-8"),  # encoded surrogate
        (b"ta\x00b\x00", "no NUL"),
        (b"t" + b"x" * (MAX_TOPIC_BYTES + 1) + b"\x00", f"at most {MAX_TOPIC_BYTES} bytes"),
    ],
)
def test_malformed_topic_frames_are_rejected(first: bytes, message: str) -> None:
    header = encode_header(Kind.PUBLISH, "n1", 0, 0, [0, 0])
    with pytest.raises(WireError, match=message):
        decode_published([first, header, b""], MAX)


def test_longest_topic_frame_is_accepted() -> None:
    topic = "x" * MAX_TOPIC_BYTES
    header = encode_header(Kind.PUBLISH, "n1", 0, 0, [0, 0])
    assert decode_published([topic_frame(topic), header, b"p"], MAX)[0] == topic


@pytest.mark.parametrize("kind", sorted(DIRECT_KINDS), ids=lambda k: k.name)
def test_direct_only_kinds_are_rejected_on_pub(kind: Kind) -> None:
    header = encode_header(kind, "n1", 0, 0, CASES[kind][0])
    with pytest.raises(WireError, match=f"{kind.name} cannot be sent on the control topic"):
        decode_published([CONTROL_TOPIC, header, b""], MAX)
    with pytest.raises(WireError, match=f"{kind.name} cannot be sent on a user topic"):
        decode_published([topic_frame("news"), header, b""], MAX)


@pytest.mark.parametrize("kind", [Kind.PUBLISH, Kind.HEARTBEAT], ids=lambda k: k.name)
def test_pub_only_kinds_are_rejected_by_decode_direct(kind: Kind) -> None:
    header = encode_header(kind, "n1", 0, 0, CASES[kind][0])
    with pytest.raises(WireError, match=f"{kind.name} is not a direct message kind"):
        decode_direct([header, b""], MAX)


def test_frame_level_decoders_respect_max_header_bytes() -> None:
    header = encode_header(Kind.ACK, "n1", 0, 0, [0, "n1"])
    with pytest.raises(WireError, match="exceeds"):
        decode_direct([header, b""], len(header) - 1)
    header = encode_header(Kind.PUBLISH, "n1", 0, 0, [0, 0])
    with pytest.raises(WireError, match="exceeds"):
        decode_published([topic_frame("a"), header, b""], len(header) - 1)


@pytest.mark.parametrize("position", ["version", "kind", "member status"])
def test_deeply_nested_rejected_value_raises_wire_error(position: str) -> None:
    deep: Any = 0
    for _ in range(1015):  # msgpack's unpacker accepts nesting up to 1024
        deep = [deep]
    raw = valid_raw(Kind.HEARTBEAT)
    if position == "version":
        raw[0] = deep
    elif position == "kind":
        raw[1] = deep
    else:
        raw[5][0] = ["n1", 1, 1, deep, "a:1", "a:2"]
    data = msgpack.packb(raw)
    assert len(data) < 2048
    with pytest.raises(WireError):
        decode_header(data, MAX)


# ------------------------------------------------------- topic and name rules


def test_topic_frame_layout() -> None:
    assert topic_frame("news") == b"tnews\x00"
    assert topic_frame("ü") == b"t\xc3\xbc\x00"
    assert topic_frame("a b") == b"ta b\x00"
    # user topic frames always sort before the control topic
    assert topic_frame("\U0010ffff" * 10) < CONTROL_TOPIC


@pytest.mark.parametrize(
    "topic", ["a", "news", "a b", "ü", "x" * MAX_TOPIC_BYTES, "é" * (MAX_TOPIC_BYTES // 2), "\t\n"]
)
def test_check_topic_accepts(topic: str) -> None:
    assert check_topic(topic) == topic


@pytest.mark.parametrize(
    "topic, message",
    [
        ("", "non-empty string"),
        (None, "non-empty string"),
        (b"news", "non-empty string"),
        (5, "non-empty string"),
        ("a\x00b", "no NUL"),
        ("\x00", "no NUL"),
        ("x" * (MAX_TOPIC_BYTES + 1), f"at most {MAX_TOPIC_BYTES} bytes"),
        ("é" * (MAX_TOPIC_BYTES // 2 + 1), f"at most {MAX_TOPIC_BYTES} bytes"),
    ],
)
def test_check_topic_rejects(topic: Any, message: str) -> None:
    with pytest.raises(WireError, match=message):
        check_topic(topic)


@pytest.mark.parametrize("topic", ["\udc80", "a\ud800b"])
def test_check_topic_rejects_topics_topic_frame_cannot_encode(topic: str) -> None:
    try:
        check_topic(topic)
    except WireError:
        return
    topic_frame(topic)  # if accepted, it must be encodable


@pytest.mark.parametrize("name", ["n1", "x" * MAX_NAME_BYTES, "node-1.example_2", "é", "a/b:c"])
def test_check_name_accepts(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize("name", [*BAD_NAMES, None, 5, b"n1", "\u00a0", "\u2028"])
def test_check_name_rejects(name: Any) -> None:
    with pytest.raises(WireError, match=r"^handler name must be"):
        check_name(name, "handler name")


def test_check_name_default_label_and_length_message() -> None:
    with pytest.raises(
        WireError, match=r"^name must be a non-empty printable string without spaces$"
    ):
        check_name("")
    with pytest.raises(WireError, match=f"^name must be at most {MAX_NAME_BYTES} bytes$"):
        check_name("x" * (MAX_NAME_BYTES + 1))


# ---------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    "text, expected",
    [
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:80", ("::1", 80)),
        ("host-name:65535", ("host-name", 65535)),
        ("[fe80::1%eth0]:7000", ("fe80::1%eth0", 7000)),
    ],
)
def test_parse_address_accepts(text: str, expected: tuple[str, int]) -> None:
    assert parse_address(text) == expected
    assert is_valid_address(text)
    assert format_address(*expected) == text


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "expected HOST:PORT"),
        ("host", "expected HOST:PORT"),
        (":80", "expected HOST:PORT"),
        ("host:", "expected HOST:PORT"),
        ("host:0", r"port must be 1\.\.65535"),
        ("host:65536", r"port must be 1\.\.65535"),
        ("::1:80", "IPv6 hosts need brackets"),
        ("h st:1", "bad host"),
        ("a/b:1", "bad host"),
        ("user@host:1", "bad host"),
        ("host:8a", "expected HOST:PORT"),
        ("host:-1", "expected HOST:PORT"),
        ("host: 80", "expected HOST:PORT"),
        ("host:\u0668", "expected HOST:PORT"),  # non-ASCII digit
        ("[::1:80", "unbalanced brackets"),
        ("[]:80", "unbalanced brackets"),
        ("x" * 251 + ":8000", "expected HOST:PORT"),  # longer than 255
        # hosts libzmq would refuse at connect(): never accepted from the wire
        ("*:5", "bad host"),
        ("%:5", "bad host"),
        ("a#b:5", "bad host"),
        ("..:5", "bad host"),
        ("a..b:5", "bad host"),
        ("-:5", "bad host"),
        ("host-:5", "bad host"),
        ("[*]:5", "bad IPv6 address"),
        ("[1.2.3.4]:5", "bad IPv6 address"),
    ],
)
def test_parse_address_rejects(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_address(text)
    assert not is_valid_address(text)


def test_wildcard_hosts_are_only_for_binding() -> None:
    assert parse_address("*:7000", allow_wildcard=True) == ("*", 7000)
    assert parse_address("0.0.0.0:0", allow_port_zero=True) == ("0.0.0.0", 0)
    with pytest.raises(ConfigError, match="bad host"):
        parse_address("*:7000")


@pytest.mark.parametrize("value", [None, 80, b"a:1", ["a:1"]])
def test_parse_address_rejects_non_strings(value: Any) -> None:
    with pytest.raises(ConfigError):
        parse_address(value)
    assert is_valid_address(value) is False


def test_port_zero_only_when_allowed() -> None:
    with pytest.raises(ConfigError, match=r"port must be 1\.\.65535"):
        parse_address("host:0")
    assert parse_address("host:0", allow_port_zero=True) == ("host", 0)
    assert parse_address("[::]:0", allow_port_zero=True) == ("::", 0)
    with pytest.raises(ConfigError, match=r"port must be 0\.\.65535"):
        parse_address("host:65536", allow_port_zero=True)


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        parse_address("nope")


@PROPERTY_SMALL
@given(hosts, st.integers(0, 65535))
def test_property_format_then_parse_round_trips(host: str, port: int) -> None:
    assert parse_address(format_address(host, port), allow_port_zero=True) == (host, port)
    assert parse_address(format_address("::1", port), allow_port_zero=True) == ("::1", port)


@PROPERTY
@given(st.text(max_size=30))
def test_property_parse_address_only_raises_config_error(text: str) -> None:
    try:
        host, port = parse_address(text, allow_port_zero=True)
    except ConfigError:
        assert not is_valid_address(text)
        return
    assert 0 <= port <= 65535
    assert host
    assert format_address(host, port).endswith(f":{port}")
