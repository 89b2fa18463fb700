"""The invariant checkers catch what they claim to, on paper and on real sockets."""

from __future__ import annotations

import threading

import pytest

from tests.helpers import wait_until
from zcluster import DeliveryGuarantee, MemberStatus
from zcluster.testing import NetworkConditions
from zcluster.testing.checkers import DeliveryLog, InvariantViolation, check_membership_agreement


def test_clean_log_passes_every_check() -> None:
    log = DeliveryLog(seed=1)
    for i in range(3):
        log.sent("a", "b", i, depends_on=[i - 1] if i else [])
        log.delivered("b", "a", i)
    log.check(lost=True, duplicates=True, fifo=True, causal=True)


def test_each_violation_is_named_with_the_seed() -> None:
    log = DeliveryLog(seed=77)
    for i in range(4):
        log.sent("a", "b", i, depends_on=[0] if i == 2 else [])
    log.delivered("b", "a", 2)  # before its dependency 0, and overtaking 0 and 1
    log.delivered("b", "a", 0)
    log.delivered("b", "a", 0)  # duplicate; 1 and 3 lost
    assert sorted(log.lost()) == [("a", "b", 1), ("a", "b", 3)]
    assert log.duplicates() == [("b", "a", 0, 2)]
    assert ("a", "b", 0, 2) in log.fifo_violations()
    assert log.causal_violations() == [("b", 2, 0)]
    log.delivered("b", "x", 9)  # never sent by x
    assert log.unexpected() == [("b", "x", 9)]
    with pytest.raises(InvariantViolation) as caught:
        log.check(lost=True, duplicates=True, fifo=True, causal=True)
    text = str(caught.value)
    parts = ("2 lost messages", "1 duplicate deliveries", "FIFO", "causal", "never sent", "seed=77")
    for part in parts:
        assert part in text, text


def test_membership_disagreement_is_reported(zcluster_harness) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(3, backend="sim", seed=5)
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=10)
    check_membership_agreement(harness.nodes, harness.seed)
    harness.simulate_node_failure(2)
    harness.sim.run_for(0.1)
    harness.nodes[0].core.table.mark("n2", MemberStatus.SUSPECT, 0.0)
    with pytest.raises(InvariantViolation, match=r"membership disagreement.*seed=5"):
        check_membership_agreement(harness.live_nodes, harness.seed)


@pytest.mark.parametrize(
    ("conditions", "expect"),
    [
        (NetworkConditions(), None),
        (NetworkConditions(duplicate_rate=0.5), "duplicate"),
        (NetworkConditions(reorder_rate=0.3, reorder_delay=0.05), "FIFO"),
    ],
    ids=["perfect", "duplicating", "reordering"],
)
def test_checkers_see_faults_injected_on_real_sockets(zcluster_harness, conditions, expect) -> None:  # type: ignore[no-untyped-def]
    harness = zcluster_harness(2, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=10)
    sender, receiver = harness.nodes
    log = DeliveryLog(harness.seed)
    lock = threading.Lock()

    def record(message: int, from_node: str) -> None:
        with lock:
            log.delivered("n1", from_node, message)

    receiver.register("count", record)
    harness.simulate_network_conditions(conditions)
    for i in range(300):
        log.sent("n0", "n1", i)
        sender.send("n1", "count", i, guarantee=DeliveryGuarantee.AT_MOST_ONCE)
    # Duplicates travel with their original and reordered messages are late, not lost:
    # once nothing is missing, everything the faults did has landed.
    assert wait_until(lambda: not log.lost(), 5), log.lost()[:5]
    if expect is None:
        log.check(lost=True, duplicates=True, fifo=True)
    else:
        with pytest.raises(InvariantViolation, match=expect):
            log.check(lost=True, duplicates=True, fifo=True)


def test_ids_need_only_be_unique_per_sender() -> None:
    log = DeliveryLog()
    log.sent("a", "c", 1)
    log.sent("b", "c", 1)
    log.delivered("c", "a", 1)
    assert log.lost() == [("b", "c", 1)]
    log.sent("a", "c", 2)
    log.sent("b", "c", 2)
    log.delivered("c", "a", 2)
    log.delivered("c", "b", 2)
    log.delivered("c", "b", 1)  # b's 1 after b's 2: overtaken
    assert log.fifo_violations() == [("b", "c", 1, 2)]
    with pytest.raises(ValueError, match="sent twice"):
        log.sent("a", "c", 1)
