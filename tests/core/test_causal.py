"""CAUSAL delivery in the core (core/causal.py, core/stamps.py), on the simulated
network: what a message waits for, what it gets when a predecessor never comes, how
the clocks stay compact, and what a malformed stamp gets."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.sim.test_delivery_sim import cluster
from zcluster import AckStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.core import effects as fx
from zcluster.core.causal import CausalPast
from zcluster.core.stamps import read_stamp, stamp
from zcluster.errors import WireError
from zcluster.protocol.messages import DIRECT_STREAM, TOPIC_STREAM
from zcluster.testing import LinkConditions, NetworkConditions
from zcluster.testing.sim import SimNetwork

UINT64_MAX = 2**64 - 1


def trio(config: NodeConfig | None = None) -> SimNetwork:
    """n0, n1, n2; n2 reads topic "t"; every node handles "h"."""
    net = cluster(3, 1, config)
    for node in net.live():
        node.handlers["h"] = lambda sender, payload: None
    net.subscribe("n2", "t")
    net.subscribe("n1", "t")
    net.run_for(2.0)
    return net


def slow_link(source: int, destination: int, latency: float = 0.5) -> NetworkConditions:
    return NetworkConditions(latency=0.001, links={(source, destination): LinkConditions(latency)})


def bodies(net: SimNetwork, node_id: str) -> list[bytes]:
    return [payload for _, _, payload in net.nodes[node_id].delivered]


def test_a_publication_waits_for_the_one_its_publisher_had_received() -> None:
    """n0 publishes m1; n1 receives it, then publishes m2; n2 hears n0 slowly: it still
    gets m1 before m2."""
    net = trio()
    net.set_conditions(slow_link(0, 2))
    net.publish("n0", "t", b"m1", G.CAUSAL)
    assert net.run_until(lambda: b"m1" in bodies(net, "n1"), 1)
    net.publish("n1", "t", b"m2", G.CAUSAL)
    net.run_for(0.2)
    assert b"m2" not in bodies(net, "n2"), "m2 must wait for m1"
    assert net.nodes["n2"].core.counters["causal_held"] == 1
    assert net.run_until(lambda: b"m2" in bodies(net, "n2"), 2)
    assert bodies(net, "n2") == [b"m1", b"m2"]


def test_a_direct_message_waits_for_a_publication_and_the_other_way() -> None:
    net = trio()
    net.set_conditions(slow_link(0, 2))
    net.publish("n0", "t", b"p1", G.CAUSAL)
    assert net.run_until(lambda: b"p1" in bodies(net, "n1"), 1)
    net.send("n1", "n2", "h", b"d2", G.CAUSAL)  # depends on p1, which n2 reads
    net.send("n0", "n2", "h", b"d3", G.CAUSAL)  # after p1 at n0: waits for it too
    assert net.run_until(lambda: len(bodies(net, "n2")) == 3, 3)
    delivered = bodies(net, "n2")
    assert delivered.index(b"p1") < delivered.index(b"d2")
    assert delivered.index(b"p1") < delivered.index(b"d3")


def test_causality_carries_through_a_node_that_is_not_addressed() -> None:
    """n0 -> n2 (slow) m1; n0 -> n1 m2; n1 -> n2 m3: m3 waits for m1, which n1 never
    saw (n1 learned of it from m2's stamp)."""
    net = trio()
    net.set_conditions(slow_link(0, 2))
    net.send("n0", "n2", "h", b"m1", G.CAUSAL)
    net.send("n0", "n1", "h", b"m2", G.CAUSAL)
    assert net.run_until(lambda: b"m2" in bodies(net, "n1"), 1)
    number = net.send("n1", "n2", "h", b"m3", G.CAUSAL)
    assert net.run_until(lambda: len(bodies(net, "n2")) == 2, 3)
    assert bodies(net, "n2") == [b"m1", b"m3"]
    assert net.run_until(lambda: number in net.nodes["n1"].acks, 2)
    assert net.nodes["n1"].acks[number][0] is AckStatus.DELIVERED


def test_a_predecessor_whose_sender_is_removed_is_not_waited_for() -> None:
    net = trio(NodeConfig(down_member_expiry_s=5.0))
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2)]))
    net.send("n0", "n2", "h", b"never", G.CAUSAL)
    net.send("n0", "n1", "h", b"m2", G.CAUSAL)
    assert net.run_until(lambda: b"m2" in bodies(net, "n1"), 1)
    net.send("n1", "n2", "h", b"m3", G.CAUSAL)
    net.run_for(0.5)
    assert bodies(net, "n2") == [], "m3 waits while n0 may still send"
    net.crash("n0")  # down, then removed: what it did not deliver never comes
    net.run_for(2.0)
    assert bodies(net, "n2") == [], "a member that is down may come back: still waited for"
    assert net.run_until(lambda: bodies(net, "n2") == [b"m3"], 15)
    assert net.nodes["n2"].core.counters["causal_released_unmet"] == 0


