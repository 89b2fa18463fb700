"""The worked examples in docs/protocol.md are the bytes the code produces."""

from __future__ import annotations

import re
from pathlib import Path

from zcluster.core.membership import MembershipTable
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus
from zcluster.protocol.messages import Heartbeat, Publish
from zcluster.serialization import MsgpackSerializer
from zcluster.wire import (
    CONTROL_TOPIC,
    Encoder,
    Kind,
    encode_body,
    encode_capabilities,
    encode_header,
    encode_member,
    topic_frame,
)

SPEC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def spaced(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def numbered(encoder: Encoder, seq: int) -> Encoder:
    """``encoder`` with its next header numbered ``seq``."""
    for _ in range(seq - 1):
        encoder.header(Publish(0, DeliveryGuarantee.AT_MOST_ONCE))
    return encoder


def test_publish_example_matches_the_encoder() -> None:
    assert f"`{spaced(topic_frame('news'))}`" in SPEC
    header = encode_header(Kind.PUBLISH, "a", 1, 7, (0, 0))
    assert f"`{spaced(header)}`" in SPEC
    # the same bytes from the typed message
    publication = Publish(0, DeliveryGuarantee.AT_MOST_ONCE)
    assert encode_header(Kind.PUBLISH, "a", 1, 7, encode_body(publication)) == header
    payload = MsgpackSerializer().serialize("hello")  # the default serializer
    frames = numbered(Encoder("a", 1), 7).published("news", publication, payload)
    assert frames == (topic_frame("news"), header, payload)
    assert f"`{spaced(payload)}`" in SPEC


def test_heartbeat_example_matches_the_encoder() -> None:
    me = Member("a", 1, 1, MemberStatus.UP, "127.0.0.1:5000", "127.0.0.1:5001")
    digest = MembershipTable(me, 4, 100).digest()
    header = encode_header(Kind.HEARTBEAT, "a", 1, 2, (encode_member(me), [], digest, []))
    blocks = re.findall(r"```\n((?:[0-9a-f]{2}[ \n])+)```", SPEC)
    assert any(" ".join(block.split()) == spaced(header) for block in blocks), blocks
    assert f"`{digest}`" in SPEC
    # the same bytes from the typed message, with or without capabilities
    for caps in ((), SUPPORTED):
        heartbeat = Heartbeat(me, (), digest, (), caps)
        assert encode_header(Kind.HEARTBEAT, "a", 1, 2, encode_body(heartbeat)) == header
        frames = numbered(Encoder("a", 1), 2).published(None, heartbeat, b"")
        assert frames == (CONTROL_TOPIC, header, encode_capabilities(caps))
    assert f"[{spaced(CONTROL_TOPIC)}, header, (empty)]" in SPEC


def test_capabilities_example_matches_the_encoder() -> None:
    assert SUPPORTED == ("batch", "drain", "fields", "oneframe", "prefix", "refuse", "swim")
    # revisions 1.1, 1.2, 1.3 and 1.4
    revision_1_3 = ("batch", "fields", "oneframe", "swim")
    for caps in (("fields",), ("fields", "oneframe", "swim"), revision_1_3, SUPPORTED):
        announcement = spaced(encode_capabilities(caps))
        assert f"`{announcement}`" in SPEC
        assert f"[{spaced(CONTROL_TOPIC)}, header, {announcement}]" in SPEC


def test_every_message_kind_is_specified() -> None:
    for kind in Kind:
        assert f"| {int(kind)} | {kind.name} |" in SPEC, kind
