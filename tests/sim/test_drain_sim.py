"""A graceful leave delivers what the node accepted first (core/departure.py), on the
simulated network: subscribers confirm they hold every publication (FLUSH, FLUSHED),
guaranteed sends are acknowledged, and what cannot be is reported."""

from __future__ import annotations

import pytest

from zcluster import AckStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.core import effects as fx

from .test_delivery_sim import cluster

SEEDS = range(5)


def drained(net_node: object) -> fx.Drained:
    report = net_node.app.drained  # type: ignore[attr-defined]
    assert report is not None, "the leave never reported what it delivered"
    return report


@pytest.mark.parametrize("seed", SEEDS)
def test_a_leaving_publisher_waits_until_its_subscribers_hold_every_publication(
    seed: int,
) -> None:
    net = cluster(3, seed)
    for sub in ("n1", "n2"):
        net.subscribe(sub, "t")
    net.run_for(0.5)
    net.loss_rate = 0.3  # the tail too: only the leave's FLUSH tells what is missing
    for i in range(1, 201):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.stop("n0")
    for sub in ("n1", "n2"):
        node = net.nodes[sub]
        got = [int(p) for _, t, p in node.delivered if t == "t"]
        assert sorted(set(got)) == list(range(1, 201)), f"{sub} missed some; seed={seed}"
        assert node.losses == [], f"seed={seed}"
    report = drained(net.nodes["n0"])
    assert sorted(report.subscribers_confirmed) == ["n1", "n2"], f"seed={seed}"
    assert report.subscribers_unconfirmed == ()


def test_a_subscriber_that_cannot_answer_is_reported_not_waited_for_forever() -> None:
    config = NodeConfig(drain_timeout_s=1.0)
    net = cluster(2, seed=11, config=config)
    net.subscribe("n1", "t")
    net.run_for(0.5)
    net.block("n1", "n0")  # n1 hears n0, but neither FLUSHED nor FETCH reaches it
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)
    began = net.now
    net.stop("n0")
    report = drained(net.nodes["n0"])
    assert report.subscribers_unconfirmed == ("n1",)
    assert report.at_stake == (("n1", (("t", 1),)),)  # it may lack number 1 of "t"
    assert report.subscribers_confirmed == ()
    assert report.waited_s <= config.drain_timeout_s + config.tick_interval_s
    assert net.now - began <= config.graceful_stop_max_s


@pytest.mark.parametrize("seed", SEEDS)
def test_a_leaving_sender_waits_for_its_guaranteed_sends_to_be_acknowledged(seed: int) -> None:
    net = cluster(2, seed)
    runs: list[bytes] = []
    net.nodes["n1"].handlers["h"] = lambda sender, payload: runs.append(payload)
    net.loss_rate = 0.3
    for i in range(20):
        net.send("n0", "n1", "h", str(i).encode(), G.AT_LEAST_ONCE)
    net.stop("n0")
    acks = net.nodes["n0"].acks
    assert len(acks) == 20, f"seed={seed}"
    assert {status for status, _ in acks.values()} == {AckStatus.DELIVERED}, f"seed={seed}"
    assert {int(p) for p in runs} == set(range(20))
    assert drained(net.nodes["n0"]).sends_unacknowledged == 0


def test_a_leave_with_nothing_to_deliver_is_not_delayed() -> None:
    net = cluster(2, seed=3)
    net.subscribe("n1", "t")  # a subscriber that has nothing of ours to confirm is asked
    net.run_for(0.5)
    began = net.now
    net.stop("n0")
    config = net.config
    # a FLUSH and its answer, then LEAVING and, a heartbeat later, LEFT
    assert net.now - began <= config.heartbeat_interval_s + 3 * config.tick_interval_s
    assert drained(net.nodes["n0"]).subscribers_confirmed == ("n1",)


def test_two_nodes_stopping_together_do_not_wait_for_each_other() -> None:
    """Each has a guaranteed send to the other in flight: the one that is leaving refuses
    it at once (FAILED, with the reason), so neither waits out its drain time."""
    config = NodeConfig(drain_timeout_s=5.0)
    net = cluster(2, seed=21, config=config)
    for node in ("n0", "n1"):
        net.nodes[node].handlers["h"] = lambda sender, payload: None
    net.run_for(0.2)
    first = net.send("n0", "n1", "h", b"a", G.AT_LEAST_ONCE)
    second = net.send("n1", "n0", "h", b"b", G.AT_LEAST_ONCE)
    net.begin_stop("n0")
    net.begin_stop("n1")
    began = net.now
    assert net.run_until(lambda: all(net.nodes[n].core.has_left for n in ("n0", "n1")), 5.0)
    assert net.now - began < 1.0, f"{net.now - began:.2f}s"
    outcomes = [net.nodes["n0"].acks[first], net.nodes["n1"].acks[second]]
    for status, reason in outcomes:
        assert status is AckStatus.FAILED
        assert reason == "receiver was leaving the cluster; not handled"
