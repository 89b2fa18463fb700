"""TRANSACTIONAL delivery in the core (core/transactions.py) on the simulated network:
all or none, vetoes, timeouts, lost and repeated messages, and what participants do
when the coordinator dies between the phases."""

from __future__ import annotations

import random

import pytest

from tests.sim.test_delivery_sim import cluster
from zcluster import NodeConfig
from zcluster.core import effects as fx
from zcluster.testing import LinkConditions, NetworkConditions
from zcluster.testing.disk import SimDisk
from zcluster.testing.sim import SimNetwork, SimNode

TARGETS = ("n1", "n2", "n3")
FAST = NodeConfig(
    transaction_in_doubt_max_s=5.0, transaction_timeout_max_s=20.0, transaction_memory_s=30.0
)


def four(
    config: NodeConfig | None = None, seed: int = 1
) -> tuple[SimNetwork, dict[str, list[bytes]]]:
    """n0 coordinates; n1..n3 handle "h", recording what their handler is given."""
    net = cluster(4, seed, config)
    got: dict[str, list[bytes]] = {n: [] for n in TARGETS}
    for n in TARGETS:
        net.nodes[n].handlers["h"] = lambda sender, payload, n=n: got[n].append(payload)
    return net, got


def started_again(
    net: SimNetwork,
    got: dict[str, list[bytes]],
    node_id: str,
    seed: str,
    disk: SimDisk | None = None,
) -> SimNode:
    """Start target ``node_id`` again (after a crash), joining through ``seed``, its
    handler recording into ``got`` from its first message on."""
    node = net.add_node(node_id, seeds=[net.nodes[seed].core.address], disk=disk, start=False)
    node.handlers["h"] = lambda sender, payload: got[node_id].append(payload)
    net.start(node_id)
    return node


def result(net: SimNetwork, number: int) -> fx.TransactionDone:
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 30)
    return net.nodes["n0"].transactions[number]


def test_every_target_takes_it_once() -> None:
    net, got = four()
    done = result(net, net.transaction("n0", TARGETS, "h", b"x"))
    assert done.committed and done.reason == ""
    net.run_for(1.0)
    assert got == {n: [b"x"] for n in TARGETS}


def test_a_veto_aborts_it_everywhere_and_says_who_and_why() -> None:
    net, got = four()

    def validate(sender: str, payload: bytes) -> None:
        raise ValueError(f"no stock for {payload.decode()}")

    net.nodes["n2"].validators["h"] = validate
    done = result(net, net.transaction("n0", TARGETS, "h", b"apples"))
    assert not done.committed
    assert done.vetoes == (("n2", "ValueError: no stock for apples"),)
    assert "n2 vetoed: ValueError: no stock for apples" in done.reason
    net.run_for(2.0)
    assert got == {n: [] for n in TARGETS}
    assert net.nodes["n2"].core.counters["transactions_vetoed"] == 1


def test_a_hook_that_returns_false_vetoes_and_true_or_none_accepts() -> None:
    net, got = four()
    net.nodes["n1"].validators["h"] = lambda sender, payload: payload != b"no"
    net.nodes["n3"].validators["h"] = lambda sender, payload: None
    assert result(net, net.transaction("n0", TARGETS, "h", b"yes")).committed
    done = result(net, net.transaction("n0", TARGETS, "h", b"no"))
    assert not done.committed and "refused by the validation hook of 'h'" in done.reason
    net.run_for(1.0)
    assert got == {n: [b"yes"] for n in TARGETS}


def test_a_target_cut_off_times_it_out_and_nobody_takes_it() -> None:
    net, got = four()
    net.set_conditions(NetworkConditions(latency=0.001, partition_groups=[[0, 1, 2], [3]]))
    done = result(net, net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0))
    assert not done.committed and done.unanswered == ("n3",)
    assert "no vote within the timeout from n3" in done.reason
    net.heal()
    net.run_for(5.0)
    assert got == {n: [] for n in TARGETS}


