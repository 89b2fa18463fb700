"""TRANSACTIONAL delivery judged on real sockets and processes: 500 transactions to
three targets while one is cut off for part of the run and one vetoes 10% -- each
committed at all three or at none, every result final; and a coordinator process
killed with SIGKILL between the phases -- its participants still end decided."""

from __future__ import annotations

import collections
import concurrent.futures
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import wait_until
from zcluster import Node, NodeConfig, TransactionResult
from zcluster.testing import ClusterTestHarness, NetworkConditions

COUNT = 500
TIMEOUT_S = 1.0


@pytest.mark.timeout(240)
def test_five_hundred_transactions_all_or_none_through_a_partition(zcluster_harness: Any) -> None:
    harness: ClusterTestHarness = zcluster_harness(4, backend="zmq")
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=15)
    coordinator, *targets = harness.nodes
    delivered: dict[str, collections.Counter[int]] = {
        t.node_id: collections.Counter() for t in targets
    }
    lock = threading.Lock()
    for target in targets:

        def take(i: int, sender: str, me: str = target.node_id) -> None:
            with lock:
                delivered[me][i] += 1

        validate = (lambda i, sender: i % 10 != 0) if target is targets[2] else None
        target.register("book", take, validate=validate)
    results: dict[int, TransactionResult] = {}

    def run(i: int) -> None:
        ids = [t.node_id for t in targets]
        results[i] = coordinator.send_transaction(ids, "book", i, timeout=TIMEOUT_S)

    def run_all(numbers: range) -> None:
        with concurrent.futures.ThreadPoolExecutor(16) as pool:
            for future in [pool.submit(run, i) for i in numbers]:
                future.result()

    run_all(range(COUNT // 3))
    # n2 is cut off for the middle third, during which transactions time out (some
    # may have it prepared already: it learns the decision after the heal)
    harness.simulate_network_conditions(NetworkConditions(partition_groups=[[0, 1, 3], [2]]))
    run_all(range(COUNT // 3, 2 * COUNT // 3))
    harness.heal()
    assert harness.run_until_satisfied(lambda: harness.verify_cluster_stability(), timeout=20)
    run_all(range(2 * COUNT // 3, COUNT))
    assert sorted(results) == list(range(COUNT))
    committed = {i for i, r in results.items() if r.committed}
    aborted = set(results) - committed
    assert any(r.unanswered == (targets[1].node_id,) for r in results.values()), "no partition"
    assert any(targets[2].node_id in r.vetoes for r in results.values()), "no veto"
    assert len(committed) > COUNT // 2

    def settled() -> bool:
        with lock:
            return all(set(d) >= committed for d in delivered.values())

    assert wait_until(settled, 30), "a committed transaction did not reach every target"
    time.sleep(0.5)  # nothing more arrives: a late delivery of an aborted one would show
    with lock:
        for node_id, counts in delivered.items():
            assert set(counts) == committed, (node_id, sorted(set(counts) ^ committed)[:5])
            assert set(counts.values()) == {1}, f"{node_id} took a transaction twice"
    assert all(i % 10 == 0 or i in committed or results[i].unanswered for i in aborted)


DURABLE_COORDINATOR = textwrap.dedent(
    """
    import sys
    from zcluster import Node
    seed, state_dir, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    with Node("coordinator", seeds=[seed], state_dir=state_dir) as node:
        node.wait_for(lambda: all(node.member(p) is not None for p in ("p1", "p2")), 10)
        if mode == "run":
            result = node.send_transaction(["p1", "p2"], "book", "order-7", timeout=5)
            print(f"decided {result.status}", flush=True)
        else:
            print("restarted", flush=True)
        node.wait_for(lambda: False, 60)  # stays until killed
    """
)


COORDINATOR = textwrap.dedent(
    """
    import sys
    from zcluster import Node
    seed, timeout = sys.argv[1], float(sys.argv[2])
    with Node("coordinator", seeds=[seed]) as node:
        node.wait_for(lambda: all(node.member(p) is not None for p in ("p1", "p2")), 10)
        print("started", flush=True)
        node.send_transaction(["p1", "p2"], "book", "order-1", timeout=timeout)
    """
)


@pytest.mark.timeout(120)
def test_participants_end_decided_when_the_coordinator_is_killed_between_the_phases(
    tmp_path: Path,
) -> None:
    config = NodeConfig(transaction_in_doubt_max_s=20.0, transaction_decision_grace_s=0.5)
    hook_entered, release_hook = threading.Event(), threading.Event()
    taken: list[str] = []

    def slow_validate(order: str, sender: str) -> None:
        hook_entered.set()
        release_hook.wait(30)  # p2 still votes when the coordinator is long dead

    with Node("p1", config=config) as p1, Node("p2", seeds=[p1.address], config=config) as p2:
        p1.register("book", lambda order, sender: taken.append(f"p1:{order}"))
        p2.register(
            "book", lambda order, sender: taken.append(f"p2:{order}"), validate=slow_validate
        )
        script = tmp_path / "coordinator.py"
        script.write_text(COORDINATOR)
        output = tmp_path / "coordinator.log"
        with output.open("w") as out:
            process = subprocess.Popen(
                [sys.executable, str(script), p1.address, "2.0"], stdout=out, stderr=out
            )
        try:
            assert hook_entered.wait(30), output.read_text()
            assert wait_until(lambda: p1.stats().get("transactions_prepared", 0) == 1, 5)
            os.kill(process.pid, signal.SIGKILL)  # p1 prepared, p2 still voting
            process.wait(10)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
        killed_at = time.monotonic()
        # timeout 2 s + grace 0.5 s: p1 asks p2, which has not voted: it gives up its vote
        assert wait_until(lambda: p1.stats().get("transactions_discarded", 0) == 1, 10)
        release_hook.set()
        assert wait_until(lambda: p2.stats().get("transactions_discarded", 0) == 1, 10)
        decided_in = time.monotonic() - killed_at
        assert decided_in < 2.0 + 0.5 + 5.0, decided_in
        assert taken == []


@pytest.mark.timeout(120)
def test_a_coordinator_restarted_on_its_state_dir_finishes_what_it_decided(
    tmp_path: Path,
) -> None:
    """It decides to commit (written to its store before anyone hears it), and is killed
    before either participant hears the decision; restarted, it tells them."""
    taken: list[str] = []
    deaf = threading.Event()
    deaf.set()

    def no_decisions(event: Any) -> tuple[float, ...]:
        message = event.envelope.message
        if deaf.is_set() and type(message).__name__ == "Txn" and message.state > 1:
            return ()  # the decision from the coordinator is lost
        return (0.0,)

    with Node("p1") as p1, Node("p2", seeds=[p1.address]) as p2:
        for participant in (p1, p2):
            me = participant.node_id
            participant.register("book", lambda order, sender, me=me: taken.append(f"{me}:{order}"))
            participant.inbound_faults = no_decisions
        script, output = tmp_path / "coordinator.py", tmp_path / "coordinator.log"
        script.write_text(DURABLE_COORDINATOR)
        state = str(tmp_path / "coordinator-state")

        def start(mode: str) -> subprocess.Popen[bytes]:
            with output.open("a") as out:
                return subprocess.Popen(
                    [sys.executable, str(script), p1.address, state, mode], stdout=out, stderr=out
                )

        first = start("run")
        second: subprocess.Popen[bytes] | None = None
        try:
            assert wait_until(lambda: "decided committed" in output.read_text(), 30), (
                output.read_text()
            )
            os.kill(first.pid, signal.SIGKILL)
            first.wait(10)
            assert taken == [], "nobody heard the decision"
            deaf.clear()
            second = start("resume")
            assert wait_until(lambda: len(taken) == 2, 20), output.read_text()
            assert sorted(taken) == ["p1:order-7", "p2:order-7"]
        finally:
            for process in (first, second):
                if process is not None and process.poll() is None:
                    process.kill()
                    process.wait(10)
