"""A node fed garbage on its ROUTER and its SUB counts it, drops it and keeps serving."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator

import msgpack
import pytest
import zmq

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import MemberStatus
from zcluster.protocol.members import Member
from zcluster.wire import CONTROL_TOPIC, Kind, encode_header, encode_member, topic_frame

GARBAGE: list[list[bytes]] = [
    [b""],
    [b"\xff"],
    [b"hello", b"world"],
    [b"\x00" * 100],
    [msgpack.packb([2, 3, "x", 1, 1, []]), b""],  # wrong protocol version
    [msgpack.packb([1, 99, "x", 1, 1, []]), b""],  # unknown kind
    [msgpack.packb([1, int(Kind.SEND), "x", -1, 1, ["h"]]), b""],  # negative incarnation
    [msgpack.packb([1, int(Kind.SEND), "x", 1, 1, []]), b""],  # body too short
    [msgpack.packb([1, int(Kind.SYNC), "x", 1, 1, [[["n"]], False, "h:1"]]), b""],
    [
        msgpack.packb(
            [1, int(Kind.SYNC), "x", 1, 1, [[[["n"], 1, 1, 1, "h:1", "h:2"]], False, "h:1"]]
        ),
        b"",
    ],  # an unhashable node id
    [encode_header(Kind.SEND, "x", 1, 1, ("h",)), b"", b"extra"],
    [b"a", b"b", b"c", b"d", b"e"],
]


RawSocket = Callable[[int], zmq.Socket[bytes]]


@pytest.fixture
def raw_socket() -> Iterator[RawSocket]:
    """Plain pyzmq sockets that speak garbage; all closed at teardown."""
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sockets: list[zmq.Socket[bytes]] = []

    def make(kind: int) -> zmq.Socket[bytes]:
        sock = ctx.socket(kind)
        sock.setsockopt(zmq.LINGER, 0)
        sockets.append(sock)
        return sock

    yield make
    for sock in sockets:
        sock.close(linger=0)
    ctx.term()


def test_garbage_on_router_is_counted_and_dropped(
    make_node: NodeFactory, raw_socket: RawSocket
) -> None:
    a = make_node("a")
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    a.register("echo", lambda message, sender: message)
    dealer = raw_socket(zmq.DEALER)
    dealer.connect(f"tcp://{a.address}")
    rng = random.Random(1)
    frames_sent = 0
    for frames in GARBAGE:
        dealer.send_multipart(frames)
        frames_sent += 1
    for _ in range(200):
        dealer.send_multipart([rng.randbytes(rng.randint(0, 64)) for _ in range(rng.randint(1, 3))])
        frames_sent += 1
    assert wait_until(lambda: a.stats().get("frames_rejected_router", 0) >= frames_sent, 5), (
        a.stats()
    )
    assert b.request("a", "echo", "still here") == "still here"
    assert a.member("b").status is MemberStatus.UP  # type: ignore[union-attr]


def test_garbage_on_sub_is_counted_and_dropped(
    make_node: NodeFactory, raw_socket: RawSocket
) -> None:
    a = make_node("a")
    got: list[object] = []
    a.subscribe("news", lambda topic, message, sender: got.append(message))
    # A fake member: its record points the node's SUB at our raw PUB.
    pub = raw_socket(zmq.PUB)
    pub_port = pub.bind_to_random_port("tcp://127.0.0.1")
    router = raw_socket(zmq.ROUTER)
    router_port = router.bind_to_random_port("tcp://127.0.0.1")
    fake = Member(
        "fake", 1, 1, MemberStatus.UP, f"127.0.0.1:{router_port}", f"127.0.0.1:{pub_port}"
    )
    dealer = raw_socket(zmq.DEALER)
    dealer.connect(f"tcp://{a.address}")
    sync = encode_header(Kind.SYNC, "fake", 1, 1, ([encode_member(fake)], False, fake.address))
    dealer.send_multipart([sync, b""])
    assert wait_until(lambda: a.member("fake") is not None, 5)

    sent = 0

    def flood() -> bool:
        nonlocal sent
        for first in (CONTROL_TOPIC, topic_frame("news")):
            pub.send_multipart([first, b"\xc1garbage", b""])
            pub.send_multipart([first, encode_header(Kind.SEND, "fake", 1, 9, ("h",)), b""])
            pub.send_multipart([first])
            sent += 3
        return a.stats().get("frames_rejected_sub", 0) >= 30

    assert wait_until(flood, 3), a.stats()
    # The node still works: a valid publication from the fake member is delivered.
    valid = encode_header(Kind.PUBLISH, "fake", 1, 10, (0, 0))

    def publish_valid() -> bool:
        pub.send_multipart([topic_frame("news"), valid, msgpack.packb("ok")])
        return "ok" in got

    assert wait_until(publish_valid, 3)
    # ... and it still admits new members.
    other = make_node("b", a)

    def joined() -> bool:
        seen_by_a, seen_by_b = a.member("b"), other.member("a")
        up = MemberStatus.UP
        return (
            seen_by_a is not None
            and seen_by_a.status is up
            and seen_by_b is not None
            and seen_by_b.status is up
        )

    assert wait_until(joined, 5)


def test_reply_addresses_from_strangers_cannot_exhaust_connections(
    make_node: NodeFactory, raw_socket: RawSocket
) -> None:
    a = make_node("a", non_member_connections_max_count=8)
    dealer = raw_socket(zmq.DEALER)
    dealer.connect(f"tcp://{a.address}")
    for port in range(20000, 20100):
        ping = encode_header(Kind.PING, "stranger", 1, port, (port, f"127.0.0.1:{port}"))
        dealer.send_multipart([ping, b""])
    assert wait_until(lambda: a.stats().get("messages_received", 0) >= 100, 5), a.stats()
    assert a.stats()["connections_direct"] <= 8
