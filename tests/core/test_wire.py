"""Tests of the wire format (zcluster/wire.py) and of HOST:PORT parsing (zcluster/address.py).

The contract under test: decoding never trusts a frame; anything malformed raises
WireError and nothing else, and every typed message encoded by this module decodes
back to an equal message. Where the protocol may grow (extra header elements, body
fields and member-record fields, capabilities) decoding is tolerant, within bounds.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import wire
from zcluster.address import format_address, is_valid_address, parse_address
from zcluster.errors import ConfigError, WireError
from zcluster.protocol import capabilities
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus
from zcluster.wire import (
    CONTROL_TOPIC,
    DIRECT_KINDS,
    MAX_CAPABILITIES_BYTES,
    MAX_CAPABILITIES_COUNT,
    MAX_CAPABILITY_CHARS,
    MAX_CONTAINERS_COUNT,
    MAX_FIELDS_COUNT,
    MAX_LIST_COUNT,
    MAX_NAME_BYTES,
    MAX_REASON_CHARS,
    MAX_TOPIC_BYTES,
    MEMBER_FIELDS_COUNT,
    PROTOCOL_VERSION,
    UINT64_MAX,
    Encoder,
    Envelope,
    Kind,
    check_name,
    check_topic,
    decode_capabilities,
    decode_direct,
    decode_header,
    decode_published,
    encode_body,
    encode_capabilities,
    encode_header,
    encode_member,
    personal_frame,
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
AMO = DeliveryGuarantee.AT_MOST_ONCE

#: the bytes of an announcement of {fields} (docs/protocol.md, section 9.3)
FIELDS_PAYLOAD = bytes.fromhex("81a46361707391a66669656c6473")

#: for every kind: (encoded body, expected decoded message)
CASES: dict[Kind, tuple[list[Any], msg.Message]] = {
    Kind.HEARTBEAT: (
        [encode_member(M1), [encode_member(M2), encode_member(M3)], DIGEST, [["news", 7]]],
        msg.Heartbeat(M1, (M2, M3), DIGEST, (("news", 7),)),
    ),
    Kind.SYNC: (
        [[encode_member(M2), encode_member(M1)], True, "10.1.2.3:5"],
        msg.Sync((M2, M1), True, "10.1.2.3:5"),
    ),
    Kind.PING: ([42, "127.0.0.1:9"], msg.Ping(42, "127.0.0.1:9")),
    Kind.PING_REQ: ([UINT64_MAX, "[::1]:9", "n3"], msg.PingReq(UINT64_MAX, "[::1]:9", "n3")),
    Kind.ACK: ([0, "n3"], msg.Ack(0, "n3")),
    Kind.LISTEN: ([["news", "a b/c", "ünïcode"]], msg.Listen(("news", "a b/c", "ünïcode"))),
    Kind.SEND: (["handler.v1"], msg.Send("handler.v1")),
    Kind.REQUEST: (["echo", 9, "host-name:1"], msg.Request("echo", 9, "host-name:1")),
    Kind.REPLY: ([9, False], msg.Reply(9, False)),
    Kind.PUBLISH: ([3, 1], msg.Publish(3, DeliveryGuarantee.AT_LEAST_ONCE)),
    Kind.DATA: (
        ["work", 11, 5, 2, 3, 1],
        msg.Data("work", 11, 5, 2, DeliveryGuarantee.ORDERED, 1),
    ),
    Kind.DATA_BATCH: (
        [4, 1, [["work", 11, 5, 3, 1], ["w2", UINT64_MAX, 6, 1, len(PAYLOAD) - 1]]],
        msg.DataBatch(
            4,
            1,
            (
                ("work", 11, 5, DeliveryGuarantee.ORDERED, 1),
                ("w2", UINT64_MAX, 6, DeliveryGuarantee.AT_LEAST_ONCE, len(PAYLOAD) - 1),
            ),
        ),
    ),
    Kind.DATA_ACK: (
        [9, 1, 2, 4, [6, 8], [[6, "handler raised"]], 5, [10]],
        msg.DataAck(9, 1, 2, 4, (6, 8), ((6, "handler raised"),), 5, (10,)),
    ),
    Kind.FETCH: (
        ["news", [[1, 3], [7, 7]], "[::1]:9"],
        msg.Fetch("news", ((1, 3), (7, 7)), "[::1]:9"),
    ),
    Kind.REPUBLISH: (["news", 2, 2], msg.Republish("news", 2, DeliveryGuarantee.EXACTLY_ONCE)),
    Kind.LOST: (["news", [[1, 40]]], msg.Lost("news", ((1, 40),))),
    Kind.LISTENING: ([[["news", 0], ["b", 9]]], msg.Listening((("news", 0), ("b", 9)))),
    Kind.NACK: ([5, "n3"], msg.Nack(5, "n3")),
    Kind.GOSSIP: (
        [
            [[encode_member(M1), ["fields", "swim"], []], [encode_member(M2), [], ["n1", "n3"]]],
            DIGEST,
        ],
        msg.Gossip((msg.News(M1, ("fields", "swim"), ()), msg.News(M2, (), ("n1", "n3"))), DIGEST),
    ),
    Kind.BEACON: ([7], msg.Beacon(7)),
    Kind.FLUSH: ([[["news", 9], ["b", 2]]], msg.Flush((("news", 9), ("b", 2)))),
    Kind.FLUSHED: ([], msg.Flushed()),
    Kind.REFUSE: ([1, "127.0.0.1:7003"], msg.Refuse(1, "127.0.0.1:7003")),
    Kind.AUTH: (["jwt"], msg.Auth("jwt")),
    Kind.PREPARE: ([9, "book", ["n1", "n2"], 2000], msg.Prepare(9, "book", ("n1", "n2"), 2000)),
    Kind.TXN: (
        ["n3", UINT64_MAX, 9, 2, "no stock"],
        msg.Txn("n3", UINT64_MAX, 9, msg.TxnState.REFUSED, "no stock"),
    ),
}

NEWS = msg.News(M3, ("fields", "swim"), ())
#: kinds with optional body fields (revision 1.2, ``swim``): every field this revision knows
FULL: dict[Kind, tuple[list[Any], msg.Message]] = {
    Kind.LISTEN: ([["news"], ["prices."]], msg.Listen(("news",), ("prices.",))),
    Kind.DATA: (
        ["work", 7, 3, 2, 2, 1, UINT64_MAX],
        msg.Data("work", 7, 3, 2, DeliveryGuarantee.EXACTLY_ONCE, 1, UINT64_MAX),
    ),
    Kind.PING: (
        [42, "127.0.0.1:9", [[encode_member(M3), ["fields", "swim"], []]], DIGEST],
        msg.Ping(42, "127.0.0.1:9", (NEWS,), DIGEST),
    ),
    Kind.PING_REQ: (
        [UINT64_MAX, "[::1]:9", "n3", [], DIGEST],
        msg.PingReq(UINT64_MAX, "[::1]:9", "n3", (), DIGEST),
    ),
    Kind.ACK: (
        [0, "n3", [[encode_member(M2), [], ["n1"]]], DIGEST],
        msg.Ack(0, "n3", (msg.News(M2, (), ("n1",)),), DIGEST),
    ),
    Kind.SYNC: (
        [[encode_member(M1)], False, "10.1.2.3:5", [["n1", 7, ["fields", "swim"]], ["x", 1, []]]],
        msg.Sync((M1,), False, "10.1.2.3:5", (), (("n1", 7, ("fields", "swim")), ("x", 1, ()))),
    ),
}


def full(kind: Kind) -> tuple[list[Any], msg.Message]:
    """``kind`` with every body field this revision knows, optional ones included."""
    return FULL.get(kind) or CASES[kind]


#: kinds whose payload frame carries the sender's capabilities
ANNOUNCING = {Kind.HEARTBEAT, Kind.SYNC}
#: kinds that travel on PUB to one subscriber, on its personal frame (here "n9"'s)
PERSONAL = {Kind.FLUSH}

#: values that may stand in an ignored (extra) field: anything msgpack can carry
EXTRAS: list[Any] = [None, "x", -1, 1.5, b"\x00\xff", [1, [2, "deep"]], {"k": b"v"}, True]


def raw_header(*fields: Any) -> bytes:
    """msgpack-encode an arbitrary (possibly invalid) header list."""
    return msgpack.packb(list(fields), use_bin_type=True)


def valid_raw(kind: Kind) -> list[Any]:
    """A valid header for ``kind`` as a Python list (to be altered, then packed)."""
    return [PROTOCOL_VERSION, int(kind), "sender-1", 5, 6, list(CASES[kind][0])]


def payload_for(kind: Kind) -> bytes:
    """A payload frame ``kind`` may carry: capabilities for HEARTBEAT and SYNC, else opaque."""
    return FIELDS_PAYLOAD if kind in ANNOUNCING else PAYLOAD


def with_caps(message: msg.Message, caps: tuple[str, ...]) -> msg.Message:
    """``message`` as announced with ``caps`` (unchanged for kinds that announce nothing)."""
    if isinstance(message, msg.Heartbeat | msg.Sync):
        return dataclasses.replace(message, capabilities=caps)
    return message


def without_reader(message: msg.Message) -> msg.Message:
    """``message`` as its header alone decodes: the personal frame names the reader."""
    if isinstance(message, msg.Flush):
        return dataclasses.replace(message, to=None)
    return message


def as_received(message: msg.Message) -> msg.Message:
    """``message`` as its frames decode: one sent on a personal frame names its reader."""
    if isinstance(message, msg.Flush):
        return dataclasses.replace(message, to="n9")
    return message


def frames_for(kind: Kind, header: bytes) -> tuple[str, list[bytes]]:
    """Frames in which ``kind`` legitimately travels: ('direct'|'pub', frames)."""
    if kind in DIRECT_KINDS:
        return "direct", [header, payload_for(kind)]
    if kind in PERSONAL:
        return "pub", [personal_frame("n9"), header, payload_for(kind)]
    first = CONTROL_TOPIC if kind is Kind.HEARTBEAT else topic_frame("news")
    return "pub", [first, header, payload_for(kind)]


def decode_frames(kind: Kind, frames: list[bytes]) -> tuple[str | None, Envelope, bytes]:
    """Decode frames as the socket receiving ``kind`` would: (topic or None, envelope, payload)."""
    if kind in DIRECT_KINDS:
        envelope, payload = decode_direct(frames, MAX)
        return None, envelope, payload
    return decode_published(frames, MAX)


# ---------------------------------------------------------------- round trips


def test_cases_cover_every_kind() -> None:
    assert set(CASES) == set(Kind)
    assert set(Kind) - {Kind.HEARTBEAT, Kind.PUBLISH, Kind.BEACON, Kind.FLUSH} == DIRECT_KINDS
    assert all(message.KIND is kind for kind, (_, message) in CASES.items())


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
        "NACK": 20,
        "GOSSIP": 21,
        "BEACON": 22,
        "DATA_BATCH": 23,
        "FLUSH": 24,
        "FLUSHED": 25,
        "REFUSE": 26,
        "AUTH": 27,
        "PREPARE": 28,
        "TXN": 29,
    }


def test_wire_reexports_the_protocol_vocabulary() -> None:
    assert wire.Kind is msg.Kind
    assert wire.Envelope is msg.Envelope
    assert wire.DIRECT_KINDS is msg.DIRECT_KINDS


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_round_trip_every_kind(kind: Kind) -> None:
    body, expected = CASES[kind]
    header = encode_header(kind, "sender-1", 123, UINT64_MAX, body)
    assert isinstance(header, bytes)

    envelope = decode_header(header, MAX)
    assert envelope == Envelope("sender-1", 123, UINT64_MAX, expected)
    assert envelope.kind is kind
    assert envelope.sender == "sender-1"
    assert envelope.incarnation == 123
    assert envelope.seq == UINT64_MAX
    assert envelope.message == expected
    assert type(envelope.message) is type(expected)
    assert envelope.message_id == ("sender-1", 123, UINT64_MAX)

    # the typed message gives the same body, so the same bytes
    assert encode_header(kind, "sender-1", 123, UINT64_MAX, encode_body(expected)) == header

    route, frames = frames_for(kind, header)
    topic, got, payload = decode_frames(kind, frames)
    assert payload == payload_for(kind)
    # HEARTBEAT and SYNC carry the sender's capabilities in their payload frame
    caps = ("fields",) if kind in ANNOUNCING else ()
    assert got == Envelope("sender-1", 123, UINT64_MAX, as_received(with_caps(expected, caps)))
    if route == "direct":
        assert topic is None
    else:
        assert topic == (None if kind in (Kind.HEARTBEAT, *PERSONAL) else "news")


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_encoder_frames_decode_to_the_same_message(kind: Kind) -> None:
    message = with_caps(CASES[kind][1], capabilities.SUPPORTED)
    encoder = Encoder("sender-1", 123)
    if kind in DIRECT_KINDS:
        frames = list(encoder.direct(message, PAYLOAD))
        assert len(frames) == 2
    elif kind in PERSONAL:
        message = as_received(message)
        frames = list(encoder.published(None, message, PAYLOAD))
        assert len(frames) == 3
        assert frames[0] == personal_frame("n9")
    else:
        topic = None if kind is Kind.HEARTBEAT else "news"
        frames = list(encoder.published(topic, message, PAYLOAD))
        assert len(frames) == 3
        assert frames[0] == (CONTROL_TOPIC if topic is None else topic_frame(topic))
    # the payload frame of HEARTBEAT and SYNC is their announcement, not the payload given
    sent = encode_capabilities(capabilities.SUPPORTED) if kind in ANNOUNCING else PAYLOAD
    assert frames[-1] == sent
    # the header is the raw encoding of the message's body, numbered 1 by a new encoder
    assert frames[-2] == encode_header(kind, "sender-1", 123, 1, CASES[kind][0])
    topic_got, envelope, payload = decode_frames(kind, frames)
    assert envelope == Envelope("sender-1", 123, 1, message)
    assert payload == sent
    assert topic_got == (None if kind in (Kind.HEARTBEAT, *PERSONAL, *DIRECT_KINDS) else "news")


def test_encoder_numbers_its_headers_one_two_three() -> None:
    encoder = Encoder("n1", 4)
    ping = msg.Ping(1, "h:1")
    first = decode_header(encoder.header(ping), MAX)
    second, _ = decode_direct(list(encoder.direct(ping, b"")), MAX)
    _, third, _ = decode_published(list(encoder.published("t", msg.Publish(0, AMO), b"")), MAX)
    assert [e.message_id for e in (first, second, third)] == [
        ("n1", 4, 1),
        ("n1", 4, 2),
        ("n1", 4, 3),
    ]
    # each encoder numbers its own messages
    assert decode_header(Encoder("n1", 5).header(ping), MAX).message_id == ("n1", 5, 1)
    assert decode_header(encoder.header(ping), MAX).seq == 4


def test_members_come_back_as_member_objects() -> None:
    header = encode_header(Kind.HEARTBEAT, "n1", 1, 1, CASES[Kind.HEARTBEAT][0])
    heartbeat = decode_header(header, MAX).message
    assert isinstance(heartbeat, msg.Heartbeat)
    assert heartbeat.digest == DIGEST
    assert type(heartbeat.me) is Member
    assert type(heartbeat.updates) is tuple
    assert all(type(m) is Member for m in heartbeat.updates)
    assert heartbeat.me.status is MemberStatus.UP
    assert [m.status for m in heartbeat.updates] == [MemberStatus.REMOVED, MemberStatus.JOINING]
    assert encode_member(M2) == [
        "node-2.example",
        UINT64_MAX,
        0,
        int(MemberStatus.REMOVED),
        "[::1]:80",
        "host-name:65535",
    ]


def lists_in(value: Any) -> list[Any]:
    """Every list in ``value``, looking into tuples and messages (members included)."""
    if isinstance(value, list):
        return [value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = tuple(getattr(value, f.name) for f in dataclasses.fields(value))
    if isinstance(value, tuple):
        return [found for item in value for found in lists_in(item)]
    return []


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_nested_lists_come_back_as_tuples_of_tuples(kind: Kind) -> None:
    message = decode_header(encode_header(kind, "n1", 1, 1, CASES[kind][0]), MAX).message
    assert lists_in(message) == []
    assert lists_in(msg.Fetch("t", ((1, 2), [3, 4]), "h:1")) == [[3, 4]]  # the check works


def test_tuple_bodies_encode_like_lists() -> None:
    as_tuple = encode_header(Kind.REPLY, "n1", 1, 2, (3, True))
    as_list = encode_header(Kind.REPLY, "n1", 1, 2, [3, True])
    assert as_tuple == as_list
    assert decode_header(as_tuple, MAX).message == msg.Reply(3, True)


@pytest.mark.parametrize("digest", ["", "0123", "0123456789abcdef0", 12345, None])
def test_heartbeat_view_digest_must_be_sixteen_characters(digest: Any) -> None:
    raw = valid_raw(Kind.HEARTBEAT)
    raw[5][2] = digest
    with pytest.raises(WireError, match="view digest"):
        decode_header(msgpack.packb(raw), MAX)


def test_empty_lists_are_valid_bodies() -> None:
    listen = decode_header(encode_header(Kind.LISTEN, "n1", 0, 0, [[]]), MAX)
    assert listen.message == msg.Listen(())
    heartbeat = decode_header(
        encode_header(Kind.HEARTBEAT, "n1", 0, 0, [encode_member(M1), [], DIGEST, []]), MAX
    )
    assert heartbeat.message == msg.Heartbeat(M1, (), DIGEST, ())


@pytest.mark.parametrize(
    ("kind", "body", "match"),
    [
        (Kind.DATA, ["w", 1, 1, 1, 0, 1], "must carry a reliable guarantee"),
        (Kind.DATA, ["w", 1, 0, 1, 1, 1], "sequence numbers start at 1"),
        (Kind.DATA, ["w", 1, 1, 1, 9, 1], "unknown delivery guarantee"),
        (Kind.FETCH, ["t", [[5, 4]], "h:1"], "must not end before it starts"),
        (Kind.FETCH, ["t", [[5]], "h:1"], "list of 2 sequence numbers"),
        (Kind.DATA_BATCH, [1, 1, []], "carries 1 to 1024 records"),
        (Kind.DATA_BATCH, [1, 1, [["w", 1, 1, 1, 0]] * 1025], "carries 1 to 1024 records"),
        (Kind.DATA_BATCH, [1, 1, [["w", 1, 1, 1]]], r"must be \[name, number, seq"),
        (Kind.DATA_BATCH, [1, 1, [["w", 1, 1, 0, 0]]], "must carry a reliable guarantee"),
        (Kind.DATA_BATCH, [0, 1, [["w", 1, 1, 1, 0]]], "sequence numbers start at 1"),
        (Kind.DATA_BATCH, [1, 1, [["w", 1, 1, 1, -1]]], "unsigned 64-bit"),
        (Kind.DATA_BATCH, [1, 1, [["a b", 1, 1, 1, 0]]], "without spaces"),
        (Kind.DATA_ACK, [1, 1, 1, 1, [], [[1, "x" * 1025]], 1, []], "at most 1024 characters"),
        (Kind.DATA_ACK, [1, 1, 1, 1, [], [[1]], 1, []], r"list of \[seq, reason\]"),
    ],
)
def test_delivery_bodies_are_checked(kind: Kind, body: list[Any], match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_header(encode_header(kind, "n1", 1, 1, body), MAX)


@pytest.mark.parametrize("sizes", [(0, 0), (1, 1), (len(PAYLOAD), 1), (UINT64_MAX, 0)])
def test_data_batch_sizes_must_add_up_to_its_payload(sizes: tuple[int, int]) -> None:
    records = [["a", 1, 1, 1, sizes[0]], ["b", 2, 2, 1, sizes[1]]]
    header = encode_header(Kind.DATA_BATCH, "n1", 1, 1, [1, 1, records])
    with pytest.raises(WireError, match="do not add up"):
        decode_direct([header, PAYLOAD], MAX)


@pytest.mark.parametrize("body", [[0, 1], [4, 0]])
def test_publication_is_numbered_exactly_when_guaranteed(body: list[int]) -> None:
    header = encode_header(Kind.PUBLISH, "n1", 1, 1, body)
    with pytest.raises(WireError, match="numbered exactly when"):
        decode_published([topic_frame("t"), header, b""], MAX)


#: a compact JWT and a node certificate's signature text, as AUTH carries them
CREDENTIALS = {
    "jwt": b"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJuMSJ9.c2lnbmF0dXJl",
    "certificate": b"1893456000." + b"A" * 85 + b"Q",
}


@pytest.mark.parametrize("scheme", sorted(CREDENTIALS))
def test_auth_carries_its_credential_in_the_payload(scheme: str) -> None:
    """AUTH (revision 1.5) is direct: ``[scheme]``, the credential its payload frame, as
    is (the protocol layer never reads it; the receiving runtime does)."""
    frames = list(Encoder("n1", 3).direct(msg.Auth(scheme), CREDENTIALS[scheme]))
    assert frames == [encode_header(Kind.AUTH, "n1", 3, 1, [scheme]), CREDENTIALS[scheme]]
    envelope, payload = decode_direct(frames, MAX)
    assert envelope == Envelope("n1", 3, 1, msg.Auth(scheme))
    assert payload == CREDENTIALS[scheme]
    with pytest.raises(WireError, match="AUTH cannot be sent on the control topic"):
        decode_published([CONTROL_TOPIC, frames[0], frames[1]], MAX)


@pytest.mark.parametrize(
    "scheme",
    ["", "jwt", "a scheme of a later release", "ü" * MAX_REASON_CHARS],
    ids=["empty", "jwt", "unknown", "longest"],
)
def test_auth_scheme_is_any_text_up_to_the_reason_limit(scheme: str) -> None:
    """Which schemes a node takes is the runtime's business, not the wire's."""
    header = encode_header(Kind.AUTH, "n1", 1, 1, [scheme])
    assert decode_header(header, MAX).message == msg.Auth(scheme)


@pytest.mark.parametrize(
    "scheme",
    ["x" * (MAX_REASON_CHARS + 1), b"jwt", 1, None, ["jwt"]],
    ids=["too-long", "bin", "int", "nil", "list"],
)
def test_auth_scheme_must_be_text_of_at_most_the_reason_limit(scheme: Any) -> None:
    header = encode_header(Kind.AUTH, "n1", 1, 1, [scheme])
    with pytest.raises(WireError, match=f"text of at most {MAX_REASON_CHARS} characters"):
        decode_header(header, MAX)


def test_header_of_exactly_max_header_bytes_is_accepted() -> None:
    header = encode_header(Kind.PING, "n1", 1, 1, [1, "127.0.0.1:1"])
    assert decode_header(header, len(header)).kind is Kind.PING
    with pytest.raises(
        WireError, match=rf"header of {len(header)} bytes exceeds {len(header) - 1}"
    ):
        decode_header(header, len(header) - 1)


def test_container_count_bound() -> None:
    """A header may hold one list of MAX_LIST_COUNT ranges, not a million empty lists."""
    ranges = [[i, i] for i in range(1, MAX_LIST_COUNT + 1)]
    lost = decode_header(encode_header(Kind.LOST, "n1", 0, 0, ["t", ranges]), 10 * MAX).message
    assert isinstance(lost, msg.Lost) and len(lost.ranges) == MAX_LIST_COUNT
    bomb = raw_header(PROTOCOL_VERSION, int(Kind.LISTEN), "n1", 0, 0, [[[]] * 50_000] * 3)
    with pytest.raises(WireError, match=f"at most {MAX_CONTAINERS_COUNT} lists and maps"):
        decode_header(bomb, 10 * MAX)
    maps = raw_header(PROTOCOL_VERSION, int(Kind.LISTEN), "n1", 0, 0, [[{}] * 50_000] * 3)
    with pytest.raises(WireError, match="lists and maps in all"):
        decode_header(maps, 10 * MAX)


def test_list_count_bound() -> None:
    at_limit = encode_header(Kind.LISTEN, "n1", 0, 0, [["t"] * MAX_LIST_COUNT])
    listen = decode_header(at_limit, 10 * MAX).message
    assert isinstance(listen, msg.Listen)
    assert len(listen.topics) == MAX_LIST_COUNT
    over = encode_header(Kind.LISTEN, "n1", 0, 0, [["t"] * (MAX_LIST_COUNT + 1)])
    with pytest.raises(WireError, match="bounded list"):
        decode_header(over, 10 * MAX)


# ------------------------------------------------------------ extensibility (1.1)


@pytest.mark.parametrize("count", [7, 8, MAX_FIELDS_COUNT], ids=lambda n: f"{n}-elements")
def test_header_elements_beyond_the_sixth_are_ignored(count: int) -> None:
    for kind in Kind:
        raw = valid_raw(kind)
        extras = [EXTRAS[i % len(EXTRAS)] for i in range(count - len(raw))]
        data = msgpack.packb([*raw, *extras], use_bin_type=True)
        assert decode_header(data, MAX) == decode_header(msgpack.packb(raw), MAX)
        # and on the frame-level decoders
        _, frames = frames_for(kind, data)
        assert decode_frames(kind, frames) == decode_frames(
            kind, frames_for(kind, msgpack.packb(raw))[1]
        )


@pytest.mark.parametrize("count", [0, 1, 5, MAX_FIELDS_COUNT + 1, 200])
def test_rejects_header_of_wrong_element_count(count: int) -> None:
    raw = valid_raw(Kind.PING)
    raw = raw[:count] if count < len(raw) else raw + [0] * (count - len(raw))
    with pytest.raises(
        WireError, match=rf"^header must be a list of 6 to {MAX_FIELDS_COUNT} fields$"
    ):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_body_fields_beyond_the_schema_are_ignored(kind: Kind) -> None:
    body, expected = full(kind)
    plain = Envelope("sender-1", 5, 6, expected)
    for extras in ([0], EXTRAS, [None] * (MAX_FIELDS_COUNT - len(body))):
        raw = valid_raw(kind)
        raw[5] = [*body, *extras]
        assert len(raw[5]) <= MAX_FIELDS_COUNT
        assert decode_header(msgpack.packb(raw, use_bin_type=True), MAX) == plain


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_rejects_body_of_too_few_fields(kind: Kind) -> None:
    body = CASES[kind][0]
    for short in range(len(body)):
        raw = valid_raw(kind)
        raw[5] = body[:short]
        with pytest.raises(
            WireError, match=rf"^{kind.name} body must be a list of {len(body)} to 64 fields$"
        ):
            decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("kind", list(Kind), ids=lambda k: k.name)
def test_rejects_body_of_more_than_max_fields(kind: Kind) -> None:
    body = CASES[kind][0]
    raw = valid_raw(kind)
    raw[5] = [*body, *([None] * (MAX_FIELDS_COUNT + 1 - len(body)))]
    with pytest.raises(WireError, match=rf"^{kind.name} body must be a list of"):
        decode_header(msgpack.packb(raw), MAX)


def test_member_tags_travel_as_the_seventh_field_when_the_encoder_says_so() -> None:
    tagged = dataclasses.replace(M1, tags=(("role", "worker"), ("zone", "a")))
    heartbeat = msg.Heartbeat(tagged, (tagged,), DIGEST, ())
    encoder = Encoder("n1", 1)
    plain = decode_header(encoder.header(heartbeat), MAX).message
    assert isinstance(plain, msg.Heartbeat) and plain.me == M1  # not sent: not every peer reads
    encoder.tags = True
    got = decode_header(encoder.header(heartbeat), MAX).message
    assert isinstance(got, msg.Heartbeat)
    assert got.me == tagged and got.updates == (tagged,)
    assert got.me.as_dict()["tags"] == {"role": "worker", "zone": "a"}


@pytest.mark.parametrize(
    "tags, error",
    [
        ([["role", "worker"]], "member tags must be a map"),
        ({"": "x"}, "a tag key must be text"),
        ({"k": 1}, "a value must be text"),
        ({f"k{i}": "v" for i in range(33)}, "at most 32 tags"),
    ],
)
def test_invalid_member_tags_are_refused(tags: Any, error: str) -> None:
    heartbeat = valid_raw(Kind.HEARTBEAT)
    heartbeat[5][0] = [*encode_member(M1), tags]
    with pytest.raises(WireError, match=error):
        decode_header(msgpack.packb(heartbeat, use_bin_type=True), MAX)


@pytest.mark.parametrize("count", [8, 9, MAX_FIELDS_COUNT])
def test_member_record_fields_beyond_the_seventh_are_ignored(count: int) -> None:
    def record(member: Member) -> list[Any]:
        fields = [*encode_member(member), {}]  # the seventh: its tags (none)
        return [*fields, *(EXTRAS[i % len(EXTRAS)] for i in range(count - len(fields)))]

    heartbeat = valid_raw(Kind.HEARTBEAT)
    heartbeat[5][0] = record(M1)
    heartbeat[5][1] = [record(M2), record(M3)]
    decoded = decode_header(msgpack.packb(heartbeat, use_bin_type=True), MAX)
    assert decoded.message == CASES[Kind.HEARTBEAT][1]

    sync = valid_raw(Kind.SYNC)
    sync[5][0] = [record(M2), record(M1)]
    decoded = decode_header(msgpack.packb(sync, use_bin_type=True), MAX)
    assert decoded.message == CASES[Kind.SYNC][1]


@pytest.mark.parametrize(
    ("kind", "index", "value", "match"),
    [
        (Kind.FETCH, 1, [[1, 3, 0]], "list of 2 sequence numbers"),
        (Kind.LOST, 1, [[1, 3, None]], "list of 2 sequence numbers"),
        (Kind.HEARTBEAT, 3, [["news", 7, 0]], "topic position must be"),
        (Kind.LISTENING, 0, [["news", 7, 0]], "topic position must be"),
        (Kind.DATA_ACK, 5, [[6, "x", 0]], r"list of \[seq, reason\]"),
    ],
)
def test_nested_values_stay_exact(kind: Kind, index: int, value: Any, match: str) -> None:
    """Ranges, positions and failures have exactly 2 elements, in every revision."""
    raw = valid_raw(kind)
    raw[5][index] = value
    with pytest.raises(WireError, match=match):
        decode_header(msgpack.packb(raw), MAX)


@pytest.mark.parametrize("kind", sorted(ANNOUNCING), ids=lambda k: k.name)
def test_extended_envelope_equals_the_plain_one_but_for_capabilities(kind: Kind) -> None:
    """A revision 1.1 sender: extra header elements, body fields and record fields,
    and capabilities no one knows yet."""
    body, expected = CASES[kind]
    raw = valid_raw(kind)
    known = [[]] if kind is Kind.SYNC else []  # SYNC's optional field of revision 1.2
    extended = [*raw[:5], [*body, *known, "future", [1, 2]], {"later": True}]
    # a record's seventh field is its tags since revision 1.4 (a map); later ones are unknown
    if kind is Kind.HEARTBEAT:
        extended[5][0] = [*encode_member(M1), {}, "extra"]
    else:
        extended[5][0] = [[*encode_member(m), {}, 0, None] for m in (M2, M1)]
    caps = encode_capabilities(("fields", "zz-unknown/2"))
    header = msgpack.packb(extended, use_bin_type=True)
    _, envelope, payload = decode_frames(kind, [*frames_for(kind, header)[1][:-1], caps])
    assert payload == caps
    plain = decode_header(msgpack.packb(raw), MAX)
    assert plain == Envelope("sender-1", 5, 6, expected)
    assert envelope != plain
    assert envelope.message.capabilities == ("fields", "zz-unknown/2")
    message = with_caps(envelope.message, ())
    if isinstance(message, msg.Sync):
        assert message.announcements == ()
        message = dataclasses.replace(message, announcements=None)
    assert dataclasses.replace(envelope, message=message) == plain


# ---------------------------------------------------------------- capabilities


def test_supported_capabilities_are_sorted_valid_names() -> None:
    assert capabilities.FIELDS == "fields"
    assert capabilities.FIELDS in capabilities.SUPPORTED
    assert list(capabilities.SUPPORTED) == sorted(set(capabilities.SUPPORTED))
    assert decode_capabilities(encode_capabilities(capabilities.SUPPORTED)) == (
        capabilities.SUPPORTED
    )


def test_capabilities_encoding() -> None:
    assert encode_capabilities(()) == b""
    assert encode_capabilities(("fields",)) == FIELDS_PAYLOAD
    assert msgpack.unpackb(encode_capabilities(("a", "b"))) == {"caps": ["a", "b"]}


@pytest.mark.parametrize(
    "caps",
    [(), ("fields",), ("a", "fields", "zz-unknown/2.0~"), tuple(f"c{i:02}" for i in range(64))],
    ids=["none", "fields", "unknown", "most"],
)
@pytest.mark.parametrize("kind", sorted(ANNOUNCING), ids=lambda k: k.name)
def test_capabilities_round_trip_through_heartbeat_and_sync(
    kind: Kind, caps: tuple[str, ...]
) -> None:
    message = with_caps(CASES[kind][1], caps)
    encoder = Encoder("sender-1", 5)
    if kind is Kind.HEARTBEAT:
        frames = list(encoder.published(None, message, b"ignored"))
    else:
        frames = list(encoder.direct(message, b"ignored"))
    assert frames[-1] == encode_capabilities(caps)
    _, envelope, _ = decode_frames(kind, frames)
    assert envelope.message == message
    assert envelope.message.capabilities == caps
    # the header alone, with its payload frame
    assert decode_header(frames[-2], MAX, frames[-1]).message == message
    # without the payload frame: nothing announced
    assert decode_header(frames[-2], MAX).message == with_caps(message, ())


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"", ()),
        (msgpack.packb({}), ()),
        (msgpack.packb({"caps": []}), ()),
        (msgpack.packb({"caps": ["zeta", "fields", "zeta", "a"]}), ("a", "fields", "zeta")),
        (msgpack.packb({"caps": ["x"], "other": [1, {"k": None}], "more": b"\x00"}), ("x",)),
        (msgpack.packb({b"caps": ["x"], b"k": 1}, use_bin_type=True), ()),  # bin keys: not "caps"
        (msgpack.packb({"caps": ["!", "~" * MAX_CAPABILITY_CHARS]}), ("!", "~" * 64)),
        (msgpack.packb({"caps": ["a"] * MAX_CAPABILITIES_COUNT}), ("a",)),
    ],
    ids=[
        "empty",
        "empty-map",
        "no-names",
        "sorted-deduplicated",
        "other-keys",
        "bin-keys",
        "extremes",
        "most-names",
    ],
)
def test_decode_capabilities_accepts(payload: bytes, expected: tuple[str, ...]) -> None:
    assert decode_capabilities(payload) == expected
    for kind in ANNOUNCING:
        header = encode_header(kind, "sender-1", 5, 6, CASES[kind][0])
        message = decode_header(header, MAX, payload).message
        assert message == with_caps(CASES[kind][1], expected)


def _padded_map(size: int) -> bytes:
    """A valid announcement map of exactly ``size`` bytes."""
    data = msgpack.packb({"caps": ["fields"], "pad": ""})
    pad = size - len(data)
    while len(data := msgpack.packb({"caps": ["fields"], "pad": "x" * pad})) > size:
        pad -= 1
    assert len(data) == size, (len(data), size)
    return data


def test_capabilities_payload_size_bound() -> None:
    at_limit = _padded_map(MAX_CAPABILITIES_BYTES)
    assert decode_capabilities(at_limit) == ("fields",)
    over = _padded_map(MAX_CAPABILITIES_BYTES + 1)
    with pytest.raises(WireError, match=rf"exceed {MAX_CAPABILITIES_BYTES}"):
        decode_capabilities(over)
    # the most and longest names fit well within the bound
    most = tuple(
        f"{i:02}" + "x" * (MAX_CAPABILITY_CHARS - 2) for i in range(MAX_CAPABILITIES_COUNT)
    )
    assert len(encode_capabilities(most)) < MAX_CAPABILITIES_BYTES
    assert decode_capabilities(encode_capabilities(most)) == most


BAD_CAPABILITY_PAYLOADS: list[tuple[bytes, str]] = [
    (b"\xc1", "not valid msgpack"),
    (b"\x81", "not valid msgpack"),  # truncated
    (FIELDS_PAYLOAD + b"\x00", "not valid msgpack"),  # two values
    (b"\x81\xa4caps\x91\xa2\xff\xfe", "not valid msgpack"),  # invalid UTF-8
    (PAYLOAD, "not valid msgpack"),
    (msgpack.packb(["fields"]), "must be a map"),
    (msgpack.packb("fields"), "must be a map"),
    (msgpack.packb(None), "must be a map"),
    (msgpack.packb(1), "must be a map"),
    (msgpack.packb(b"caps", use_bin_type=True), "must be a map"),
    (msgpack.packb({"caps": "fields"}), "caps must be a list"),
    (msgpack.packb({"caps": None}), "caps must be a list"),
    (msgpack.packb({"caps": {"fields": 1}}), "caps must be a list"),
    (msgpack.packb({"caps": ["a"] * (MAX_CAPABILITIES_COUNT + 1)}), "caps must be a list"),
    (msgpack.packb({"caps": [""]}), "a capability must be"),
    (msgpack.packb({"caps": ["a b"]}), "a capability must be"),
    (msgpack.packb({"caps": ["x" * (MAX_CAPABILITY_CHARS + 1)]}), "a capability must be"),
    (msgpack.packb({"caps": ["é"]}), "a capability must be"),
    (msgpack.packb({"caps": ["tab\t"]}), "a capability must be"),
    (msgpack.packb({"caps": ["\x7f"]}), "a capability must be"),
    (msgpack.packb({"caps": [1]}), "a capability must be"),
    (msgpack.packb({"caps": [None]}), "a capability must be"),
    (msgpack.packb({"caps": [["fields"]]}), "a capability must be"),
    (msgpack.packb({"caps": [b"fields"]}, use_bin_type=True), "a capability must be"),
    (msgpack.packb({"caps": ["fields", "ok", ""]}), "a capability must be"),
]


@pytest.mark.parametrize(("payload", "match"), BAD_CAPABILITY_PAYLOADS)
def test_bad_capabilities_are_rejected(payload: bytes, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_capabilities(payload)


@pytest.mark.parametrize(("payload", "match"), BAD_CAPABILITY_PAYLOADS[:8])
def test_bad_capabilities_make_the_whole_message_invalid(payload: bytes, match: str) -> None:
    for kind in ANNOUNCING:
        header = encode_header(kind, "sender-1", 5, 6, CASES[kind][0])
        with pytest.raises(WireError, match=match):
            decode_header(header, MAX, payload)
        _, frames = frames_for(kind, header)
        frames[-1] = payload
        with pytest.raises(WireError, match=match):
            decode_frames(kind, frames)


def test_payloads_of_other_kinds_are_opaque() -> None:
    """Only HEARTBEAT and SYNC announce: any other payload is the application's (a
    DATA_BATCH's, cut by the sizes it states: test_data_batch_sizes_must_add_up...)."""
    for kind in set(Kind) - ANNOUNCING - {Kind.DATA_BATCH}:
        header = encode_header(kind, "sender-1", 5, 6, CASES[kind][0])
        for payload in (b"\xc1", FIELDS_PAYLOAD, b"x" * (MAX_CAPABILITIES_BYTES + 1)):
            assert decode_header(header, MAX, payload).message == CASES[kind][1]
            _, frames = frames_for(kind, header)
            frames[-1] = payload
            assert decode_frames(kind, frames)[2] == payload


