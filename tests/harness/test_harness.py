"""The public test harness, used the way its docs tell users to use it."""

from __future__ import annotations

import pytest

from zcluster import ConfigError, MemberStatus
from zcluster.testing import ClusterTestHarness, LinkConditions, NetworkConditions
from zcluster.testing.faults import FaultModel

DOWN, UP = MemberStatus.DOWN, MemberStatus.UP


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_two_three_partition_heals_into_one_view(zcluster_harness, backend: str) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(5, backend=backend)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    harness.simulate_network_conditions(NetworkConditions(partition_groups=[[0, 1], [2, 3, 4]]))

    def split() -> bool:
        left, right = harness.nodes[0], harness.nodes[4]
        return left.member("n4").status is DOWN and right.member("n0").status is DOWN

    assert harness.run_until_satisfied(split, timeout=15)
    assert not harness.verify_cluster_stability()
    harness.heal()
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=20)


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_crash_then_restart(zcluster_harness, backend: str) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend=backend)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    first = harness.nodes[2].member("n2").incarnation
    harness.simulate_node_failure(2, mode="crash")
    assert harness.run_until_satisfied(
        lambda: all(n.member("n2").status is DOWN for n in harness.live_nodes), timeout=10
    )
    before = harness.nodes[0].member("n2")
    harness.restart_node(2)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    after = harness.nodes[0].member("n2")
    assert after.incarnation > first
    assert (after.address, after.pub_address) == (before.address, before.pub_address)


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_graceful_stop_is_left_not_down(zcluster_harness, backend: str) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend=backend)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    harness.simulate_node_failure(1, mode="stop")
    # Each of the others sees it LEFT (never DOWN), and they agree (the second may hear of
    # the leave a little after the first).
    assert harness.run_until_satisfied(
        lambda: (
            all(harness.nodes[i].member("n1").status is MemberStatus.LEFT for i in (0, 2))
            and harness.verify_cluster_stability()
        ),
        timeout=5,
    )


