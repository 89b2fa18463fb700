"""CAUSAL delivery on the deterministic simulated network: chains of direct messages
and publications across four nodes, with random delay and reordering, checked by
``zcluster.testing.CausalLog``; the same workload without CAUSAL shows violations (so
the check can fail). A failure names the seed that reproduces it."""

from __future__ import annotations

import random

import pytest

from tests.sim.test_delivery_sim import cluster
from zcluster import DeliveryGuarantee as G
from zcluster import NodeConfig
from zcluster.testing import CausalLog, NetworkConditions
from zcluster.testing.sim import SimNetwork

NODES = ("n0", "n1", "n2", "n3")
#: who reads each topic (n3 reads none: it sees only what is sent to it)
READERS = {"a": ("n0", "n1", "n2"), "b": ("n1", "n3")}


def disorderly(rng: random.Random) -> NetworkConditions:
    return NetworkConditions(
        latency=0.001,
        jitter=0.03,
        packet_loss_rate=rng.choice([0.0, 0.05]),
        duplicate_rate=rng.choice([0.0, 0.05]),
        reorder_rate=0.3,
        reorder_delay=0.08,
    )


def run_workload(net: SimNetwork, log: CausalLog, seed: int, count: int, guarantee: G) -> int:
    """``count`` messages, each from a node that has just been given what reached it:
    a direct send to another node, or a publication on a topic; returns how many
    deliveries they make."""
    rng = random.Random(seed)
    seen = {node: 0 for node in NODES}
    expected = 0

    def take_deliveries() -> None:
        for node_id in NODES:
            node = net.nodes[node_id]
            for _, _, payload in node.delivered[seen[node_id] :]:
                log.delivered(node_id, payload.decode())
            seen[node_id] = len(node.delivered)

    for i in range(count):
        sender = rng.choice(NODES)
        mid = f"{sender}-{i}"
        if rng.random() < 0.5:
            target = rng.choice([n for n in NODES if n != sender])
            log.sent(sender, mid, (target,))
            net.send(sender, target, "h", mid.encode(), guarantee)
            expected += 1
        else:
            topic = rng.choice(sorted(READERS))
            readers = [n for n in READERS[topic] if n != sender]
            log.sent(sender, mid, readers)
            net.publish(sender, topic, mid.encode(), guarantee)
            expected += len(readers)
        net.run_for(rng.choice([0.0, 0.002, 0.01]))
        take_deliveries()
    net.set_conditions(NetworkConditions(latency=0.001))

    def all_delivered() -> bool:
        take_deliveries()
        return log.delivered_count() >= expected

    assert net.run_until(all_delivered, 60), f"not everything delivered; seed={seed}"
    return expected


def causal_run(seed: int, count: int, guarantee: G = G.CAUSAL) -> CausalLog:
    net = cluster(len(NODES), seed, NodeConfig())
    for node_id in NODES:
        net.nodes[node_id].handlers["h"] = lambda sender, payload: None
    for topic, readers in READERS.items():
        for node_id in readers:
            net.subscribe(node_id, topic)
    net.run_for(3.0)  # subscriptions settle
    net.set_conditions(disorderly(random.Random(seed)))
    log = CausalLog(seed)
    run_workload(net, log, seed, count, guarantee)
    return log


@pytest.mark.parametrize("seed", range(4))
def test_causal_delivery_keeps_causal_order(seed: int) -> None:
    causal_run(seed, 5000).check()


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(4, 40))
def test_causal_delivery_keeps_causal_order_more_seeds(seed: int) -> None:
    causal_run(seed, 5000).check()


def test_without_causal_the_same_workload_breaks_causal_order() -> None:
    log = causal_run(0, 5000, G.AT_LEAST_ONCE)
    assert log.violations(), "the workload must be able to show a violation"
