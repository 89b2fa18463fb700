"""The blocking Node API on real ZeroMQ sockets (127.0.0.1, random ports)."""

from __future__ import annotations

import threading

import pytest

from tests.helpers import all_up, wait_until
from tests.runtime.conftest import NodeFactory
from zcluster import (
    BindError,
    ConfigError,
    JoinTimeout,
    MemberStatus,
    Node,
    NotRunning,
    RemoteError,
    RequestTimeout,
    UnknownMember,
)
from zcluster.testing.processes import free_port_pair
from zcluster.wire import MAX_NAME_BYTES, MAX_TOPIC_BYTES


def test_three_nodes_join_and_agree(trio: list[Node]) -> None:
    a, b, c = trio
    members = {m.node_id: m for m in c.members()}
    assert members["a"].address == a.address
    assert members["b"].incarnation == b.incarnation
    assert all(m.status is MemberStatus.UP for m in members.values())
    assert a.view_digest() == b.view_digest() == c.view_digest()


def test_request_reply_round_trip(trio: list[Node]) -> None:
    a, b, _ = trio
    a.register("add", lambda message, sender: {"sum": sum(message), "caller": sender})
    assert b.request("a", "add", [1, 2, 3]) == {"sum": 6, "caller": "b"}


def test_request_errors_are_reported_precisely(trio: list[Node]) -> None:
    a, b, _ = trio

    def fail(message: object, sender: str) -> None:
        raise ValueError("bad input")

    release = threading.Event()
    a.register("fail", fail)
    a.register("slow", lambda message, sender: release.wait(5))
    with pytest.raises(RemoteError, match="ValueError: bad input"):
        b.request("a", "fail", None)
    with pytest.raises(RemoteError, match="no handler named 'missing'"):
        b.request("a", "missing", None)
    with pytest.raises(RequestTimeout):
        b.request("a", "slow", None, timeout=0.3)
    release.set()
    with pytest.raises(UnknownMember):
        b.request("nobody", "add", None)
    assert a.stats()["callback_errors"] >= 1


def test_send_reaches_the_handler_with_the_sender(trio: list[Node]) -> None:
    a, b, c = trio
    got: list[tuple[object, str]] = []
    a.register("note", lambda message, sender: got.append((message, sender)))
    b.send("a", "note", {"n": 1})
    c.send("a", "note", {"n": 2})
    assert wait_until(lambda: len(got) == 2, 5)
    assert sorted(got, key=lambda x: x[1]) == [({"n": 1}, "b"), ({"n": 2}, "c")]


def test_topics_match_exactly_and_unsubscribe_stops_delivery(trio: list[Node]) -> None:
    a, b, _ = trio
    got: list[tuple[str, object, str]] = []
    b.subscribe("orders", lambda topic, message, sender: got.append((topic, message, sender)))
    assert wait_until(lambda: "b" in a.subscribers("orders"), 5)
    a.publish("orders.eu", "not for b")
    a.publish("order", "not for b either")
    a.publish("orders", "for b")
    assert wait_until(lambda: len(got) >= 1, 5)
    assert got == [("orders", "for b", "a")]
    b.subscribe("marker", lambda topic, message, sender: got.append((topic, message, sender)))
    b.unsubscribe("orders")
    assert wait_until(lambda: a.subscribers("marker") == {"b"} and not a.subscribers("orders"), 5)
    a.publish("orders", "after unsubscribe")
    a.publish("marker", "end")
    # One PUB->SUB link keeps order: once the marker is in, the filtered message never comes.
    assert wait_until(lambda: len(got) == 2, 5)
    assert got[1] == ("marker", "end", "a")


def test_more_topics_than_the_subscribe_queue_holds_messages(make_node: NodeFactory) -> None:
    # The SUB's queue holds two messages here; its subscriptions (two of its own, then
    # one per topic) must still all reach the publisher, before and after it connects.
    small = {"subscribe_queue_max_bytes": 4 * 1024 * 1024}
    sub = make_node("s", **small)
    got: list[str] = []
    early = [f"early.{i}" for i in range(20)]
    for topic in early:
        sub.subscribe(topic, lambda topic, message, sender: got.append(topic))
    pub = make_node("p", sub, **small)
    late = [f"late.{i}" for i in range(20)]
    for topic in late:
        sub.subscribe(topic, lambda topic, message, sender: got.append(topic))
    assert wait_until(lambda: all("s" in pub.subscribers(t) for t in early + late), 5)
    for topic in early + late:
        pub.publish(topic, None)
    assert wait_until(lambda: len(got) >= 40, 5), got
    assert sorted(got) == sorted(early + late)