# -------------------------------------------------------- strategies for properties

NAME_CHARS = st.characters(
    codec="utf-8",
    exclude_categories=("Cc", "Cf", "Cs", "Co", "Cn", "Zs", "Zl", "Zp"),
)
names = st.text(NAME_CHARS, min_size=1, max_size=40)
uint64 = st.integers(min_value=0, max_value=UINT64_MAX)
seqs = st.integers(min_value=1, max_value=UINT64_MAX)
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
# values that decode (maps with string keys only): what may stand in an ignored field
decodable_values = st.recursive(
    msgpack_leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(st.text(max_size=8), children, max_size=3),
    ),
    max_leaves=20,
)


def small(items: st.SearchStrategy[Any]) -> st.SearchStrategy[tuple[Any, ...]]:
    return st.lists(items, max_size=4).map(tuple)


guarantees = st.sampled_from(list(wire.GUARANTEE_CODES))
reliable_guarantees = st.sampled_from([g for g in wire.GUARANTEE_CODES if g.is_reliable])
ranges = st.tuples(seqs, seqs).map(lambda r: (min(r), max(r)))
positions = st.tuples(topics, uint64)
failures = st.tuples(seqs, st.text(st.characters(codec="utf-8"), max_size=MAX_REASON_CHARS // 32))
digests = st.text("0123456789abcdef", min_size=16, max_size=16)
capability_names = st.text(
    st.characters(min_codepoint=0x21, max_codepoint=0x7E), min_size=1, max_size=MAX_CAPABILITY_CHARS
)
capability_sets = st.lists(capability_names, max_size=6, unique=True).map(
    lambda names: tuple(sorted(names))
)

news_items = st.builds(msg.News, members, capability_sets, small(names))
announcements = st.tuples(names, uint64, capability_sets)

#: for every kind: its typed messages, valid in the frames they travel in (the probes and
#: SYNC in both forms: revision 1.0, and with the optional fields of revision 1.2)
MESSAGES: dict[Kind, st.SearchStrategy[Any]] = {
    Kind.HEARTBEAT: st.builds(
        msg.Heartbeat, members, small(members), digests, small(positions), capability_sets
    ),
    Kind.SYNC: st.builds(
        msg.Sync,
        small(members),
        st.booleans(),
        addresses,
        capability_sets,
        st.none() | small(announcements),
    ),
    Kind.PING: st.builds(msg.Ping, uint64, addresses)
    | st.builds(msg.Ping, uint64, addresses, small(news_items), digests),
    Kind.PING_REQ: st.builds(msg.PingReq, uint64, addresses, names)
    | st.builds(msg.PingReq, uint64, addresses, names, small(news_items), digests),
    Kind.ACK: st.builds(msg.Ack, uint64, names)
    | st.builds(msg.Ack, uint64, names, small(news_items), digests),
    Kind.NACK: st.builds(msg.Nack, uint64, names),
    Kind.GOSSIP: st.builds(msg.Gossip, small(news_items), digests),
    Kind.BEACON: st.builds(msg.Beacon, uint64),
    Kind.LISTEN: st.builds(msg.Listen, small(topics), small(topics)),
    Kind.LISTENING: st.builds(msg.Listening, small(positions)),
    Kind.SEND: st.builds(msg.Send, names),
    Kind.REQUEST: st.builds(msg.Request, names, uint64, addresses),
    Kind.REPLY: st.builds(msg.Reply, uint64, st.booleans()),
    # numbered exactly when guaranteed, as decode_published demands
    Kind.PUBLISH: st.one_of(
        st.just(msg.Publish(0, AMO)), st.builds(msg.Publish, seqs, reliable_guarantees)
    ),
    Kind.DATA: st.builds(msg.Data, names, uint64, seqs, seqs, reliable_guarantees, uint64),
    Kind.DATA_BATCH: st.builds(
        msg.DataBatch,
        seqs,
        uint64,
        st.lists(
            st.tuples(names, uint64, seqs, reliable_guarantees, st.integers(0, 8)),
            min_size=1,
            max_size=4,
        ).map(tuple),
    ),
    Kind.DATA_ACK: st.builds(
        msg.DataAck,
        uint64,
        uint64,
        uint64,
        uint64,
        small(seqs),
        small(failures),
        uint64,
        small(seqs),
    ),
    Kind.FETCH: st.builds(msg.Fetch, topics, small(ranges), addresses),
    Kind.REPUBLISH: st.builds(msg.Republish, topics, seqs, guarantees),
    Kind.LOST: st.builds(msg.Lost, topics, small(ranges)),
    Kind.FLUSH: st.builds(msg.Flush, small(positions), names),
    Kind.FLUSHED: st.just(msg.Flushed()),
    Kind.REFUSE: st.builds(msg.Refuse, uint64, st.text(max_size=20)),
    # the schemes nodes send, and any other text a later release might (its credential
    # is the payload)
    Kind.AUTH: st.builds(
        msg.Auth, st.sampled_from(["jwt", "certificate"]) | st.text(max_size=MAX_REASON_CHARS)
    ),
    Kind.PREPARE: st.builds(
        msg.Prepare, uint64, names, st.lists(names, min_size=1, max_size=4).map(tuple), uint64
    ),
    Kind.TXN: st.builds(
        msg.Txn, names, uint64, uint64, st.sampled_from(msg.TxnState), st.text(max_size=20)
    ),
}
#: (kind, one of its messages)
messages = st.sampled_from(list(Kind)).flatmap(lambda k: st.tuples(st.just(k), MESSAGES[k]))


def test_message_strategies_cover_every_kind() -> None:
    assert set(MESSAGES) == set(Kind)


def decodes_or_wire_error(data: bytes) -> Envelope | None:
    """decode_header; WireError is fine, any other exception fails the test."""
    try:
        envelope = decode_header(data, MAX)
    except WireError:
        return None
    assert isinstance(envelope, Envelope)
    assert isinstance(envelope.kind, Kind)
    assert isinstance(envelope.message, msg.Message)
    return envelope


# ------------------------------------------------------------ property tests


@PROPERTY
@given(st.sampled_from(list(Kind)), names, uint64, uint64)
def test_property_header_fields_round_trip(kind: Kind, sender: str, inc: int, seq: int) -> None:
    body, expected = CASES[kind]
    envelope = decode_header(encode_header(kind, sender, inc, seq, body), MAX)
    assert envelope == Envelope(sender, inc, seq, expected)


@PROPERTY
@given(messages, names, uint64, st.binary(max_size=16), topics)
def test_property_typed_messages_round_trip(
    case: tuple[Kind, msg.Message], sender: str, inc: int, payload: bytes, topic: str
) -> None:
    kind, message = case
    assert message.KIND is kind
    encoder = Encoder(sender, inc)
    if isinstance(message, msg.DataBatch):  # its payloads, back to back
        payload = bytes(range(sum(record[4] for record in message.records)))
    if kind in DIRECT_KINDS:
        frames = list(encoder.direct(message, payload))
        got_topic, envelope, got_payload = None, *decode_direct(frames, MAX)
    else:
        on = None if kind in (Kind.HEARTBEAT, *PERSONAL) else topic
        frames = list(encoder.published(on, message, payload))
        got_topic, envelope, got_payload = decode_published(frames, MAX)
        assert got_topic == on
    assert envelope == Envelope(sender, inc, 1, message)
    if isinstance(message, msg.Heartbeat | msg.Sync):
        assert got_payload == encode_capabilities(message.capabilities)
    else:
        assert got_payload == payload
    # encode_body gives the header's body: the same bytes through encode_header
    assert encode_header(kind, sender, inc, 1, encode_body(message)) == frames[-2]


def extend_member_records(message: msg.Message, body: list[Any], extras: list[Any]) -> bool:
    """Append ``extras`` to every member record in the raw ``body``; whether there was any."""
    if isinstance(message, msg.Heartbeat):
        records = [body[0], *body[1]]
    elif isinstance(message, msg.Sync):
        records = list(body[0])
    else:
        return False
    for record in records:
        if len(record) == MEMBER_FIELDS_COUNT:
            record.append({})  # the seventh field is the member's tags (revision 1.4)
        record.extend(extras)
    return bool(records)


def with_every_field(message: msg.Message) -> msg.Message:
    """``message`` with its optional fields present: what follows them is unknown."""
    if isinstance(message, msg.Ping | msg.PingReq | msg.Ack) and message.view is None:
        return dataclasses.replace(message, view=DIGEST)
    if isinstance(message, msg.Sync) and message.announcements is None:
        return dataclasses.replace(message, announcements=())
    if isinstance(message, msg.Listen) and not message.prefixes:
        return dataclasses.replace(message, prefixes=("p.",))
    if isinstance(message, msg.Data) and not message.origin:
        return dataclasses.replace(message, origin=7)
    return message


@PROPERTY
@given(messages, st.lists(decodable_values, min_size=1, max_size=5), st.data())
def test_property_extra_fields_anywhere_are_ignored(
    case: tuple[Kind, msg.Message], extras: list[Any], data: st.DataObject
) -> None:
    """Extra header elements, body fields and member-record fields change nothing."""
    _, message = case
    message = with_every_field(message)
    header = Encoder("n1", 1).header(message)
    extended = msgpack.unpackb(header)
    where = data.draw(st.sampled_from(["header", "body", "records"]), label="where")
    if where == "header":
        extended.extend(extras)
    elif where == "body" or not extend_member_records(message, extended[5], extras):
        extended[5].extend(extras)
    expected = decode_header(header, MAX)
    assert expected == Envelope("n1", 1, 1, without_reader(with_caps(message, ())))
    longer = msgpack.packb(extended, use_bin_type=True)
    assert longer != header
    assert decode_header(longer, MAX) == expected


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
    assert envelope.message == msg.Heartbeat(me, tuple(gossip), DIGEST, ())

    sync = encode_header(
        Kind.SYNC, me.node_id, 1, 1, [[encode_member(m) for m in gossip], flag, address]
    )
    envelope, _ = decode_direct([sync, b""], MAX)
    assert envelope.message == msg.Sync(tuple(gossip), flag, address)


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


@PROPERTY
@given(st.binary(max_size=200))
def test_property_arbitrary_capability_payloads(payload: bytes) -> None:
    try:
        caps = decode_capabilities(payload)
    except WireError:
        return
    assert list(caps) == sorted(set(caps))
    assert decode_capabilities(encode_capabilities(caps)) == caps


@PROPERTY
@given(nested_values)
def test_property_arbitrary_msgpack_values_as_capabilities(value: Any) -> None:
    for payload in (
        msgpack.packb(value, use_bin_type=True),
        msgpack.packb({"caps": value}, use_bin_type=True),
    ):
        try:
            caps = decode_capabilities(payload)
        except WireError:
            continue
        assert all(type(c) is str for c in caps)


frames_strategy = st.lists(
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from(
            [encode_header(k, "n1", 1, 1, CASES[k][0]) for k in Kind]
            + [CONTROL_TOPIC, topic_frame("news"), b"t", b"t\x00", b"\x00", b"t\xff\x00"]
            + [FIELDS_PAYLOAD, b""]
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
    else:  # a publication, or a beacon (beacons go on a topic's frame too)
        assert envelope.kind in (Kind.PUBLISH, Kind.BEACON)
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
            encode_body(envelope.message),
        )
        assert decode_header(again, MAX) == envelope


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


@pytest.mark.parametrize("kind", [0, 2, 8, 9, 30, 255, -1, True, 4.0, "PING", None])
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
        (msgpack.packb({"a": 1}), "header must be a list of 6 to 64 fields"),
        (msgpack.packb({1: 1}), "not valid msgpack"),  # non-string map key
        (msgpack.packb([1, 4, "n1", 0, 0]), "header must be a list of 6 to 64 fields"),
        (
            msgpack.packb([1, 4, "n1", 0, 0, [0, "a:1"], *([None] * 59)]),
            "header must be a list of 6 to 64 fields",
        ),
        (msgpack.packb(7), "header must be a list of 6 to 64 fields"),
        (msgpack.packb(None), "header must be a list of 6 to 64 fields"),
    ],
)
def test_rejects_non_header_documents(data: bytes, message: str) -> None:
    with pytest.raises(WireError, match=message):
        decode_header(data, MAX)


@pytest.mark.parametrize("body", [None, 0, "x", {"a": 1}, b"\x00"])
def test_rejects_body_that_is_not_a_list(body: Any) -> None:
    raw = valid_raw(Kind.PUBLISH)
    raw[5] = body
    with pytest.raises(WireError, match="PUBLISH body must be a list of 2 to 64 fields"):
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
        ([], "member record must be a list of 6 to 64 fields"),
        (["n1", 1, 1, 1, "a:1"], "member record must be a list of 6 to 64 fields"),
        (
            ["n1", 1, 1, 1, "a:1", "a:2", *([0] * 59)],
            "member record must be a list of 6 to 64 fields",
        ),
        ({"node_id": "n1"}, "member record must be a list of 6 to 64 fields"),
        ("n1", "member record must be a list of 6 to 64 fields"),
        (None, "member record must be a list of 6 to 64 fields"),
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
