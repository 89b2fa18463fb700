"""Today's nodes interoperate with a node of a later protocol revision.

``FuturePeer`` is the strict peer of ``v1peer`` as a later release would be:
every header carries an element today's nodes do not know, every body an
extra optional field, every member record an extra field, and it announces
capabilities nobody has defined yet. Today's nodes must ignore all of it
(docs/protocol.md, section 9) and work with it exactly as with any node.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest

from tests.compat import v1peer
from tests.compat.v1peer import Kind, V1Peer, digest_of
from tests.helpers import wait_until
from zcluster import AckStatus, DeliveryGuarantee, MemberStatus, Node
from zcluster.protocol.capabilities import SUPPORTED

pytestmark = pytest.mark.timeout(30)

FUTURE_CAPABILITIES = ["fields", "zz-compression", "zz-causal-v9"]
#: what a later revision might append: a value of a type no field of today has
EXTRA = {"since": "1.7", "flags": [1, 2, 3]}


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def _extended_records(kind: Kind, body: list[Any]) -> list[Any]:
    """Member records with their tags (none, the seventh field), then a field today's
    nodes do not know."""
    if kind is Kind.HEARTBEAT:
        me, updates, *rest = body
        return [[*me, {}, EXTRA], [[*r, {}, EXTRA] for r in updates], *rest]
    if kind is Kind.SYNC:
        records, *rest = body
        return [[[*r, {}, EXTRA] for r in records], *rest]
    return body


class FuturePeer(V1Peer):
    """A strict peer that sends what a later revision would send: after the optional
    fields revisions 1.2, 1.4 and 1.6 define (it must send them to send any later one), its
    own."""

    def _header(self, kind: Kind, body: list[Any]) -> bytes:
        self._seq += 1
        known = self._optional_fields(kind)
        extended = [*_extended_records(kind, body), *known, EXTRA, "another optional field"]
        header = [1, int(kind), self.node_id, self.incarnation, self._seq, extended, EXTRA]
        return pack(header)

    def _optional_fields(self, kind: Kind) -> list[Any]:
        """The optional fields of revisions 1.2, 1.4 and 1.6, empty: no gossip, no members'
        capabilities, no prefixes, DATA's origin 0 (the header's incarnation)."""
        if kind in (Kind.PING, Kind.PING_REQ, Kind.ACK):
            return [[], digest_of([self.me, *self.members.values()])]
        if kind is Kind.DATA:
            return [0]
        return [[]] if kind in (Kind.SYNC, Kind.LISTEN) else []

    def _send(self, address: str, kind: Kind, body: list[Any], payload: bytes = b"") -> None:
        super()._send(address, kind, body, _announce(kind, payload))

    def _fan_out(self, first: bytes, kind: Kind, body: list[Any], payload: bytes = b"") -> None:
        super()._fan_out(first, kind, body, _announce(kind, payload))


def _announce(kind: Kind, payload: bytes) -> bytes:
    if kind in (Kind.HEARTBEAT, Kind.SYNC):
        return pack({"caps": FUTURE_CAPABILITIES, "zz-other-key": {"anything": True}})
    return payload


def status(node: Node, node_id: str) -> MemberStatus | None:
    member = node.member(node_id)
    return None if member is None else member.status


@pytest.fixture
def joined() -> Iterator[tuple[Node, FuturePeer]]:
    node = Node("n1")
    peer = FuturePeer("future")
    try:
        node.start()
        peer.start([node.address])
        assert peer.wait_up(5), "the later-revision peer was not admitted"
        assert wait_until(lambda: status(node, "future") is MemberStatus.UP, 5), node.members()
        yield node, peer
        assert node.stats().get("frames_rejected", 0) == 0, node.stats()
        assert peer.problems()["rejected"] == [], peer.problems()
    finally:
        node.stop()
        peer.close()


def test_the_node_records_capabilities_it_does_not_know(joined: tuple[Node, FuturePeer]) -> None:
    node, _ = joined
    view = node.request("n1", "zcluster.view", None)
    future = next(m for m in view["members"] if m["node_id"] == "future")
    assert future["capabilities"] == sorted(FUTURE_CAPABILITIES)
    mine = next(m for m in view["members"] if m["node_id"] == "n1")
    assert mine["capabilities"] == list(SUPPORTED)


def test_heartbeats_with_extra_fields_keep_the_peer_up(joined: tuple[Node, FuturePeer]) -> None:
    node, peer = joined
    deadline = time.monotonic() + 4 * node.config.heartbeat_timeout_s
    while time.monotonic() < deadline:
        assert status(node, "future") is MemberStatus.UP
        time.sleep(0.05)
    assert node.view_digest() == peer.digest()


def test_requests_sends_and_publications_both_ways(joined: tuple[Node, FuturePeer]) -> None:
    node, peer = joined
    node.register("add", lambda message, sender: message["a"] + message["b"])
    peer.register("echo", lambda payload, sender: payload)
    assert peer.request("n1", "add", pack({"a": 2, "b": 3}), timeout=3) == (True, pack(5))
    assert node.request("future", "echo", "hi", timeout=3) == "hi"

    received: list[Any] = []
    node.subscribe("t", lambda topic, message, sender: received.append(message))
    assert wait_until(lambda: "n1" in peer.subscribers("t"), 5)
    assert peer.publish("t", pack("first"), v1peer.ORDERED) == 1
    assert peer.publish("t", pack("second")) == 0
    assert wait_until(lambda: received == ["first", "second"], 5), received

    got: list[bytes] = []
    peer.subscribe("u", lambda topic, payload, sender, seq: got.append(payload))
    assert wait_until(lambda: "future" in node.subscribers("u"), 5)
    node.publish("u", "numbered", guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
    assert wait_until(lambda: got == [pack("numbered")], 5), got


def test_acknowledged_sends_both_ways(joined: tuple[Node, FuturePeer]) -> None:
    node, peer = joined
    handled: list[Any] = []
    node.register("work", lambda message, sender: handled.append(message))
    assert peer.send_data("n1", "work", pack("job")).result(5) == ("DELIVERED", "")
    assert handled == ["job"]
    peer.register("work", lambda payload, sender: None)
    ack = node.send("future", "work", 1)
    assert ack is not None and ack.wait(5) is AckStatus.DELIVERED


def test_a_graceful_leave_of_the_later_peer_is_seen(joined: tuple[Node, FuturePeer]) -> None:
    node, peer = joined
    peer.leave()
    assert wait_until(lambda: status(node, "future") is MemberStatus.LEFT, 5), node.members()