def test_a_vote_cut_off_after_preparing_still_ends_decided() -> None:
    """n3 prepares, but its vote is lost: abort at the deadline, and n3 learns it."""
    net, got = four()
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(3, 0)]))
    done = result(net, net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0))
    assert not done.committed
    net.heal()
    assert net.run_until(lambda: len(net.nodes["n3"].core.transactions) == 0, 10)
    assert got == {n: [] for n in TARGETS}


@pytest.mark.parametrize("seed", range(5))
def test_all_or_none_under_loss_duplication_and_reordering(seed: int) -> None:
    rng = random.Random(seed)
    net, got = four(seed=seed)
    net.nodes["n2"].validators["h"] = lambda sender, payload: int(payload) % 7 != 0
    net.set_conditions(
        NetworkConditions(
            latency=0.001,
            jitter=0.01,
            packet_loss_rate=0.2,
            duplicate_rate=0.1,
            reorder_rate=0.2,
            reorder_delay=0.03,
        )
    )
    numbers = {}
    for i in range(60):
        numbers[i] = net.transaction("n0", TARGETS, "h", str(i).encode(), timeout_s=3.0)
        net.run_for(rng.choice([0.0, 0.01, 0.05]))
    results = {i: result(net, number) for i, number in numbers.items()}
    net.set_conditions(NetworkConditions(latency=0.001))
    assert net.run_until(lambda: all(len(net.nodes[n].core.transactions) == 0 for n in TARGETS), 30)
    for i, done in results.items():
        counts = [got[n].count(str(i).encode()) for n in TARGETS]
        assert counts == ([1, 1, 1] if done.committed else [0, 0, 0]), (i, done, seed)
    assert sum(d.committed for d in results.values()) >= 30, f"seed={seed}"
    assert any(not d.committed and d.vetoes for d in results.values())


def test_coordinator_crash_before_deciding_leaves_participants_in_doubt_then_aborts() -> None:
    net, got = four(FAST)
    in_doubt: list[fx.TransactionInDoubt] = []
    for n in TARGETS:
        net.nodes[n].appliers[fx.TransactionInDoubt] = in_doubt.append
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(1, 0), (2, 0), (3, 0)]))
    net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.run_for(0.1)  # every target prepared; no vote reaches n0
    net.crash("n0")
    net.heal()
    net.run_for(3.0)
    assert all(len(net.nodes[n].core.transactions) == 1 for n in TARGETS), "blocked: in doubt"
    assert net.run_until(lambda: all(len(net.nodes[n].core.transactions) == 0 for n in TARGETS), 5)
    assert got == {n: [] for n in TARGETS}
    assert len(in_doubt) == 3


def test_a_restarted_coordinator_lets_participants_abort_at_once() -> None:
    """Its new life kept no decision, and every participant is still prepared: nobody
    heard a commit, so each aborts without waiting out the in-doubt limit."""
    net, got = four(FAST)
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(1, 0), (2, 0), (3, 0)]))
    net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.run_for(0.1)
    net.crash("n0")
    net.heal()
    net.add_node("n0", seeds=[net.nodes["n1"].core.address])
    assert net.run_until(lambda: all(len(net.nodes[n].core.transactions) == 0 for n in TARGETS), 4)
    assert got == {n: [] for n in TARGETS}
    presumed = sum(net.nodes[n].core.counters["transactions_presumed_abort"] for n in TARGETS)
    assert presumed >= 1


def test_participants_that_missed_the_commit_learn_it_from_one_that_heard_it() -> None:
    net, got = four(FAST)
    # the decision reaches n1 only, then the coordinator dies
    net.set_conditions(NetworkConditions(latency=0.001))
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2), (0, 3)]))
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 2)
    assert net.nodes["n0"].transactions[number].committed
    net.run_for(0.05)
    net.crash("n0")
    net.heal()
    assert net.run_until(lambda: all(got[n] == [b"x"] for n in TARGETS), 5)
    net.run_for(2.0)
    assert got == {n: [b"x"] for n in TARGETS}


