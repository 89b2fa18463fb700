"""The PUB lane under backpressure (runtime/lane.py), on real sockets: publications that
find a queue full wait in line and leave in the order they were accepted; the loop's own
messages are skipped, never sent lossy (which would make libzmq skip the subscriber)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import msgpack
import pytest
import zmq

from tests.helpers import wait_until
from zcluster import NodeConfig
from zcluster.core.publications import Publications
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee
from zcluster.runtime.lane import PublicationLane
from zcluster.wire import Encoder, check_user_topic, decode_published, topic_frame

G = DeliveryGuarantee
CONFIG = NodeConfig(publish_block_max_s=5.0)
HWM = 2


@pytest.fixture
def sockets() -> Iterator[tuple[zmq.Socket[bytes], zmq.Socket[bytes]]]:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    pub, sub = ctx.socket(zmq.PUB), ctx.socket(zmq.SUB)
    for sock in (pub, sub):
        sock.setsockopt(zmq.SNDHWM, HWM)
        sock.setsockopt(zmq.RCVHWM, HWM)
        sock.setsockopt(zmq.LINGER, 0)
    pub.setsockopt(zmq.XPUB_NODROP, 1)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    sub.setsockopt(zmq.SUBSCRIBE, topic_frame("t"))
    sub.setsockopt(zmq.SUBSCRIBE, b"warm")
    sub.connect(f"tcp://127.0.0.1:{port}")

    def subscribed() -> bool:  # the PUB filters until the subscription has arrived
        with contextlib.suppress(zmq.Again):
            pub.send(b"warm", zmq.NOBLOCK)
        return sub.poll(10) != 0

    assert wait_until(subscribed, 10)
    while sub.poll(50):
        sub.recv()
    yield pub, sub
    ctx.destroy(linger=0)


def lane_on(pub: zmq.Socket[bytes]) -> PublicationLane:
    encoder = Encoder("p", 1, check_user_topic)
    lane = PublicationLane("p", encoder, pub, msgpack.packb, CONFIG, Publications(CONFIG))
    lane.one_frame = False  # three frames: what the SUB below decodes
    return lane


def fill(lane: PublicationLane) -> tuple[int, object]:
    """Publish numbered until one has to wait (the subscriber reads nothing)."""
    for count in range(1, 100_000):
        waiting = lane.try_numbered("t", count, G.AT_LEAST_ONCE)
        if waiting is not None:
            return count, waiting
    raise AssertionError("the queue never filled")


def read_all(sub: zmq.Socket[bytes], expected: int) -> list[int]:
    seqs: list[int] = []

    def more() -> bool:
        while sub.poll(0):
            _, envelope, _ = decode_published(sub.recv_multipart(), 1 << 20)
            assert isinstance(envelope.message, msg.Publish)
            seqs.append(envelope.message.seq)
        return len(seqs) >= expected

    assert wait_until(more, 10), seqs
    return seqs


def test_publications_that_wait_leave_in_the_order_they_were_numbered(
    sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, sub = sockets
    lane = lane_on(pub)
    first_waiting, first = fill(lane)
    # A later one queues behind it, even once there would be room for it alone.
    second = lane.try_numbered("t", "later", G.AT_LEAST_ONCE)
    assert second is not None
    seqs = read_all(sub, 1)  # the subscriber reads: room comes back
    assert wait_until(lambda: lane.offer(second), 10)  # type: ignore[arg-type]
    assert first.sent  # type: ignore[attr-defined]
    seqs += read_all(sub, first_waiting + 1 - len(seqs))
    assert seqs == list(range(1, first_waiting + 2))


def test_the_loops_messages_are_skipped_not_sent_lossy(
    sockets: tuple[zmq.Socket[bytes], zmq.Socket[bytes]],
) -> None:
    pub, _ = sockets
    lane = lane_on(pub)
    _, waiting = fill(lane)
    lane.publish("t", msg.Beacon(7), b"")  # the loop's: the queue is full
    assert lane.skipped == 1
    # The subscriber is still waited for: a lossy send would have made libzmq skip it.
    assert not lane.offer(waiting)  # type: ignore[arg-type]
    assert lane.try_unnumbered("t", "x") is not None
    assert lane.dropped == 0
