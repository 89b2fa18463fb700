"""The wire of revision 1.2 (capability ``swim``): gossip on probes, NACK, GOSSIP, BEACON
beacons on user topics, personal HEARTBEATs, capabilities of members in SYNC."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from tests.core.test_wire import DIGEST, FULL, M1, M2, MAX
from zcluster.errors import WireError
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.wire import (
    CONTROL_TOPIC,
    MAX_SUSPECTERS_COUNT,
    PROTOCOL_VERSION,
    Encoder,
    Kind,
    decode_direct,
    decode_header,
    decode_published,
    encode_body,
    encode_header,
    encode_member,
    personal_frame,
    topic_frame,
)


def raw(kind: Kind, body: list[Any]) -> bytes:
    return msgpack.packb([PROTOCOL_VERSION, int(kind), "n1", 1, 2, body])  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", sorted(FULL), ids=lambda k: k.name)
def test_optional_fields_round_trip_and_are_left_out_when_unset(kind: Kind) -> None:
    body, message = FULL[kind]
    header = encode_header(kind, "n1", 1, 2, body)
    assert decode_header(header, MAX).message == message
    assert msgpack.unpackb(msgpack.packb(encode_body(message))) == body


def test_a_probe_without_gossip_is_the_revision_1_0_form() -> None:
    assert list(encode_body(msg.Ping(3, "h:1"))) == [3, "h:1"]
    assert list(encode_body(msg.Ping(3, "h:1", (), DIGEST))) == [3, "h:1", [], DIGEST]
    assert list(encode_body(msg.Sync((M1,), True, "h:1"))) == [[encode_member(M1)], True, "h:1"]


@pytest.mark.parametrize(
    "news, match",
    [
        ([encode_member(M1), []], "news must be a list"),
        ({"m": 1}, "news must be a list"),
        ([encode_member(M1), "swim", []], "caps must be a list"),
        ([encode_member(M1), ["two words"], []], "capability must be"),
        ([encode_member(M1), [], "n2"], "suspecters must be a list"),
        ([encode_member(M1), [], ["n2"] * (MAX_SUSPECTERS_COUNT + 1)], "suspecters must be"),
        ([encode_member(M1), [], [""]], "node id must be"),
        ([["n1", 1], [], []], "member record must be"),
        ([[["n1"], 1, 1, 1, "h:1", "h:2"], [], []], "node id must be"),  # unhashable
        ([["n1", 1, 1, 1, "h:1", {"h": 2}], [], []], "address"),
    ],
)
def test_rejects_malformed_news(news: Any, match: str) -> None:
    for kind, body in ((Kind.GOSSIP, [[news], DIGEST]), (Kind.PING, [1, "h:1", [news], DIGEST])):
        with pytest.raises(WireError, match=match):
            decode_header(raw(kind, body), MAX)


def test_news_may_grow_and_repeats_capabilities_once() -> None:
    item = [encode_member(M2), ["swim", "fields", "swim"], ["a"], "later", {"x": 1}]
    message = decode_header(raw(Kind.GOSSIP, [[item], DIGEST]), MAX).message
    assert message == msg.Gossip((msg.News(M2, ("fields", "swim"), ("a",)),), DIGEST)


@pytest.mark.parametrize(
    "entry, match",
    [(["n1", 1], "announcement must be"), (["n1", -1, []], "unsigned"), (["n1", 1, "x"], "caps")],
)
def test_rejects_malformed_announcements(entry: Any, match: str) -> None:
    with pytest.raises(WireError, match=match):
        decode_header(raw(Kind.SYNC, [[encode_member(M1)], True, "h:1", [entry]]), MAX)


def test_a_personal_heartbeat_travels_under_the_addressees_frame() -> None:
    heartbeat = msg.Heartbeat(M1, (), DIGEST, (("t", 3),), ("fields", "swim"), to="n2")
    frames = Encoder("n1", 7).published(None, heartbeat, b"")
    assert frames[0] == b"}n2\x00" == personal_frame("n2")
    topic, envelope, _ = decode_published(list(frames), MAX)
    assert topic is None
    assert envelope.message == heartbeat
    # the same heartbeat to everyone is on the control topic, and says so
    everyone = msg.Heartbeat(M1, (), DIGEST, (), ())
    first, header, _ = Encoder("n1", 7).published(None, everyone, b"")
    assert first == CONTROL_TOPIC
    assert decode_published([first, header, b""], MAX)[1].message.to is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "first, message, match",
    [
        (b"}n2\x00", msg.Publish(0, DeliveryGuarantee.AT_MOST_ONCE), "personal frame"),
        (b"}n2", msg.Heartbeat(M1, (), DIGEST, ()), "malformed topic frame"),
        (b"}\x00", msg.Heartbeat(M1, (), DIGEST, ()), "malformed topic frame"),
        (b"}a b\x00", msg.Heartbeat(M1, (), DIGEST, ()), "node id must be"),
        (CONTROL_TOPIC, msg.Beacon(3), "BEACON cannot be sent on the control topic"),
        (b"x\x00", msg.Beacon(3), "malformed topic frame"),
    ],
)
def test_rejects_misplaced_fan_out(first: bytes, message: msg.Message, match: str) -> None:
    header = Encoder("n1", 1).header(message)
    with pytest.raises(WireError, match=match):
        decode_published([first, header, b""], MAX)


def test_a_position_beacon_travels_under_its_topic() -> None:
    frames = Encoder("n1", 1).published("prices", msg.Beacon(12), b"")
    assert frames[0] == topic_frame("prices")
    topic, envelope, _ = decode_published(list(frames), MAX)
    assert (topic, envelope.message) == ("prices", msg.Beacon(12))


@pytest.mark.parametrize("message", [msg.Beacon(1), msg.Heartbeat(M1, (), DIGEST, ())])
def test_fan_out_kinds_are_not_direct(message: msg.Message) -> None:
    with pytest.raises(WireError, match="not a direct message kind"):
        decode_direct(list(Encoder("n1", 1).direct(message, b"")), MAX)
