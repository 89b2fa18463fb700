"""The worked examples in docs/protocol.md are the bytes the code produces."""

from __future__ import annotations

import re
from pathlib import Path

from zcluster.core.members import Member, MemberStatus
from zcluster.core.membership import MembershipTable
from zcluster.wire import Kind, encode_header, encode_member, topic_frame

SPEC = (Path(__file__).resolve().parent.parent / "docs" / "protocol.md").read_text()


def spaced(data: bytes) -> str:
    return " ".join(f"{b:02x}" for b in data)


def test_publish_example_matches_the_encoder() -> None:
    assert f"`{spaced(topic_frame('news'))}`" in SPEC
    assert f"`{spaced(encode_header(Kind.PUBLISH, 'a', 1, 7, (0, 0)))}`" in SPEC


def test_heartbeat_example_matches_the_encoder() -> None:
    me = Member("a", 1, 1, MemberStatus.UP, "127.0.0.1:5000", "127.0.0.1:5001")
    digest = MembershipTable(me, 4, 100).digest()
    header = encode_header(Kind.HEARTBEAT, "a", 1, 2, (encode_member(me), [], digest, []))
    blocks = re.findall(r"```\n((?:[0-9a-f]{2}[ \n])+)```", SPEC)
    assert any(" ".join(block.split()) == spaced(header) for block in blocks), blocks
    assert f"`{digest}`" in SPEC


def test_every_message_kind_is_specified() -> None:
    for kind in Kind:
        assert f"| {int(kind)} | {kind.name} |" in SPEC, kind
