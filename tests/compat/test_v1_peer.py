"""Real zcluster nodes interoperate with a strict protocol-version-1 peer (tests/compat/v1peer.py).

The peer is written from docs/protocol.md (version 1 as first specified) only. Every test with
nodes ends by checking that the peer rejected no frame (and saw no rule of the document broken),
and that the nodes rejected none of the peer's frames; the fixture checks the peer again after
the nodes have left. The last tests check that the peer's decoder is strict at all.
"""

from __future__ import annotations

import contextlib
import queue
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import pytest

from tests.compat import v1peer
from tests.compat.v1peer import V1Peer
from tests.helpers import all_up, wait_until
from zcluster import AckStatus, DeliveryGuarantee, Member, MemberStatus, Node, RemoteError
from zcluster.protocol.capabilities import SUPPORTED

pytestmark = pytest.mark.timeout(30)


def pack(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]


def unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, raw=False)


def holds_for(predicate: Callable[[], bool], duration: float) -> bool:
    """True if ``predicate`` stays true for ``duration`` seconds (checked continuously)."""
    deadline = time.monotonic() + duration
    while time.monotonic() < deadline:
        if not predicate():
            return False
        time.sleep(0.01)
    return True


def status(node: Node, node_id: str) -> MemberStatus | None:
    member = node.member(node_id)
    return None if member is None else member.status


def assert_clean(peer: V1Peer, *nodes: Node) -> None:
    """Nothing either side could not decode; nothing the document forbids."""
    problems = peer.problems()
    assert len(problems["rejected"]) == 0, problems["rejected"]
    assert problems == {"rejected": [], "violations": [], "errors": []}, problems
    for node in nodes:
        if node.running:
            assert node.stats().get("frames_rejected", 0) == 0, node.stats()