def test_publish_fan_out_in_order(trio: list[Node]) -> None:
    a, b, c = trio
    received: dict[str, list[int]] = {"b": [], "c": []}
    b.subscribe("feed", lambda t, m, s: received["b"].append(m))
    c.subscribe("feed", lambda t, m, s: received["c"].append(m))
    assert wait_until(lambda: {"b", "c"} <= a.subscribers("feed"), 5)
    for i in range(5000):
        a.publish("feed", i)
    assert wait_until(lambda: all(len(v) == 5000 for v in received.values()), 20)
    assert received["b"] == received["c"] == list(range(5000))


def test_graceful_stop_is_seen_as_left_and_disconnected(trio: list[Node]) -> None:
    a, b, c = trio
    assert a.stats()["connections_direct_to_members"] == 2
    assert a.stats()["connections_subscribed"] == 2
    c.stop()
    assert wait_until(lambda: a.member("c").status is MemberStatus.LEFT, 3)  # type: ignore[union-attr]
    assert wait_until(lambda: b.member("c").status is MemberStatus.LEFT, 3)  # type: ignore[union-attr]
    assert a.stats().get("members_down", 0) == 0
    for node in (a, b):
        gauges = node.stats()
        assert gauges["connections_direct_to_members"] == 1, gauges
        assert gauges["connections_subscribed"] == 1, gauges


def test_seed_given_by_dns_name_joins(make_node: NodeFactory) -> None:
    a = make_node("a")
    port = a.address.rsplit(":", 1)[1]
    b = Node("b", seeds=[f"localhost:{port}"])
    try:
        b.start(timeout=5)
        assert wait_until(lambda: all_up([a, b]), 5)
    finally:
        b.stop()


def test_slow_callbacks_do_not_stall_failure_detection(make_node: NodeFactory) -> None:
    a = make_node("a")
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    unblock = threading.Event()
    b.subscribe("work", lambda t, m, s: unblock.wait(2.5))
    assert wait_until(lambda: "b" in a.subscribers("work"), 5)
    a.publish("work", "heavy")
    # b's callback thread is busy for 2.5 s, longer than detection takes; b must stay up.
    assert not wait_until(lambda: a.member("b").status is not MemberStatus.UP, 2.5)  # type: ignore[union-attr]
    unblock.set()
    assert a.stats().get("members_suspect", 0) == 0


def test_restart_with_same_id_rejoins_with_new_incarnation(make_node: NodeFactory) -> None:
    a = make_node("a")
    b = make_node("b", a)
    assert wait_until(lambda: all_up([a, b]), 5)
    first = b.incarnation
    b.stop()
    b2 = make_node("b", a)
    assert wait_until(lambda: all_up([a, b2]), 5)
    assert a.member("b").incarnation == b2.incarnation > first  # type: ignore[union-attr]


def test_calls_on_a_stopped_node_raise_not_running(make_node: NodeFactory) -> None:
    a = make_node("a", start=False)
    with pytest.raises(NotRunning):
        a.publish("t", 1)
    with pytest.raises(NotRunning):
        a.members()


def test_bad_arguments_raise_config_error(make_node: NodeFactory) -> None:
    with pytest.raises(ConfigError):
        Node("has space")
    with pytest.raises(ConfigError):
        Node("a", bind="127.0.0.1")
    with pytest.raises(ConfigError):
        Node("a", heartbeat_interval_s=-1)
    with pytest.raises(ConfigError):
        Node("a", no_such_setting=1)
    a = make_node("a")
    with pytest.raises(ConfigError):
        a.publish("", 1)
    with pytest.raises(ConfigError):
        a.publish("bad\x00topic", 1)
    taken = Node("b", bind=a.address)
    with pytest.raises(BindError, match=r"cannot bind the ROUTER socket to 127\.0\.0\.1:\d+ "):
        taken.start()
    wildcard = Node("c", bind="0.0.0.0:0")
    with pytest.raises(ConfigError, match="advertise"):
        wildcard.start()