def test_refused_at_once_what_cannot_start() -> None:
    net, _ = four()
    done = result(net, net.transaction("n0", ("n1", "nobody"), "h", b"x"))
    assert not done.committed and "'nobody' is not a member" in done.reason
    done = result(net, net.transaction("n0", (), "h", b"x"))
    assert not done.committed and "1 to 64 targets" in done.reason
    done = result(net, net.transaction("n0", ("n1",), "missing", b"x"))
    assert not done.committed and "no handler named 'missing' on node n1" in done.reason
    done = result(net, net.transaction("n0", ("n0", "n1"), "h", b"x"))
    assert not done.committed and "cannot be one of its transaction's targets" in done.reason


def known_everywhere(net: SimNetwork, node: SimNode) -> bool:
    """Every target knows this life of ``node`` (and ``node`` knows them)."""
    me = node.core.me
    return all(
        node.core.accepts_guaranteed_send(t)
        and (m := net.nodes[t].core.member(me.node_id)) is not None
        and m.incarnation == me.incarnation
        for t in TARGETS
    )


def test_a_coordinator_with_a_store_finishes_what_it_decided_after_a_restart() -> None:
    """n0 decides to commit; its decision is written, then it dies before any participant
    hears it (its links to them cut). Restarted on the same disk, it tells them: every
    target commits (none presumes an abort: n0's later life has the decision)."""
    net, got = four(FAST)
    disk = SimDisk()
    net.crash("n0")
    n0 = net.add_node("n0", seeds=[net.nodes["n1"].core.address], disk=disk)
    assert net.run_until(lambda: known_everywhere(net, n0), 10)
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 1), (0, 2), (0, 3)]))
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 2)
    assert net.nodes["n0"].transactions[number].committed
    assert len(disk.decisions) == 1
    net.crash("n0")
    net.heal()
    net.run_for(3.0)  # the participants are in doubt: n0 is down
    assert got == {n: [] for n in TARGETS}
    net.add_node("n0", seeds=[net.nodes["n1"].core.address], disk=disk)
    assert net.run_until(lambda: all(got[n] == [b"x"] for n in TARGETS), 5)
    assert net.run_until(lambda: not disk.decisions, 5), "acknowledged: forgotten"
    assert sum(net.nodes[n].core.counters["transactions_presumed_abort"] for n in TARGETS) == 0


def test_without_a_store_a_restarted_coordinator_says_it_has_no_record() -> None:
    net, got = four(FAST)
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 1), (0, 2), (0, 3)]))
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 2)
    net.crash("n0")
    net.heal()
    net.add_node("n0", seeds=[net.nodes["n1"].core.address])
    # the commit was decided but nobody heard it, and nobody can now: all abort
    assert net.run_until(lambda: all(len(net.nodes[n].core.transactions) == 0 for n in TARGETS), 5)
    assert got == {n: [] for n in TARGETS}


@pytest.mark.parametrize("crash_after", ["voting", "applying"])
def test_a_participant_with_a_store_keeps_its_vote_and_what_it_applied(crash_after: str) -> None:
    """n3 votes yes (written), then crashes before hearing the commit -- or right after
    applying it, before its acknowledgement leaves. Restarted on its disk, it applies
    the commit once: never lost, never twice."""
    net, got = four(FAST)
    disk = SimDisk()
    net.crash("n3")
    n3 = started_again(net, got, "n3", "n1", disk)
    assert net.run_until(
        lambda: known_everywhere(net, net.nodes["n0"]) and n3.core.accepts_guaranteed_send("n0"), 10
    )
    assert net.run_until(
        lambda: all(
            (m := net.nodes[n].core.member("n3")) is not None
            and m.incarnation == n3.core.incarnation
            for n in ("n0", "n1", "n2")
        ),
        10,
    )
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    # the PREPAREs are on their way (a message's fate is drawn when sent)
    if crash_after == "voting":  # n3's vote leaves; the decision will not reach it
        net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 3)]))
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 3)
    assert net.nodes["n0"].transactions[number].committed
    if crash_after == "applying":  # the commit is on its way; n3's acknowledgement is lost
        net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(3, 0)]))
    net.run_for(0.2)
    assert got["n3"] == ([] if crash_after == "voting" else [b"x"])
    net.crash("n3")
    net.heal()
    n3 = started_again(net, got, "n3", "n1", disk)
    assert net.run_until(lambda: got["n3"] == [b"x"], 10)
    net.run_for(3.0)
    assert got == {n: [b"x"] for n in TARGETS}