class Cluster:
    """Nodes and peers of one test; closed at teardown, nodes first (the peers hear them leave)."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []
        self.peers: list[V1Peer] = []

    def node(self, node_id: str, *seeds: str, **options: Any) -> Node:
        node = Node(node_id, seeds=list(seeds), **options)
        self.nodes.append(node)
        node.start()
        return node

    def peer(self, node_id: str, *seeds: str) -> V1Peer:
        peer = V1Peer(node_id)
        self.peers.append(peer)
        peer.start(seeds)
        assert peer.wait_up(5), f"{node_id} was not admitted through {seeds}"
        return peer

    def close(self) -> None:
        with contextlib.ExitStack() as stack:
            for peer in self.peers:
                stack.callback(peer.close)
            for node in self.nodes:
                stack.callback(node.stop)
        for peer in self.peers:
            assert_clean(peer)


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.close()


def joined(cluster: Cluster, **options: Any) -> tuple[Node, V1Peer]:
    """A node, and the peer joined through it; both see both up."""
    node = cluster.node("n1", **options)
    peer = cluster.peer("peer", node.address)
    assert wait_until(lambda: status(node, "peer") is MemberStatus.UP, 5), node.members()
    assert wait_until(lambda: peer.status("n1") == v1peer.UP, 5)
    return node, peer


# ---------------------------------------------------------------- membership


@pytest.mark.timeout(15)
def test_peer_joins_through_a_node_and_both_see_each_other_up(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    record = node.member("peer")
    assert record is not None
    assert (record.incarnation, record.version) == (peer.incarnation, 1)
    assert (record.address, record.pub_address) == (peer.address, peer.pub_address)
    mine = peer.member("n1")
    assert mine is not None and mine[1:3] == (node.incarnation, 1)
    # Same view, same digest (section 5.4); and each listens to the other's PUB (LISTEN).
    assert wait_until(lambda: peer.digest() == node.view_digest(), 5)
    assert wait_until(lambda: "peer" in node.listeners(), 5)
    assert wait_until(lambda: "n1" in peer.listeners(), 5)
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_a_node_joins_through_the_peer_as_its_seed(cluster: Cluster) -> None:
    n1, peer = joined(cluster)
    n2 = cluster.node("n2", peer.address)  # admitted by the peer's SYNC answer
    every = ("n1", "n2", "peer")

    def converged() -> bool:
        views = [{m.node_id: m.status for m in n.members()} for n in (n1, n2)]
        return (
            all(v == dict.fromkeys(every, MemberStatus.UP) for v in views)
            and all(peer.status(n) == v1peer.UP for n in every)
            and peer.digest() == n1.view_digest() == n2.view_digest()
        )

    assert wait_until(converged, 10), (n1.members(), n2.members(), peer.digest())
    assert_clean(peer, n1, n2)


def record_of(member: Member) -> v1peer.Record:
    """A member as the peer holds it: the 6 fields of a member record (section 5.1)."""
    m = member
    return (m.node_id, m.incarnation, m.version, int(m.status), m.address, m.pub_address)


def changes_of(node: Node, node_id: str) -> list[Member]:
    """Every change ``node`` reports about ``node_id`` from now on (in arrival order)."""
    changes: list[Member] = []

    def record(member: Member, _previous: Member | None) -> None:
        if member.node_id == node_id:
            changes.append(member)

    node.on_member_change(record)
    return changes


@pytest.mark.timeout(15)
def test_heartbeats_keep_the_peer_up(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    changes = changes_of(node, "peer")
    up = node.member("peer")
    assert up is not None and up.status is MemberStatus.UP
    # Past heartbeat_timeout_s + probe_timeout_s (1.2 s), silence would have made it SUSPECT.
    assert holds_for(lambda: node.member("peer") == up, 1.6), node.members()
    assert [m for m in changes if m != up] == []  # (a late report of joining -> up is fine)
    assert peer.status("n1") == v1peer.UP
    assert peer.stats().get("suspicions_refuted", 0) == 0
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_peer_refutes_a_suspicion_it_hears_in_gossip(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    changes = changes_of(node, "peer")
    before = node.member("peer")
    assert before is not None
    peer.mute_until_suspected()  # no heartbeats, no ACKs: the node probes, then suspects

    def seen(status: MemberStatus, version: int) -> bool:
        return any((m.status, m.version) == (status, version) for m in list(changes))

    assert wait_until(lambda: seen(MemberStatus.SUSPECT, before.version), 5), node.members()
    # The peer hears SUSPECT in the node's heartbeat gossip and refutes with version + 1.
    assert wait_until(lambda: seen(MemberStatus.UP, before.version + 1), 5), node.members()
    refuted = node.member("peer")
    assert refuted is not None
    assert record_of(refuted) == peer.member("peer")
    assert record_of(refuted)[1:4] == (before.incarnation, before.version + 1, v1peer.UP)
    assert peer.stats()["suspicions_refuted"] == 1
    assert holds_for(lambda: node.member("peer") == refuted, 0.5), node.members()
    assert not any(m.status is MemberStatus.DOWN for m in changes)
    assert_clean(peer, node)


@pytest.mark.timeout(20)
def test_peer_cut_off_until_down_refutes_and_merges_back(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    peer.partition(True)
    assert wait_until(lambda: status(node, "peer") is MemberStatus.DOWN, 5), node.members()
    down = node.member("peer")
    assert down is not None
    peer.partition(False)
    # The node pushes its table to down members every reconnect_interval_s; the peer finds
    # itself DOWN, refutes, and its SYNC answer carries the refuted record.
    assert wait_until(lambda: status(node, "peer") is MemberStatus.UP, 5), node.members()
    assert node.member("peer").version > down.version  # type: ignore[union-attr]
    assert peer.member("peer")[1:4] == (down.incarnation, down.version + 1, v1peer.UP)  # type: ignore[index]
    assert peer.stats()["suspicions_refuted"] >= 1
    assert wait_until(lambda: peer.digest() == node.view_digest(), 5)
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_graceful_leave_both_ways(cluster: Cluster) -> None:
    n1, peer = joined(cluster)
    n2 = cluster.node("n2", n1.address)
    changes = changes_of(n1, "peer")
    assert wait_until(lambda: peer.status("n2") == v1peer.UP, 5)
    n2.stop()  # the peer hears n2 leave
    assert wait_until(lambda: peer.status("n2") == v1peer.LEFT, 5)
    assert peer.member("n2")[2:4] == (3, v1peer.LEFT)  # type: ignore[index]  # v0 -> up v1 -> 2 -> 3
    up_version = n1.member("peer").version  # type: ignore[union-attr]
    peer.leave()
    expected = [(MemberStatus.LEAVING, up_version + 1), (MemberStatus.LEFT, up_version + 2)]

    def seen() -> list[tuple[MemberStatus, int]]:  # callbacks run on the node's own thread
        return [(m.status, m.version) for m in list(changes) if m.version > up_version]

    assert wait_until(lambda: seen() == expected, 5), (seen(), n1.members())
    assert status(n1, "peer") is MemberStatus.LEFT
    assert_clean(peer, n1)


# ---------------------------------------------------------------- requests and messages


@pytest.mark.timeout(15)
def test_requests_and_sends_both_ways(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    got: queue.SimpleQueue[tuple[Any, str]] = queue.SimpleQueue()
    peer.register("upper", lambda payload, sender: pack(unpack(payload).upper()))
    peer.register("fail", lambda payload, sender: pack(1 // 0))
    peer.register("note", lambda payload, sender: got.put((unpack(payload), sender)))
    node.register("add", lambda message, sender: message["a"] + message["b"])
    node.register("note", lambda message, sender: got.put((message, sender)))

    assert node.request("peer", "upper", "hello", timeout=3) == "HELLO"
    with pytest.raises(RemoteError, match="ZeroDivisionError: integer division"):
        node.request("peer", "fail", None, timeout=3)
    with pytest.raises(RemoteError, match="no handler named 'nope' on node peer"):
        node.request("peer", "nope", None, timeout=3)
    assert peer.request("n1", "add", pack({"a": 2, "b": 3}), timeout=3) == (True, pack(5))
    ok, text = peer.request("n1", "nope", pack(None), timeout=3)
    assert (ok, text) == (False, b"no handler named 'nope' on node n1")

    node.send("peer", "note", "to peer", guarantee=DeliveryGuarantee.AT_MOST_ONCE)
    assert got.get(timeout=3) == ("to peer", "n1")
    peer.send("n1", "note", pack("to node"))
    assert got.get(timeout=3) == ("to node", "peer")
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_acknowledged_sends_from_a_node_to_the_peer(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    handled: list[Any] = []
    peer.register("work", lambda payload, sender: handled.append(unpack(payload)))
    peer.register("bad", lambda payload, sender: unpack(payload)["missing"])

    for n, guarantee in enumerate(
        (DeliveryGuarantee.AT_LEAST_ONCE, DeliveryGuarantee.EXACTLY_ONCE, DeliveryGuarantee.ORDERED)
    ):
        ack = node.send("peer", "work", n, guarantee=guarantee)
        assert ack is not None and ack.wait(5) is AckStatus.DELIVERED, ack
    # A lost DATA is sent again; a lost DATA_ACK makes a duplicate that is not handled twice.
    peer.drop_next("in", v1peer.Kind.DATA)
    ack = node.send("peer", "work", 3)
    assert ack is not None and ack.wait(5) is AckStatus.DELIVERED
    peer.drop_next("out", v1peer.Kind.DATA_ACK)
    ack = node.send("peer", "work", 4, guarantee=DeliveryGuarantee.EXACTLY_ONCE)
    assert ack is not None and ack.wait(5) is AckStatus.DELIVERED
    assert peer.stats()["data_duplicates"] >= 1
    # ORDERED: behind a lost message the next one is held (reported pending), then released.
    peer.drop_next("in", v1peer.Kind.DATA)
    acks = [node.send("peer", "work", n, guarantee=DeliveryGuarantee.ORDERED) for n in (5, 6)]
    assert all(a is not None and a.wait(5) is AckStatus.DELIVERED for a in acks), acks
    assert handled == [0, 1, 2, 3, 4, 5, 6]
    # Failures come back with their reason.
    failed = node.send("peer", "bad", {})
    assert failed is not None and failed.wait(5) is AckStatus.FAILED
    assert failed.reason == "handler raised KeyError: 'missing'"
    missing = node.send("peer", "nope", 1)
    assert missing is not None and missing.wait(5) is AckStatus.FAILED
    assert missing.reason == "no handler named 'nope' on node peer"
    # A burst: a peer that does not announce `batch` gets one DATA per message, never a
    # DATA_BATCH (which it would reject as an unknown kind: assert_clean).
    burst = [node.send("peer", "work", n, guarantee=DeliveryGuarantee.ORDERED) for n in range(200)]
    assert all(a is not None and a.wait(10) is AckStatus.DELIVERED for a in burst)
    assert handled[7:] == list(range(200))
    assert node.stats().get("reliable_batches_sent", 0) == 0
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_acknowledged_sends_from_the_peer_to_a_node(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    handled: list[tuple[Any, str]] = []
    node.register("work", lambda message, sender: handled.append((message, sender)))
    node.register("bad", lambda message, sender: 1 // 0)

    assert peer.send_data("n1", "work", pack("a")).result(5) == ("DELIVERED", "")
    peer.drop_next("out", v1peer.Kind.DATA)  # the first transmission is lost: retransmitted
    assert peer.send_data("n1", "work", pack("b"), v1peer.ORDERED).result(5) == ("DELIVERED", "")
    assert peer.stats()["data_retransmits"] >= 1
    # Acknowledgements lost (the node may send one on arrival and one when handled): the peer
    # sends again, the node recognises the duplicate and does not handle it twice.
    retransmits = peer.stats()["data_retransmits"]
    peer.drop_next("in", v1peer.Kind.DATA_ACK, count=2)
    delivered = peer.send_data("n1", "work", pack("c"), v1peer.EXACTLY_ONCE).result(5)
    assert delivered == ("DELIVERED", "")
    assert peer.stats()["data_retransmits"] > retransmits
    assert handled == [("a", "peer"), ("b", "peer"), ("c", "peer")]
    status_, reason = peer.send_data("n1", "bad", pack(None)).result(5)
    assert status_ == "FAILED" and "ZeroDivisionError" in reason, reason
    assert_clean(peer, node)


# ---------------------------------------------------------------- publications


@pytest.mark.timeout(15)
def test_publications_both_ways(cluster: Cluster) -> None:
    node, peer = joined(cluster)
    at_peer: queue.SimpleQueue[tuple[str, Any, str, int]] = queue.SimpleQueue()
    at_node: queue.SimpleQueue[tuple[str, Any, str]] = queue.SimpleQueue()
    peer.subscribe("prices", lambda t, payload, s, n: at_peer.put((t, unpack(payload), s, n)))
    node.subscribe("orders", lambda t, message, s: at_node.put((t, message, s)))
    assert wait_until(lambda: "peer" in node.subscribers("prices"), 5)
    assert wait_until(lambda: "n1" in peer.subscribers("orders"), 5)

    node.publish("prices", 1.5)
    node.publish("prices", 1.6, guarantee=DeliveryGuarantee.ORDERED)
    node.publish("prices", 1.7, guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
    node.publish("other", "not subscribed")
    expected = [("prices", 1.5, "n1", 0), ("prices", 1.6, "n1", 1), ("prices", 1.7, "n1", 2)]
    assert [at_peer.get(timeout=3) for _ in expected] == expected

    assert peer.publish("orders", pack({"id": 1})) == 0
    assert peer.publish("orders", pack({"id": 2}), v1peer.ORDERED) == 1
    assert peer.publish("orders", pack({"id": 3}), v1peer.EXACTLY_ONCE) == 2
    assert [at_node.get(timeout=3) for _ in range(3)] == [
        ("orders", {"id": n}, "peer") for n in (1, 2, 3)
    ]
    assert holds_for(at_peer.empty, 0.3) and at_node.empty()
    assert_clean(peer, node)


@pytest.mark.timeout(15)
def test_lost_numbered_publications_are_fetched_both_ways(cluster: Cluster) -> None:
    node, peer = joined(cluster, retransmit_buffer_count=2)
    at_peer: queue.SimpleQueue[tuple[Any, int]] = queue.SimpleQueue()
    at_node: queue.SimpleQueue[Any] = queue.SimpleQueue()
    peer.subscribe("prices", lambda t, payload, s, n: at_peer.put((unpack(payload), n)))
    node.subscribe("orders", lambda t, message, s: at_node.put(message))
    node.on_publication_loss(lambda loss: at_node.put(("lost", loss.first, loss.last)))
    assert wait_until(lambda: "peer" in node.subscribers("prices"), 5)
    assert wait_until(lambda: "n1" in peer.subscribers("orders"), 5)
    key, incarnation = ("n1", "prices"), node.incarnation

    # Node -> peer. The only publication is lost; LISTENING said the stream starts after 0 and
    # the node's heartbeats announce number 1, so 1 is missing: FETCH gets it as REPUBLISH.
    peer.drop_next("in", v1peer.Kind.PUBLISH)
    node.publish("prices", "first", guarantee=DeliveryGuarantee.ORDERED)
    assert wait_until(lambda: peer.call(lambda: peer.positions.get(key)) == (incarnation, 1), 3)
    assert wait_until(lambda: peer.call(lambda: peer.starts.get(key)) == (incarnation, 0), 3)
    assert at_peer.empty()
    peer.fetch("n1", "prices", [[1, 1]])
    assert at_peer.get(timeout=3) == ("first", 1)
    # What the node no longer holds (it keeps 2) comes back as LOST, the rest as REPUBLISH.
    for price in ("second", "third", "fourth"):
        node.publish("prices", price, guarantee=DeliveryGuarantee.AT_LEAST_ONCE)
    assert [at_peer.get(timeout=3) for _ in range(3)] == [
        ("second", 2),
        ("third", 3),
        ("fourth", 4),
    ]
    peer.fetch("n1", "prices", [[1, 4]])
    assert wait_until(lambda: peer.call(lambda: list(peer.losses)) == [("n1", "prices", 1, 2)], 3)
    assert wait_until(lambda: peer.stats().get("publications_duplicate") == 2, 3)
    assert peer.stats()["publications_repaired"] == 3

    # Peer -> node. A lost publication followed by another is a gap; a lost last one shows in
    # the peer's heartbeat positions. The node fetches both from the peer.
    peer.drop_next("out", v1peer.Kind.PUBLISH)
    peer.publish("orders", pack("a"), v1peer.ORDERED)
    peer.publish("orders", pack("b"), v1peer.ORDERED)
    assert [at_node.get(timeout=3) for _ in range(2)] == ["a", "b"]
    peer.drop_next("out", v1peer.Kind.PUBLISH)
    assert peer.publish("orders", pack("c"), v1peer.AT_LEAST_ONCE) == 3
    assert at_node.get(timeout=3) == "c"
    assert holds_for(at_node.empty, 0.3)
    assert node.stats().get("publications_repaired", 0) == 2
    assert_clean(peer, node)


# ---------------------------------------------------------------- the peer's own strictness


def header(*fields: Any) -> bytes:
    return pack(list(fields))


ME = ["a", 1, 1, 1, "127.0.0.1:5000", "127.0.0.1:5001"]
HEARTBEAT = [ME, [], "ac935cc6a5d1bbd1", []]
SYNC = [[ME], True, "127.0.0.1:5000"]


def test_the_peer_decodes_the_worked_examples_of_the_document() -> None:
    publish = [b"tnews\x00", bytes.fromhex("96010da1610107920000"), pack("hello")]
    assert v1peer.decode_fanout(publish).topic == "news"
    heartbeat = v1peer.decode_fanout([b"~", header(1, 1, "a", 1, 2, HEARTBEAT), b""])
    assert heartbeat.body == HEARTBEAT
    assert v1peer.digest_of([tuple(ME)]) == "ac935cc6a5d1bbd1"  # type: ignore[list-item]
    assert v1peer.decode_direct([header(1, 3, "a", 1, 3, SYNC), b""]).body == SYNC


@pytest.mark.parametrize(
    ("fanout", "frames"),
    [
        (True, [b"~", header(1, 1, "a", 1, 2, HEARTBEAT, "extra"), b""]),  # header of 7
        (True, [b"~", header(2, 1, "a", 1, 2, HEARTBEAT), b""]),  # version 2
        (True, [b"~", header(True, 1, "a", 1, 2, HEARTBEAT), b""]),  # a boolean is not 1
        (True, [b"~", header(1, 1, "a", 1, 2, [*HEARTBEAT, 0]), b""]),  # body of 5
        (True, [b"~", header(1, 1, "a", 1, 2, [[*ME, 0], [], "ac935cc6a5d1bbd1", []]), b""]),
        (True, [b"~", header(1, 1, "a", 1, 2, [ME, [], "AC935CC6A5D1BBD1", []]), b""]),
        (True, [b"~", header(1, 1, "a", 1.0, 2, HEARTBEAT), b""]),  # float incarnation
        (True, [b"~", header(1, 1, "a", 1, 2, HEARTBEAT) + b"\x00", b""]),  # trailing byte
        (True, [b"~", header(1, 13, "a", 1, 2, [0, 0]), b""]),  # PUBLISH on the control topic
        (True, [b"tnews\x00", header(1, 13, "a", 1, 2, [0, 1]), b""]),  # unnumbered, guaranteed
        (False, [b"", header(1, 3, "a", 1, 2, SYNC), b""]),  # an empty delimiter, as REQ adds
        (False, [header(1, 3, "a", 1, 2, [[[*ME, 0]], True, "127.0.0.1:5000"]), b""]),
        (False, [header(1, 3, "a b", 1, 2, SYNC), b""]),  # a name with a space
        (False, [pack([1, 3, b"a", 1, 2, SYNC]), b""]),  # bin, not str
        (False, [header(1, 3, "a", 1, 2, [[ME], True, "127.0.0.1:0"]), b""]),  # port 0
        (False, [header(1, 14, "a", 1, 2, ["h", 1, 1, 1, 0, 1]), b""]),  # DATA at most once
        (False, [header(1, 1, "a", 1, 2, HEARTBEAT), b""]),  # HEARTBEAT sent directly
        (False, [header(1, 9, "a", 1, 2, []), b""]),  # unknown kind
    ],
)
def test_the_peer_rejects_what_v1_does_not_allow(fanout: bool, frames: list[bytes]) -> None:
    decode = v1peer.decode_fanout if fanout else v1peer.decode_direct
    with pytest.raises(v1peer.Rejected):
        decode(frames)


# ---------------------------------------------------------------- a mixed cluster


def heartbeats(node: Node) -> int:
    return node.stats().get("heartbeats_published", 0)


@pytest.mark.timeout(30)
def test_nodes_that_speak_swim_heartbeat_while_the_peer_is_live(cluster: Cluster) -> None:
    """Two nodes that speak swim stop heartbeating to everyone once they know each other; a
    revision 1.0 peer that joins through one is learnt by the other from gossip, and both
    heartbeat for it (and probe each other) until it leaves, then stop again."""
    n1 = cluster.node("n1")
    n2 = cluster.node("n2", n1.address)
    assert wait_until(lambda: all_up([n1, n2]), 5)
    view = n1.request("n1", "zcluster.view", None)
    assert next(m for m in view["members"] if m["node_id"] == "n2")["capabilities"] == list(
        SUPPORTED
    )
    quiet = heartbeats(n1), heartbeats(n2)
    assert holds_for(lambda: (heartbeats(n1), heartbeats(n2)) == quiet, 1.0)

    peer = cluster.peer("peer", n2.address)  # n1 hears of it only through gossip
    every = ("n1", "n2", "peer")

    def converged() -> bool:
        return (
            all(status(n, m) is MemberStatus.UP for n in (n1, n2) for m in every)
            and all(peer.status(m) == v1peer.UP for m in every)
            and peer.digest() == n1.view_digest() == n2.view_digest()
        )

    assert wait_until(converged, 10), (n1.members(), n2.members(), peer.digest())
    assert wait_until(lambda: {"n1", "n2"} <= peer.listeners(), 5)
    beats = heartbeats(n1), heartbeats(n2)
    # Past heartbeat_timeout_s + probe_timeout_s, a peer that heard nothing would suspect.
    assert holds_for(converged, 1.6)
    assert heartbeats(n1) > beats[0] and heartbeats(n2) > beats[1]
    probes = n1.stats().get("probes_sent", 0)
    assert wait_until(lambda: n1.stats().get("probes_sent", 0) > probes, 2)  # n1 probes n2

    peer.leave()
    assert wait_until(lambda: status(n1, "peer") is MemberStatus.LEFT, 5), n1.members()
    assert wait_until(lambda: status(n2, "peer") is MemberStatus.LEFT, 5), n2.members()
    time.sleep(0.3)
    quiet = heartbeats(n1), heartbeats(n2)
    assert holds_for(lambda: (heartbeats(n1), heartbeats(n2)) == quiet, 1.0)
    assert status(n1, "n2") is MemberStatus.UP and status(n2, "n1") is MemberStatus.UP
    assert n1.view_digest() == n2.view_digest()
    assert_clean(peer, n1, n2)
