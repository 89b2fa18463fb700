"""Membership at scale on the simulated network (capability ``swim``): convergence, crash
detection by every member, and what membership costs each member, counted in messages.

Rates are counted by the simulator (messages each node received), never timed on the wall
clock: ``benchmarks/bench_sim.py`` measures speed. Each failure message carries the seed.
"""

from __future__ import annotations

import pytest

from tests.helpers import sim_cluster
from zcluster import MemberStatus, NodeConfig
from zcluster.protocol.capabilities import FIELDS, SUPPORTED
from zcluster.testing.sim import SimNetwork, describe_views

CONFIG = NodeConfig()
#: crash to DOWN at every member, at the defaults (the issue's bound)
DETECTION_BOUND_S = 3.0
#: a member sends one PING per probe interval and answers, on average, one: it receives
#: about two messages per interval, whatever the size of the cluster
PROBE_MESSAGES_PER_S = 2 / CONFIG.probe_interval_s


def received(net: SimNetwork) -> dict[str, int]:
    return {n.node_id: n.core.counters["messages_received"] for n in net.live()}


def steady_rates(net: SimNetwork, seconds: float) -> list[float]:
    """Messages each live node receives per second over the next ``seconds``."""
    before = received(net)
    net.run_for(seconds)
    after = received(net)
    return [(after[n] - before[n]) / seconds for n in before]


def detection_time(net: SimNetwork, victim: str, seed: int) -> float:
    net.crash(victim)
    crashed_at = net.now
    found = net.run_until(lambda: net.all_see(victim, MemberStatus.DOWN), 10)
    assert found, f"seed={seed}: {victim} not down everywhere; {describe_views(net)}"
    return net.now - crashed_at


def test_two_hundred_members_converge_detect_a_crash_and_stay_cheap() -> None:
    seed = 7
    net = sim_cluster(200, seed, CONFIG)  # joined through one seed, all at once
    assert net.now < 5.0, f"seed={seed}: converged only after {net.now:.1f} virtual s"
    net.run_for(5)  # every member has told every other which topics it reads
    rates = steady_rates(net, 5)
    mean = sum(rates) / len(rates)
    assert mean <= 1.2 * PROBE_MESSAGES_PER_S, f"seed={seed}: {mean:.1f} messages/s per node"
    assert max(rates) <= 2.5 * PROBE_MESSAGES_PER_S, f"seed={seed}: {max(rates):.1f}/s at most"
    assert all(n.stats().get("heartbeats_published", 0) == 0 for n in net.live())
    took = detection_time(net, "n117", seed)
    assert took <= DETECTION_BOUND_S, f"seed={seed}: down everywhere after {took:.2f}s"


def test_what_a_member_receives_does_not_grow_with_the_cluster() -> None:
    seed = 8
    means = []
    for size in (10, 40, 160):
        net = sim_cluster(size, seed, CONFIG)
        net.run_for(5)
        rates = steady_rates(net, 10)
        means.append(sum(rates) / len(rates))
    assert max(means) <= 1.15 * min(means), f"seed={seed}: messages/s per node {means}"


def test_crashes_are_found_by_everyone_within_the_bound() -> None:
    seed = 9
    net = sim_cluster(60, seed, CONFIG)
    net.run_for(3)
    times = [detection_time(net, f"n{i}", seed) for i in range(5, 60, 6)]
    assert max(times) <= DETECTION_BOUND_S, f"seed={seed}: {[round(t, 2) for t in times]}"
    # No false suspicion on the way: no running member ever had to refute one.
    refuted = {n.node_id: n.stats().get("suspicions_refuted", 0) for n in net.live()}
    assert not any(refuted.values()), f"seed={seed}: {refuted}"


def test_a_cluster_mixed_with_an_earlier_revision_heartbeats_until_it_is_gone() -> None:
    """Members of revision 1.1 rely on heartbeats and watch silence: while one is live every
    member heartbeats; once they are gone, nobody does, and everyone still finds crashes."""
    seed = 10
    net = SimNetwork(seed)
    first = net.add_node("n0")
    for i in range(1, 8):
        old = i in (3, 6)
        net.add_node(
            f"n{i}", seeds=[first.core.address], capabilities=(FIELDS,) if old else SUPPORTED
        )

    def everyone_up() -> bool:
        """Every running node sees every running node up, and views agree."""
        running = {n.node_id for n in net.live()}
        return net.views_agree() and all(
            all(n.view().get(other) is MemberStatus.UP for other in running) for n in net.live()
        )

    assert net.run_until(everyone_up, 10), f"seed={seed}: {describe_views(net)}"
    net.run_for(2)
    assert all(n.stats().get("heartbeats_published", 0) > 0 for n in net.live())
    # Everyone finds a crash, of either kind.
    assert detection_time(net, "n6", seed) <= CONFIG.failure_detection_bound_s + 1.0
    assert detection_time(net, "n5", seed) <= CONFIG.failure_detection_bound_s + 1.0
    net.stop("n3")  # the last of revision 1.1
    net.run_for(1)
    beats = {n.node_id: n.stats().get("heartbeats_published", 0) for n in net.live()}
    net.run_for(5)
    assert beats == {n.node_id: n.stats().get("heartbeats_published", 0) for n in net.live()}
    assert detection_time(net, "n1", seed) <= DETECTION_BOUND_S
    assert net.run_until(everyone_up, 5), f"seed={seed}: {describe_views(net)}"


@pytest.mark.slow
@pytest.mark.timeout(3600)
def test_a_thousand_members_converge_and_find_a_crash() -> None:
    seed = 11
    net = sim_cluster(1000, seed, CONFIG)
    assert net.now < 10.0, f"seed={seed}: converged only after {net.now:.1f} virtual s"
    net.run_for(10)
    rates = steady_rates(net, 5)
    mean = sum(rates) / len(rates)
    assert mean <= 1.2 * PROBE_MESSAGES_PER_S, f"seed={seed}: {mean:.1f} messages/s per node"
    took = detection_time(net, "n500", seed)
    assert took <= DETECTION_BOUND_S, f"seed={seed}: down everywhere after {took:.2f}s"