def test_an_answer_that_writes_nothing_still_leaves() -> None:
    """n1 (with a store) applied the commit; the coordinator dies before n2 and n3 hear
    it. Their questions get n1's answer, though answering writes nothing new."""
    net, got = four(FAST)
    disk = SimDisk()
    net.crash("n1")
    n1 = started_again(net, got, "n1", "n2", disk)
    assert net.run_until(lambda: known_everywhere(net, net.nodes["n0"]), 10)
    assert net.run_until(
        lambda: all(
            (m := net.nodes[n].core.member("n1")) is not None
            and m.incarnation == n1.core.incarnation
            for n in ("n0", "n2", "n3")
        ),
        10,
    )
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=1.0)
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2), (0, 3)]))
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 2)
    net.run_for(0.05)
    net.crash("n0")
    net.heal()
    assert net.run_until(lambda: got == {n: [b"x"] for n in TARGETS}, 4)
    assert all(net.nodes[n].core.counters["transactions_in_doubt_aborted"] == 0 for n in TARGETS)


def test_a_peer_that_said_unknown_never_votes_yes_afterwards() -> None:
    """n3's PREPARE is late; n1 and n2, in doubt, ask it: it says UNKNOWN, and is bound
    by it -- the late PREPARE is refused, so the transaction cannot commit."""
    net, got = four(NodeConfig(transaction_in_doubt_max_s=600, transaction_memory_s=1000))
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 3)]))
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=200.0)
    net.run_for(205.0)  # n1 and n2 ask n3 at the deadline: UNKNOWN; they abort
    net.heal()
    done = result(net, number)
    assert not done.committed
    net.run_for(2.0)
    assert got == {n: [] for n in TARGETS}


def test_a_target_that_restarts_after_voting_aborts_the_transaction() -> None:
    """Without a store, n3's vote held its message in memory: once n3 restarts before the
    decision, the coordinator cannot count it."""
    net, got = four()
    net.set_conditions(NetworkConditions(latency=0.001, blocked_links=[(0, 2)]))  # n2 is late
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=5.0)
    net.run_for(0.2)
    net.crash("n3")
    started_again(net, got, "n3", "n1")
    net.run_for(1.0)
    net.heal()
    done = result(net, number)
    assert not done.committed and "n3 restarted after voting" in done.reason
    net.run_for(2.0)
    assert got == {n: [] for n in TARGETS}


def test_in_doubt_is_counted_from_the_deadline_not_the_vote() -> None:
    """A timeout longer than transaction_in_doubt_max_s: a participant that voted early
    still waits for the decision while the coordinator collects votes."""
    net, got = four(NodeConfig(transaction_in_doubt_max_s=60.0, transaction_memory_s=400.0))
    net.set_conditions(NetworkConditions(latency=0.001, links={(0, 3): LinkConditions(70.0)}))
    number = net.transaction("n0", TARGETS, "h", b"x", timeout_s=120.0)
    assert net.run_until(lambda: number in net.nodes["n0"].transactions, 130)
    assert net.nodes["n0"].transactions[number].committed
    assert net.run_until(lambda: got == {n: [b"x"] for n in TARGETS}, 80)  # n3's link: 70 s