def test_a_message_waits_at_most_causal_hold_max_s_and_the_gap_is_reported() -> None:
    net = trio(NodeConfig(causal_hold_max_s=1.0))
    gaps: list[fx.CausalGap] = []
    net.nodes["n2"].appliers[fx.CausalGap] = gaps.append
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2)]))
    net.send("n0", "n2", "h", b"blocked", G.CAUSAL, ttl_s=60)
    net.send("n0", "n1", "h", b"m2", G.CAUSAL)
    assert net.run_until(lambda: b"m2" in bodies(net, "n1"), 1)
    net.send("n1", "n2", "h", b"m3", G.CAUSAL)
    net.run_for(0.5)
    assert bodies(net, "n2") == []
    assert net.run_until(lambda: bodies(net, "n2") == [b"m3"], 2)
    assert net.nodes["n2"].core.counters["causal_released_unmet"] == 1
    assert len(gaps) == 1 and gaps[0].missing[0][:3] == ("n0", DIRECT_STREAM, "n2")


def test_a_full_hold_back_delivers_the_one_waiting_longest() -> None:
    net = trio(NodeConfig(causal_holdback_max_count=2))
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2)]))
    net.send("n0", "n2", "h", b"blocked", G.CAUSAL)
    net.send("n0", "n1", "h", b"m2", G.CAUSAL)
    assert net.run_until(lambda: b"m2" in bodies(net, "n1"), 1)
    for body in (b"a", b"b", b"c"):
        net.send("n1", "n2", "h", body, G.CAUSAL)
        net.run_for(0.05)
    assert bodies(net, "n2") == [b"a"]
    assert net.nodes["n2"].core.counters["causal_released_full"] == 1
    assert len(net.nodes["n2"].core.causal) == 2


def test_an_expired_predecessor_is_skipped_at_once() -> None:
    net = trio()
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2)]))
    number = net.send("n0", "n2", "h", b"expires", G.CAUSAL, ttl_s=0.5)
    net.send("n0", "n1", "h", b"m2", G.CAUSAL)
    assert net.run_until(lambda: b"m2" in bodies(net, "n1"), 1)
    net.send("n1", "n2", "h", b"m3", G.CAUSAL)
    net.run_for(0.3)
    assert bodies(net, "n2") == []
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 2)
    net.set_conditions(NetworkConditions(latency=0.001))
    net.send("n0", "n2", "h", b"after", G.CAUSAL)  # carries the new low: m1 is settled
    assert net.run_until(lambda: len(bodies(net, "n2")) == 2, 3)
    assert sorted(bodies(net, "n2")) == [b"after", b"m3"]  # concurrent: either order


def test_a_malformed_stamp_fails_the_send_and_is_counted() -> None:
    net = trio()
    number = net.send("n0", "n2", "h", b"\xc1 not msgpack", G.AT_LEAST_ONCE)
    core = net.nodes["n0"].core
    # a peer that stamps badly: the core of n0 is bypassed with a raw CAUSAL payload
    core.causal.stamp = lambda body: body  # type: ignore[method-assign]
    bad = net.send("n0", "n2", "h", b"\xc1 garbage", G.CAUSAL)
    assert net.run_until(lambda: bad in net.nodes["n0"].acks, 2)
    status, reason = net.nodes["n0"].acks[bad]
    assert status is AckStatus.FAILED and "malformed CAUSAL payload" in reason
    assert net.nodes["n2"].core.counters["causal_malformed"] == 1
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 2)


