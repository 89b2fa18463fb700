"""Shared test helpers: waiting on conditions with a deadline, free ports, simulated clusters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from zcluster import DeliveryGuarantee, MemberStatus, NodeConfig
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.messages import Capabilities
from zcluster.testing import LinkConditions, NetworkConditions
from zcluster.testing.sim import SimNetwork

POLL_INTERVAL_S = 0.02


def wait_until(
    predicate: Callable[[], bool], timeout: float, interval: float = POLL_INTERVAL_S
) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns the outcome."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)


def all_up(nodes: Sequence[Any]) -> bool:
    """Each node (Node or AsyncNode) sees exactly these nodes, all up, with equal digests."""
    ids = {n.node_id for n in nodes}
    for node in nodes:
        view = {m.node_id: m.status for m in node.members()}
        if set(view) != ids or any(s is not MemberStatus.UP for s in view.values()):
            return False
    return len({n.view_digest() for n in nodes}) == 1


def sim_cluster(
    size: int, seed: int, config: NodeConfig, capabilities: Capabilities = SUPPORTED, **network: Any
) -> SimNetwork:
    """``size`` simulated nodes n0..n{size-1} joined through n0, all up with equal views
    (nodes of an earlier revision if ``capabilities`` says so: see SimNetwork.add_node)."""
    net = SimNetwork(seed, config=config, **network)
    first = net.add_node("n0", capabilities=capabilities)
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address], capabilities=capabilities)

    def joined() -> bool:
        return net.views_agree() and all(
            len(n.members()) == size and all(m.status is MemberStatus.UP for m in n.members())
            for n in net.live()
        )

    assert net.run_until(joined, 10), f"cluster did not form; seed={seed}"
    return net


def exactly_once_copy_after_forgetting(
    seed: int, transit_s: float
) -> tuple[SimNetwork, list[bytes], int]:
    """The edge of the exactly-once promise: ttl = dedup_window_s = 1 s.

    n0 sends n1 one EXACTLY_ONCE message; n1 runs it, its acknowledgements and
    n0's copies are lost, and a message from n2 makes n1 forget n0's stream.
    From 0.86 s on, n0's last copies reach n1 after ``transit_s`` (acknowledgements
    still lost). Returns the network, what n1's handler ran, the message number.
    """
    config = NodeConfig(
        inbound_streams_max_count=1,
        retry_initial_s=0.05,
        retry_max_s=0.05,
        message_ttl_s=1.0,
        dedup_window_s=1.0,
    )
    net = sim_cluster(3, seed, config, jitter_s=0.0)
    runs: list[bytes] = []
    net.nodes["n1"].handlers["h"] = lambda sender, payload: runs.append(payload)
    net.nodes["n1"].handlers["ok"] = lambda sender, payload: None
    net.block("n1", "n0")  # acknowledgements are lost: n0 keeps resending until the ttl
    number = net.send("n0", "n1", "h", b"x", DeliveryGuarantee.EXACTLY_ONCE, ttl_s=1.0)
    net.run_for(0.01)
    assert runs == [b"x"]
    net.block("n0", "n1")  # the resent copies are lost too
    net.send("n2", "n1", "ok", b"y", DeliveryGuarantee.AT_LEAST_ONCE)  # n1 forgets the stream
    net.run_for(0.85)
    assert net.nodes["n1"].stats().get("reliable_streams_evicted") == 1
    slow = {(net.index_of["n0"], net.index_of["n1"]): LinkConditions(latency=transit_s)}
    net.set_conditions(NetworkConditions(latency=0.001, links=slow))
    net.block("n1", "n0")
    return net, runs, number
