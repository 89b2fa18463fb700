"""The fast path of fan-out on real sockets: publications of the blocking API skip the
loop (numbered ones are numbered and kept in the caller's thread, unnumbered ones also
skip the core), with the same outcome as the core's path (docs/architecture.md)."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
import zmq

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import ConfigError, DeliveryGuarantee, Node, NotRunning
from zcluster.core.subscriber import Subscriber
from zcluster.protocol import messages as msg
from zcluster.wire import decode_published, one_frame_prefix, topic_frame

G = DeliveryGuarantee


def pair(make_node: NodeFactory, topic: str) -> tuple[Node, Node, list[tuple[str, object, str]]]:
    publisher = make_node("p")
    subscriber = make_node("s", publisher)
    got: list[tuple[str, object, str]] = []
    subscriber.subscribe(topic, lambda t, message, sender: got.append((t, message, sender)))
    assert wait_until(lambda: all_up([publisher, subscriber]), 5)
    assert wait_until(lambda: "s" in publisher.subscribers(topic), 5)
    return publisher, subscriber, got


def publish_from_threads(
    publisher: Node,
    threads: int,
    per_thread: int,
    guarantee: DeliveryGuarantee,
    got: list[tuple[str, object, str]],
) -> None:
    """Publish ``(thread, i)`` on "t" from several threads at once; each thread's arrive
    whole and in the order it published them."""

    def burst(k: int) -> None:
        for i in range(per_thread):
            publisher.publish("t", (k, i), guarantee=guarantee)

    workers = [threading.Thread(target=burst, args=(k,)) for k in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(30)
    assert wait_until(lambda: len(got) == per_thread * threads, 20), len(got)
    for k in range(threads):
        assert [i for _, (kk, i), _ in got if kk == k] == list(range(per_thread))  # type: ignore[misc]


def test_unnumbered_publications_take_the_fast_path_in_order(make_node: NodeFactory) -> None:
    publisher, subscriber, got = pair(make_node, "t")
    for i in range(2000):
        publisher.publish("t", {"i": i})
    assert wait_until(lambda: len(got) == 2000, 10), len(got)
    assert got == [("t", {"i": i}, "p") for i in range(2000)]
    stats = subscriber.stats()
    assert stats["publications_fast_path"] == 2000
    assert stats["messages_received"] >= 2000, "the core hears of every one, once per batch"
    assert publisher.stats()["messages_published"] >= 2000


def test_numbered_and_unnumbered_publications_share_a_topic(make_node: NodeFactory) -> None:
    publisher, subscriber, got = pair(make_node, "t")
    before = subscriber.stats().get("publications_fast_path", 0)
    for i in range(100):
        guarantee = G.AT_LEAST_ONCE if i % 2 else G.AT_MOST_ONCE
        publisher.publish("t", i, guarantee=guarantee)
    assert wait_until(lambda: len(got) == 100, 10), len(got)
    assert sorted(message for _, message, _ in got) == list(range(100))
    assert [message for _, message, _ in got] == list(range(100)), "both leave in call order"
    assert subscriber.stats()["publications_fast_path"] - before == 100


def test_threads_publishing_numbered_at_once_keep_each_topic_in_number_order(
    make_node: NodeFactory,
) -> None:
    """Threads number and send under one lock: the PUB carries the numbers in order, so
    nothing is held back or fetched, and every publication arrives once."""
    publisher, subscriber, got = pair(make_node, "t")
    per_thread, threads = 2000, 4
    publish_from_threads(publisher, threads, per_thread, G.ORDERED, got)
    stats, published = subscriber.stats(), publisher.stats()
    assert stats.get("publication_fetches", 0) == 0, "no gap: numbers left in order"
    assert stats.get("publications_duplicate", 0) == 0
    assert published["messages_published"] >= per_thread * threads


def test_one_numbered_topic_too_many_is_refused_in_the_callers_thread(
    make_node: NodeFactory,
) -> None:
    node = make_node("alone", published_topics_max_count=2)
    node.publish("a", 1, guarantee=G.AT_LEAST_ONCE)
    node.publish("b", 1, guarantee=G.AT_LEAST_ONCE)
    with pytest.raises(ConfigError, match="published_topics_max_count"):
        node.publish("c", 1, guarantee=G.AT_LEAST_ONCE)
    node.publish("a", 2, guarantee=G.AT_LEAST_ONCE)  # a topic it has still takes more
    node.publish("c", 1)  # and unnumbered ones need no room
    with pytest.raises(ConfigError, match="topic"):
        node.publish("bad\x00topic", 1, guarantee=G.AT_LEAST_ONCE)
    with pytest.raises(ConfigError, match="use send_transaction"):
        node.publish("a", 1, guarantee=G.TRANSACTIONAL)
    for guarantee in (G.AT_MOST_ONCE, G.AT_LEAST_ONCE):
        with pytest.raises(ConfigError, match="topic"):
            node.publish(["not", "hashable"], 1, guarantee=guarantee)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="guarantee"):
        node.publish("a", 1, guarantee=["not", "hashable"])  # type: ignore[arg-type]
    assert node.stats()["messages_published"] == 4, "what was refused was not published"


def test_threads_publishing_at_once_never_interleave_frames(make_node: NodeFactory) -> None:
    """The lane's lock keeps each three-frame message whole, heartbeats included."""
    publisher, subscriber, got = pair(make_node, "t")
    publish_from_threads(publisher, 4, 3000, G.AT_MOST_ONCE, got)
    assert subscriber.stats().get("frames_rejected", 0) == 0
    assert all_up([publisher, subscriber]), "heartbeats kept flowing"