def test_clocks_forget_a_member_that_left() -> None:
    net = trio()
    net.send("n0", "n1", "h", b"x", G.CAUSAL)
    net.publish("n0", "t", b"y", G.CAUSAL)
    assert net.run_until(lambda: b"y" in bodies(net, "n2") and b"x" in bodies(net, "n1"), 2)
    past = net.nodes["n1"].core.causal.past
    assert any(d[0] == "n0" for d in past.dependencies())
    net.stop("n0")
    assert net.run_until(lambda: not any(d[0] == "n0" for d in past.dependencies()), 10)


def test_causal_past_is_bounded_and_forgets_by_age() -> None:
    past = CausalPast(max_count=3)
    for i in range(5):
        past.learn((f"n{i}", TOPIC_STREAM, "t", 1, 0, 1), float(i))
    assert [d[0] for d in past.dependencies()] == ["n2", "n3", "n4"] and past.dropped == 2
    past.learn(("n2", TOPIC_STREAM, "t", 1, 0, 1), 10.0)  # not newer: keeps its age
    past.learn(("n3", TOPIC_STREAM, "t", 1, 0, 2), 10.0)  # newer: learned now
    assert past.expire(learned_before=5.0) == 2
    assert past.dependencies() == [("n3", TOPIC_STREAM, "t", 1, 0, 2)]


def test_a_restarted_origin_drops_only_its_earlier_lives() -> None:
    past = CausalPast(max_count=10)
    past.learn(("a", DIRECT_STREAM, "b", 1, 1, 5), 0.0)
    past.learn(("b", DIRECT_STREAM, "a", 1, 1, 5), 0.0)
    past.learn(("a", TOPIC_STREAM, "t", 2, 0, 1), 0.0)
    past.forget("a", before_incarnation=2)
    assert past.dependencies() == [
        ("b", DIRECT_STREAM, "a", 1, 1, 5),
        ("a", TOPIC_STREAM, "t", 2, 0, 1),
    ]
    past.forget("a")
    assert past.dependencies() == []


dependency = st.one_of(
    st.tuples(
        st.sampled_from(["a", "n1", "é"]),
        st.just(DIRECT_STREAM),
        st.sampled_from(["b", "node-2"]),
        st.integers(0, UINT64_MAX),
        st.integers(0, UINT64_MAX),
        st.integers(1, UINT64_MAX),
    ),
    st.tuples(
        st.just("a"),
        st.just(TOPIC_STREAM),
        st.sampled_from(["t", "orders/eu", "x" * 1024]),
        st.integers(0, UINT64_MAX),
        st.just(0),
        st.integers(1, UINT64_MAX),
    ),
)


@given(st.lists(dependency, max_size=20), st.binary(max_size=64))
def test_a_stamp_reads_back_as_written(dependencies: list, body: bytes) -> None:  # type: ignore[type-arg]
    assert read_stamp(stamp(dependencies, body), 20) == (tuple(dependencies), body)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"\xc1",
        msgpack.packb({"a": 1}),
        msgpack.packb([["a", 2, "b", 1, 1, 1]]),  # unknown stream kind
        msgpack.packb([["a", 0, "b", 1, 1, 0]]),  # seq 0
        msgpack.packb([["a", 0, "b", -1, 1, 1]]),
        msgpack.packb([["a", 0, "b", 1, 1, 1.0]]),
        msgpack.packb([["a", 0, "b", 1, 1]]),
        msgpack.packb([["a b", 0, "b", 1, 1, 1]]),  # not a node id
        msgpack.packb([["a", True, "b", 1, 1, 1]]),
        msgpack.packb([["a", 1, "", 1, 0, 1]]),  # not a topic
        msgpack.packb([["a", 0, "b", 1, 1, 1]] * 4),  # more than allowed
        msgpack.packb([[b"a", 0, "b", 1, 1, 1]]),
    ],
)
def test_a_malformed_stamp_is_refused(raw: bytes) -> None:
    with pytest.raises(WireError):
        read_stamp(raw + b"body", 3)