def test_a_name_with_several_addresses_counts_as_several_seeds() -> None:
    from zcluster.runtime.driver import resolve_seeds

    addresses = resolve_seeds(["localhost:7000", "127.0.0.1:7001", "no-such-host.invalid:1"])
    assert "127.0.0.1:7000" in addresses and "127.0.0.1:7001" in addresses
    assert len(addresses) == len(set(addresses))
    assert not any(a.startswith("no-such-host") for a in addresses)


def test_handlers_may_call_back_into_nodes_and_even_stop_them(trio: list[Node]) -> None:
    a, b, c = trio
    b.register("inner", lambda message, sender: message * 10)
    a.register("outer", lambda message, sender: a.request("b", "inner", message) + len(a.members()))
    assert c.request("a", "outer", 4) == 43
    stopped = threading.Event()

    def quit_now(message: object, sender: str) -> None:
        c.stop()
        stopped.set()

    c.register("quit", quit_now)
    a.send("c", "quit", None)
    assert stopped.wait(5)
    assert not c.running
    assert wait_until(lambda: a.member("c").status is MemberStatus.LEFT, 3)  # type: ignore[union-attr]


def test_join_timeout_cleans_up_so_the_port_can_be_reused() -> None:
    port = free_port_pair()
    lonely = Node("lonely", bind=f"127.0.0.1:{port}", seeds=["127.0.0.1:9"], join_timeout_s=0.5)
    with pytest.raises(JoinTimeout, match="no seed admitted it"):
        lonely.start()
    assert not lonely.running
    again = Node("again", bind=f"127.0.0.1:{port}")
    again.start()
    again.stop()


def test_a_node_seeded_only_with_itself_forms_the_cluster(make_node: NodeFactory) -> None:
    port = free_port_pair()
    me = f"127.0.0.1:{port}"
    first = Node("pod-0", bind=me, seeds=[me])
    first.start(timeout=5)
    try:
        second = make_node("pod-1", first)
        assert wait_until(lambda: all_up([first, second]), 5)
    finally:
        first.stop()


def test_advertising_a_wildcard_is_refused() -> None:
    with pytest.raises(ConfigError, match="not an address peers can reach"):
        Node("a", bind="0.0.0.0:0", advertise="0.0.0.0:0").start()


def test_a_subscriber_of_thousands_of_topics_is_heard_on_every_one(make_node: NodeFactory) -> None:
    # A PUB takes its subscribers' input a high-water mark at a time (4,032 of the
    # longest subscriptions per connection by default, bounded like the ROUTER's):
    # thousands of subscriptions all arrive, promptly, at a publisher that publishes
    # nothing meanwhile.
    sub = make_node("s")
    topics = [f"t.{i}" for i in range(3000)]
    got: set[str] = set()
    for topic in topics:
        sub.subscribe(topic, lambda topic, message, sender: got.add(topic))
    pub = make_node("p", sub)
    assert wait_until(lambda: all("s" in pub.subscribers(t) for t in topics), 10)
    for topic in topics:
        pub.publish(topic, None)
    assert wait_until(lambda: len(got) == len(topics), 10), len(got)


def test_the_longest_topic_and_node_id_pass_the_pubs_subscription_limit(
    make_node: NodeFactory,
) -> None:
    """The PUB's MAXMSGSIZE is the longest subscription (wire.SUBSCRIPTION_MAX_BYTES):
    a topic and a node id at their longest still subscribe and are heard."""
    long_id = "s" * MAX_NAME_BYTES
    topic, prefix = "t" * MAX_TOPIC_BYTES, "p" * MAX_TOPIC_BYTES
    sub = make_node(long_id)
    got: list[str] = []
    sub.subscribe(topic, lambda topic, message, sender: got.append(message))
    sub.subscribe_prefix(prefix, lambda topic, message, sender: got.append(message))
    pub = make_node("p", sub)
    assert wait_until(lambda: all_up([pub, sub]), 10)  # heartbeats under long_id's frame
    assert wait_until(lambda: long_id in pub.subscribers(topic), 10)
    pub.publish(topic, "exact")
    pub.publish(prefix, "prefixed")
    assert wait_until(lambda: sorted(got) == ["exact", "prefixed"], 10), got
    assert pub.stats().get("connections_inbound", 0) >= 2
