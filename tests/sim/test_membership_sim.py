"""Membership and failure detection on the deterministic simulated network.

Each failure message carries the seed that reproduces the run.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from zcluster import MemberStatus, NodeConfig
from zcluster.testing import ClusterTestHarness, NetworkConditions
from zcluster.testing.sim import SimNetwork, describe_views


def cluster(size: int, seed: int, **net_options: object) -> SimNetwork:
    net = SimNetwork(seed, **net_options)  # type: ignore[arg-type]
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])
    return net


def all_up(net: SimNetwork, size: int) -> bool:
    for node in net.live():
        members = node.core.members()
        if len(members) != size or any(m.status is not MemberStatus.UP for m in members):
            return False
    return net.views_agree()


def converged(net: SimNetwork) -> bool:
    """Every live node sees every live node up, and all views are equal."""
    alive = {n.node_id for n in net.live()}
    for node in net.live():
        view = node.view()
        if any(view.get(other) is not MemberStatus.UP for other in alive):
            return False
    return net.views_agree()


def test_killed_node_is_down_everywhere_within_the_detection_bound() -> None:
    seed = 11
    config = NodeConfig()
    net = cluster(5, seed, config=config)
    assert net.run_until(lambda: all_up(net, 5), 5)
    net.crash("n2")
    crashed_at = net.now
    assert not net.run_until(
        lambda: net.all_see("n2", MemberStatus.DOWN), config.heartbeat_timeout_s
    )
    assert net.run_until(
        lambda: net.all_see("n2", MemberStatus.DOWN), config.failure_detection_bound_s
    ), f"seed={seed} views={describe_views(net)}"
    assert net.now - crashed_at <= 3.0


def test_quiet_cluster_has_no_false_suspicions_over_ten_minutes() -> None:
    seed = 3
    net = cluster(8, seed, jitter_s=0.005)
    assert net.run_until(lambda: all_up(net, 8), 5)
    net.run_for(600)
    for node in net.live():
        assert node.core.counters["members_suspect"] == 0, f"seed={seed} {node.node_id}"
        assert node.core.counters["members_down"] == 0, f"seed={seed} {node.node_id}"
    assert all_up(net, 8)


def test_ten_percent_loss_causes_no_false_downs() -> None:
    seed = 5
    net = cluster(5, seed, loss_rate=0.10)
    assert net.run_until(lambda: all_up(net, 5), 10), f"seed={seed}"
    net.run_for(120)
    downs = sum(n.core.counters["members_down"] for n in net.live())
    assert downs == 0, f"seed={seed}: {downs} false downs"
    assert net.run_until(lambda: all_up(net, 5), 5), f"seed={seed} views={describe_views(net)}"


def test_partition_of_two_and_three_heals_into_one_view() -> None:
    seed = 21
    net = cluster(5, seed)
    assert net.run_until(lambda: all_up(net, 5), 5)
    left, right = ["n0", "n1"], ["n2", "n3", "n4"]
    net.partition(left, right)

    def split() -> bool:
        return all(net.all_see(x, MemberStatus.DOWN) is False for x in left) and all(
            net.nodes[a].core.member(b).status is MemberStatus.DOWN  # type: ignore[union-attr]
            for a in left
            for b in right
        )

    assert net.run_until(split, 10), f"seed={seed} views={describe_views(net)}"
    net.heal()
    assert net.run_until(lambda: all_up(net, 5), 10), f"seed={seed} views={describe_views(net)}"


def test_one_way_link_loss_is_bridged_by_indirect_probes() -> None:
    seed = 8
    net = cluster(4, seed)
    assert net.run_until(lambda: all_up(net, 4), 5)
    net.block("n1", "n2")  # n2 no longer hears n1 directly; others still do
    net.run_for(60)
    assert net.nodes["n2"].core.counters["probes_sent"] > 0, "n2 never noticed the silence"
    assert net.nodes["n1"].core.member("n1").status is MemberStatus.UP  # type: ignore[union-attr]
    assert sum(n.core.counters["members_down"] for n in net.live()) == 0, f"seed={seed}"


def test_restarted_node_rejoins_without_a_storm() -> None:
    seed = 13
    net = cluster(5, seed)
    assert net.run_until(lambda: all_up(net, 5), 5)
    old = net.nodes["n3"].core.incarnation
    net.crash("n3")
    net.run_for(0.3)  # restart before anyone notices the crash
    net.add_node("n3", seeds=["sim1:7000"])
    assert net.run_until(lambda: all_up(net, 5), 5), f"seed={seed} views={describe_views(net)}"
    for node in net.live():
        member = node.core.member("n3")
        assert member is not None and member.incarnation > old
    net.run_for(10)
    assert sum(n.core.counters["members_down"] for n in net.live()) == 0
    assert all_up(net, 5)


def test_restart_after_being_declared_down_rejoins() -> None:
    seed = 14
    net = cluster(4, seed)
    assert net.run_until(lambda: all_up(net, 4), 5)
    net.crash("n1")
    assert net.run_until(lambda: net.all_see("n1", MemberStatus.DOWN), 5)
    net.add_node("n1", seeds=["sim1:7000"])
    assert net.run_until(lambda: all_up(net, 4), 5), f"seed={seed} views={describe_views(net)}"


def test_graceful_leave_then_removal_then_purge() -> None:
    seed = 4
    config = NodeConfig(left_member_expiry_s=5, removed_tombstone_s=5)
    net = cluster(4, seed, config=config)
    assert net.run_until(lambda: all_up(net, 4), 5)
    net.stop("n2")
    assert net.run_until(lambda: net.all_see("n2", MemberStatus.LEFT), 1), describe_views(net)
    assert net.run_until(lambda: net.all_see("n2", MemberStatus.REMOVED), 10)
    assert net.run_until(lambda: all(n.core.member("n2") is None for n in net.live()), 10), (
        describe_views(net)
    )
    assert sum(n.core.counters["members_down"] for n in net.live()) == 0


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    def run(seed: int) -> str:
        net = cluster(6, seed, loss_rate=0.05)
        net.run_for(3)
        net.crash("n4")
        net.run_for(5)
        return net.trace_digest()

    assert run(42) == run(42)
    assert run(42) != run(43)


def run_schedule(seed: int) -> None:
    """A random fault schedule through the public harness; then the cluster must converge."""
    rng = random.Random(seed)
    size = rng.randint(3, 8)
    harness = ClusterTestHarness.create_test_cluster(size, backend="sim", seed=seed)
    loss = rng.choice([0.0, 0.02, 0.1])
    base = NetworkConditions(packet_loss_rate=loss, jitter=0.003, duplicate_rate=loss / 2)
    harness.simulate_network_conditions(base)
    harness.sim.run_for(2)
    for _ in range(rng.randint(1, 5)):
        action = rng.choice(["partition", "one-way", "crash", "stop", "restart", "heal", "wait"])
        failed = [i for i in range(size) if harness.nodes[i] not in harness.live_nodes]
        running = [i for i in range(size) if i not in failed]
        if action == "partition":
            cut = rng.randint(1, size - 1)
            order = rng.sample(range(size), size)
            harness.simulate_network_conditions(
                dataclasses.replace(base, partition_groups=[order[:cut], order[cut:]])
            )
        elif action == "one-way":
            a, b = rng.sample(range(size), 2)
            harness.simulate_network_conditions(dataclasses.replace(base, blocked_links=[(a, b)]))
        elif action in ("crash", "stop") and len(running) > 1:
            harness.simulate_node_failure(rng.choice(running), mode=action)  # type: ignore[arg-type]
        elif action == "restart" and failed:
            harness.restart_node(rng.choice(failed))
        elif action == "heal":
            harness.simulate_network_conditions(base)
        harness.sim.run_for(rng.uniform(0.5, 6))
    harness.heal()
    ok = harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=30)
    views = describe_views(harness.sim)
    assert ok, f"no convergence: reproduce with run_schedule({seed}); views={views}"


# 2785: a restarting node's only seed admitted it and crashed before answering.
@pytest.mark.parametrize("seed", [*range(60), 2785])
def test_seeded_fault_schedules_converge(seed: int) -> None:
    run_schedule(seed)


@pytest.mark.slow
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("seed", range(1000, 4000))
def test_long_sweep_of_fault_schedules(seed: int) -> None:
    run_schedule(seed)


def test_partition_longer_than_down_expiry_still_heals_through_seeds() -> None:
    seed = 31
    config = NodeConfig(down_member_expiry_s=20, removed_tombstone_s=10, seed_contact_interval_s=5)
    net = cluster(4, seed, config=config)
    assert net.run_until(lambda: all_up(net, 4), 5)
    net.partition(["n0", "n1"], ["n2", "n3"])
    net.run_for(60)  # both sides have removed and purged the other
    assert net.nodes["n0"].core.member("n2") is None, describe_views(net)
    net.heal()
    assert net.run_until(lambda: all_up(net, 4), 30), f"seed={seed} views={describe_views(net)}"


def test_purged_tombstones_are_not_resurrected_by_stale_gossip() -> None:
    seed = 32
    config = NodeConfig(left_member_expiry_s=2, removed_tombstone_s=2)
    net = cluster(4, seed, config=config)
    assert net.run_until(lambda: all_up(net, 4), 5)
    net.partition(["n0", "n1", "n2"], ["n3"])
    net.run_for(3)
    net.stop("n2")
    net.run_for(10)  # n0 and n1 purge n2; isolated n3 still remembers it as down
    assert net.nodes["n0"].core.member("n2") is None
    net.heal()
    assert net.run_until(lambda: converged(net), 20), describe_views(net)
    net.run_for(5)
    assert net.nodes["n0"].core.member("n2") is None, describe_views(net)
    assert net.nodes["n1"].core.member("n2") is None, describe_views(net)


def test_a_new_member_reusing_a_dead_members_address_stays_subscribed() -> None:
    seed = 33
    net = cluster(3, seed)
    assert net.run_until(lambda: all_up(net, 3), 5)
    pub = net.nodes["n2"].core.me.pub_address
    net.crash("n2")
    net.add_node("m9", seeds=["sim1:7000"], address_of="n2")  # before n2 is declared down
    assert net.run_until(lambda: net.all_see("n2", MemberStatus.DOWN), 5)
    assert net.run_until(lambda: net.all_see("m9", MemberStatus.UP), 5)
    indirect_before = net.nodes["n0"].core.counters["probes_indirect"]
    net.run_for(5)
    assert pub in net.nodes["n0"].subscribed_to, "n0 stopped reading the newcomer's PUB"
    # Every probe was answered directly: m9 is reachable at the address it reuses.
    assert net.nodes["n0"].core.counters["probes_indirect"] == indirect_before, "m9 unheard"


def test_node_whose_seeds_are_all_itself_forms_the_cluster() -> None:
    net = SimNetwork(34)
    first = net.add_node("n0", seeds=["sim1:7000"])  # its own address
    others = [net.add_node(f"n{i}", seeds=["sim1:7000"]) for i in (1, 2)]
    assert first.core.address == "sim1:7000"
    assert net.run_until(lambda: all_up(net, 3), 5), describe_views(net)
    assert others


@pytest.mark.parametrize("seed", range(5))
def test_a_restarted_seedless_first_node_is_back_in_the_one_cluster_at_once(seed: int) -> None:
    """The first node, which has no seeds, restarts at its address before anyone noticed
    it crashed: it knows nobody, so only its peers' probes can find it; the first that
    reaches it brings the two together (FailureDetection._restarted)."""
    net = cluster(3, seed)
    assert net.run_until(lambda: all_up(net, 3), 30), f"seed={seed}"
    net.crash("n0")
    net.run_for(0.1)
    again = net.add_node("n0")  # same address, no seeds: it forms a cluster of its own
    began = net.now
    assert net.run_until(
        lambda: (
            all_up(net, 3)
            and all(n.member("n0").incarnation == again.core.incarnation for n in net.live())
        ),
        5,
    ), f"seed={seed}"
    # within the failure-detection time (a probe round of the others)
    assert net.now - began < 2.0, f"seed={seed}: {net.now - began:.2f}s"


def test_member_tags_reach_every_member_and_pick_targets() -> None:
    net = SimNetwork(31)
    first = net.add_node("n0", tags={"role": "seed"})
    for i in range(1, 6):
        role = "worker" if i % 2 else "store"
        net.add_node(f"n{i}", seeds=[first.core.address], tags={"role": role, "zone": "a"})
    assert net.run_until(lambda: all_up(net, 6), 30)

    def workers_seen_by(node: str) -> list[str]:
        return [m.node_id for m in net.nodes[node].members() if m.has_tags({"role": "worker"})]

    assert net.run_until(
        lambda: all(workers_seen_by(n.node_id) == ["n1", "n3", "n5"] for n in net.live()), 10
    )
    assert dict(net.nodes["n4"].member("n2").tags) == {"role": "store", "zone": "a"}
