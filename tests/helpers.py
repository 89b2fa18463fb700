"""Shared test helpers: waiting on conditions with a deadline, free ports, simulated clusters."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from zcluster import MemberStatus, NodeConfig
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


def sim_cluster(size: int, seed: int, config: NodeConfig, **network: Any) -> SimNetwork:
    """``size`` simulated nodes n0..n{size-1} joined through n0, all up with equal views."""
    net = SimNetwork(seed, config=config, **network)
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])

    def joined() -> bool:
        return net.views_agree() and all(
            len(n.members()) == size and all(m.status is MemberStatus.UP for m in n.members())
            for n in net.live()
        )

    assert net.run_until(joined, 10), f"cluster did not form; seed={seed}"
    return net
