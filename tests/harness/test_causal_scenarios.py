"""CAUSAL delivery judged on real sockets: four nodes, random delay and reordering,
5,000 causally related messages (direct sends and publications, chains across nodes),
checked by ``zcluster.testing.CausalLog``. The same workload without CAUSAL shows
violations: the check can fail."""

from __future__ import annotations

import random
import time
from typing import Any

import pytest

from tests.helpers import wait_until
from zcluster import DeliveryGuarantee, Node
from zcluster.testing import CausalLog, ClusterTestHarness, NetworkConditions

G = DeliveryGuarantee
COUNT = 5_000
#: who reads each topic (n3 reads only "b", n0 only "a")
READERS = {"a": (0, 1, 2), "b": (1, 3)}
DISORDER = NetworkConditions(latency=0.001, jitter=0.02, reorder_rate=0.3, reorder_delay=0.05)


def causal_workload(harness: ClusterTestHarness, guarantee: DeliveryGuarantee) -> CausalLog:
    nodes: list[Node] = harness.nodes
    log = CausalLog(harness.seed)
    for node in nodes:
        me = node.node_id
        node.register("h", lambda message, sender, me=me: log.delivered(me, message))
    for topic, readers in READERS.items():
        for index in readers:
            me = nodes[index].node_id
            nodes[index].subscribe(topic, lambda _, message, __, me=me: log.delivered(me, message))

    def subscriptions_known() -> bool:
        return all(
            {nodes[i].node_id for i in readers if i != p} <= nodes[p].subscribers(topic)
            for topic, readers in READERS.items()
            for p in range(len(nodes))
        )

    assert wait_until(subscriptions_known, 15)
    harness.simulate_network_conditions(DISORDER)
    rng = random.Random(harness.seed)
    expected = 0
    for k in range(COUNT):
        index = rng.randrange(len(nodes))
        sender, mid = nodes[index], f"n{index}-{k}"
        if rng.random() < 0.5:
            target = rng.choice([n for n in nodes if n is not sender]).node_id
            log.sent(sender.node_id, mid, (target,))
            sender.send(target, "h", mid, guarantee=guarantee)
            expected += 1
        else:
            topic = rng.choice(sorted(READERS))
            readers = [nodes[i].node_id for i in READERS[topic] if i != index]
            log.sent(sender.node_id, mid, readers)
            sender.publish(topic, mid, guarantee=guarantee)
            expected += len(readers)
        if k % 8 == 0:
            time.sleep(0.002)  # deliveries in between: later sends depend on them
    assert wait_until(lambda: log.delivered_count() >= expected, 90), (
        f"{log.delivered_count()} of {expected} delivered; seed={harness.seed}"
    )
    return log


@pytest.mark.timeout(180)
def test_five_thousand_causal_messages_keep_causal_order(zcluster_harness: Any) -> None:
    harness: ClusterTestHarness = zcluster_harness(4, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    log = causal_workload(harness, G.CAUSAL)
    log.check()
    stats = [node.stats() for node in harness.nodes]
    assert sum(s.get("causal_held", 0) for s in stats) > 0, "the disorder held nothing back"
    assert all(s.get("causal_released_unmet", 0) == 0 for s in stats)


@pytest.mark.timeout(180)
def test_the_same_workload_without_causal_breaks_causal_order(zcluster_harness: Any) -> None:
    harness: ClusterTestHarness = zcluster_harness(4, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    log = causal_workload(harness, G.AT_LEAST_ONCE)
    assert log.violations(), f"no violation to detect; seed={harness.seed}"