def test_assertions_added_up_front(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(4)
    harness.add_assertion(lambda nodes: all(len(n.members()) == 4 for n in nodes))
    harness.add_assertion(lambda nodes: harness.verify_cluster_stability())
    assert harness.run_until_satisfied(10)


def test_one_way_cut_on_real_sockets_is_bridged(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    harness.simulate_network_conditions(NetworkConditions(blocked_links=[(0, 1)]))
    # n1 no longer hears n0 directly; indirect probes through n2 keep n0 up for everyone.
    assert not harness.run_until_satisfied(
        lambda: any(n.member("n0").status is not UP for n in harness.nodes), timeout=4
    )
    assert harness.nodes[1].stats()["probes_sent"] > 0


def test_ten_percent_loss_on_real_sockets_keeps_everyone_up(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    harness.simulate_network_conditions(NetworkConditions(packet_loss_rate=0.1, latency=0.002))
    assert not harness.run_until_satisfied(
        lambda: any(n.stats().get("members_down", 0) for n in harness.nodes), timeout=5
    )
    assert harness.verify_cluster_stability()


def test_same_seed_same_trace_different_seed_different_trace() -> None:
    def trace(seed: int) -> str:
        with ClusterTestHarness.create_test_cluster(5, backend="sim", seed=seed) as harness:
            harness.simulate_network_conditions(
                NetworkConditions(packet_loss_rate=0.05, jitter=0.002, duplicate_rate=0.02)
            )
            harness.run_until_satisfied(lambda: False, timeout=5)
            harness.simulate_node_failure(3)
            harness.run_until_satisfied(lambda: False, timeout=5)
            return harness.trace_digest()

    assert trace(1234) == trace(1234)
    assert trace(1234) != trace(1235)


def test_conditions_are_validated_and_applied_per_link() -> None:
    with pytest.raises(ConfigError):
        NetworkConditions(packet_loss_rate=1.5)
    with pytest.raises(ConfigError):
        NetworkConditions(partition_groups=[[0, 1], [1, 2]])
    conditions = NetworkConditions(
        latency=0.01, links={(0, 1): LinkConditions(latency=0.5, duplicate_rate=1.0)}
    )
    import random

    model = FaultModel(random.Random(0), conditions)
    assert model.fate(1, 0) == (0.01,)
    assert model.fate(0, 1) == (0.5, 0.5)
    assert FaultModel(random.Random(0), NetworkConditions(packet_loss_rate=1.0)).fate(0, 1) == ()


def test_sim_runs_on_virtual_time() -> None:
    # A hundred simulated seconds in a bounded test; the speed itself is measured by
    # benchmarks/bench_sim.py, outside the suite.
    with ClusterTestHarness.create_test_cluster(5, backend="sim", seed=3) as harness:
        started = harness.sim.now
        assert not harness.run_until_satisfied(lambda: False, timeout=100)
        assert harness.sim.now - started >= 100
        assert all(len(node.members()) == 5 for node in harness.nodes)


def test_a_failing_test_reports_the_seed_that_reproduces_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        def test_fails(zcluster_harness):
            zcluster_harness(2, backend="sim", seed=4242)
            assert False
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*harness seed(s): 4242; reproduce with --zcluster-seed=4242*"])


def test_the_documented_example_passes_as_a_users_test(pytester: pytest.Pytester) -> None:
    from pathlib import Path

    doc = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text()
    example = doc.split("```python\n", 1)[1].split("```", 1)[0]
    pytester.makepyfile(test_user=example)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-q")
    result.assert_outcomes(passed=2)


def test_process_mode_sigkill_is_seen_as_down_and_cleaned_up(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    from zcluster.testing.processes import children_still_running

    harness = zcluster_harness(3, backend="zmq", processes=True)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    victim = harness.nodes[2]
    harness.simulate_node_failure(2, mode="crash")
    assert victim.process.returncode == -9  # a real SIGKILL
    assert harness.run_until_satisfied(
        lambda: all(n.member("n2").status is DOWN for n in harness.live_nodes), timeout=5
    )
    harness.restart_node(2)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    with pytest.raises(ConfigError, match="in-process"):
        harness.simulate_network_conditions(NetworkConditions(packet_loss_rate=0.1))
    harness.close()
    assert children_still_running() == []


@pytest.mark.parametrize("backend", ["sim", "zmq"])
def test_async_form(backend: str) -> None:
    import asyncio

    async def scenario() -> None:
        harness = await ClusterTestHarness.acreate_test_cluster(4, backend=backend, seed=9)
        async with harness:
            assert await harness.arun_until_satisfied(
                lambda: harness.verify_cluster_stability(), timeout=15
            )
            await harness.asimulate_node_failure(3)
            assert await harness.arun_until_satisfied(
                lambda: all(n.member("n3").status is DOWN for n in harness.live_nodes), timeout=10
            )
            await harness.arestart_node(3)
            assert await harness.arun_until_satisfied(
                lambda: harness.verify_cluster_stability(), timeout=15
            )

    asyncio.run(asyncio.wait_for(scenario(), 60))


@pytest.mark.parametrize("mode", ["curve", "curve-mutual", "jwt", "curve+jwt"])
def test_a_secured_cluster_crashes_and_restarts(zcluster_harness, mode: str) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend="zmq", security=mode)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    harness.simulate_node_failure(2, mode="crash")
    assert harness.run_until_satisfied(
        lambda: all(n.member("n2").status is DOWN for n in harness.live_nodes), timeout=10
    )
    harness.restart_node(2)  # a new run of n2 says who it is again (AUTH) to every member
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    assert not any(
        name.startswith("auth_refused") for node in harness.live_nodes for name in node.stats()
    ), [node.stats() for node in harness.live_nodes]


def test_secured_node_processes(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend="zmq", processes=True, security="curve-mutual")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    for process in harness.nodes:
        assert "security mode curve-mutual" in process.log()


def test_the_simulator_takes_no_security_mode() -> None:
    with pytest.raises(ConfigError, match="needs backend='zmq'"):
        ClusterTestHarness(backend="sim", security="curve")