def test_publishing_on_a_stopped_node_raises(make_node: NodeFactory) -> None:
    node = make_node("alone")
    node.stop()
    with pytest.raises(NotRunning):
        node.publish("t", 1)
    with pytest.raises(NotRunning):
        node.publish("t", 1, guarantee=G.AT_LEAST_ONCE)
    with pytest.raises(NotRunning):
        Node("never-started").publish("t", 1, guarantee=G.AT_LEAST_ONCE)


@contextlib.contextmanager
def tapped(publisher: Node, topic: str) -> Iterator[Callable[[], list[list[bytes]]]]:
    """A plain SUB on the publisher's PUB, subscribed to both forms of ``topic``: yields
    what reads the messages that arrived since the last read."""
    context = zmq.Context()
    tap = context.socket(zmq.SUB)
    try:
        tap.setsockopt(zmq.SUBSCRIBE, one_frame_prefix(topic))
        tap.setsockopt(zmq.SUBSCRIBE, topic_frame(topic))
        tap.connect(f"tcp://{publisher.pub_address}")

        def read() -> list[list[bytes]]:
            arrived = []
            while tap.poll(0):
                arrived.append(tap.recv_multipart())
            return arrived

        yield read
    finally:
        tap.close(0)
        context.term()


def test_publications_go_out_in_one_frame_that_decodes_as_three(make_node: NodeFactory) -> None:
    """Every member reads the one-frame form, so the publisher uses it (protocol section 2)."""
    publisher, _, got = pair(make_node, "t")
    seen: list[tuple[list[bytes], msg.Publish]] = []
    with tapped(publisher, "t") as read:

        def arrived() -> bool:
            publisher.publish("t", "x")
            publisher.publish("t", "y", guarantee=G.AT_LEAST_ONCE)
            for frames in read():
                message = decode_published(frames, 1 << 20)[1].message
                if isinstance(message, msg.Publish):  # not a BEACON (see below)
                    seen.append((frames, message))
            return len(seen) >= 2

        assert wait_until(arrived, 5)
    assert all(len(frames) == 1 for frames, _ in seen), "one frame per publication"
    kinds = {message.guarantee for _, message in seen}
    assert kinds == {G.AT_MOST_ONCE, G.AT_LEAST_ONCE}
    assert wait_until(lambda: len(got) >= 2, 5)


def test_beacons_share_the_topic_frame_and_reach_the_core(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between members that speak swim, a publisher's latest number on a topic goes out as
    a BEACON under that topic's frame (protocol section 2), in three frames even while
    publications take one: the subscriber's fast path finds a subscribed topic but no
    PUBLISH header, and hands it to the core."""
    beacons: list[tuple[str, str | None, int]] = []
    take = Subscriber._rx_beacon

    def taken(
        self: Subscriber, env: msg.Envelope, payload: bytes, topic: str | None, now: float
    ) -> None:
        assert isinstance(env.message, msg.Beacon)
        beacons.append((env.sender, topic, env.message.seq))
        take(self, env, payload, topic, now)

    monkeypatch.setattr(Subscriber, "_rx_beacon", taken)
    publisher, subscriber, got = pair(make_node, "t")
    seen: list[list[bytes]] = []
    with tapped(publisher, "t") as read:

        def beaconed() -> bool:
            publisher.publish("t", "numbered", guarantee=G.AT_LEAST_ONCE)
            seen.extend(read())
            return any(len(frames) == 3 for frames in seen)

        assert wait_until(beaconed, 5), seen
    for frames in seen:
        message = decode_published(frames, 1 << 20)[1].message
        assert len(frames) == (3 if isinstance(message, msg.Beacon) else 1), message
    assert wait_until(lambda: ("p", "t") in {(s, t) for s, t, _ in beacons}, 5), beacons
    assert wait_until(lambda: len(got) >= 1, 5)
    assert subscriber.stats().get("frames_rejected", 0) == 0


def test_requests_sent_from_the_callers_thread_always_meet_their_reply(
    make_node: NodeFactory,
) -> None:
    """The caller sends the request itself and the core learns of it without a wake-up;
    the reply, however fast (here from a node in the same process), is never unmatched."""
    server = make_node("server")
    client = make_node("client", server)
    server.register("echo", lambda message, sender: message)
    assert wait_until(lambda: all_up([server, client]), 5)
    for i in range(2000):
        assert client.request("server", "echo", i, timeout=5) == i
    assert client.stats().get("replies_unmatched", 0) == 0
