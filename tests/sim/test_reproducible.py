"""One seed, one history: the simulated network replays identically in any process.

A seeded run must not depend on anything outside its seed, in particular not
on Python's per-process string hashing (``PYTHONHASHSEED``): a set of node ids
or topics iterated while effects are produced would send messages in a
different order, draw the network's random numbers in a different order, and
change the whole history. The scenario below runs in subprocesses under
several hash seeds and must give the same ``trace_digest()`` (and the same
outcomes) in each, and in this process.

The scenario is built so that hash order would show: six node ids and four
topics, several senders acknowledged by one receiver in the same turn (equal
latency, no jitter, sends at the same instant), publication gaps on several
streams at once (loss, duplication, reordering, a small retransmit buffer),
a crash and a restart of the same node id, a partition, a one-way cut, and
a graceful stop.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import zcluster
from tests.sim.test_swarm import Swarm, draw_config
from zcluster import AckStatus, MemberStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.testing import NetworkConditions
from zcluster.testing.sim import SimNetwork, SimNode

#: node ids chosen to hash differently (and to sort differently than they join)
NODE_IDS = ("foxtrot", "alpha", "delta", "bravo", "echo", "charlie")
TOPICS = ("quotes", "orders", "audit", "zeta")
#: who reads which topic (replay: start from the oldest buffered publication)
READERS = {
    "charlie": (("quotes", False), ("orders", False), ("audit", True)),
    "delta": (("quotes", False), ("zeta", False)),
    "echo": (("orders", False), ("audit", False), ("zeta", True)),
    "foxtrot": (("quotes", True), ("orders", False), ("audit", False), ("zeta", False)),
}
#: senders that send to the same receiver at the same instant
SENDERS = ("alpha", "bravo", "delta", "echo")
RECEIVERS = ("charlie", "foxtrot")
PUBLISHERS = ("alpha", "bravo")
SEED = 20240611
#: swarm seeds (tests/sim/test_swarm.py) replayed in the subprocesses too: they reach
#: far more code paths than the scenario
SWARM_SEEDS = (3, 29, 58)
HASH_SEEDS = ("0", "1", "12345")
SUBPROCESS_TIMEOUT_S = 60


class Scenario:
    """The seeded scenario, with what it observed (to prove it was rich enough)."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        config = NodeConfig(
            retransmit_buffer_count=12,
            topic_holdback_max_count=40,
            retry_initial_s=0.05,
            retry_max_s=0.4,
            fetch_retry_s=0.1,
            message_ttl_s=8.0,
            down_member_expiry_s=6.0,
        )
        self.net = SimNetwork(seed, config=config, latency_s=0.002, jitter_s=0.0)
        #: (receiver, virtual time) -> senders whose messages that receiver handled then
        self.handled_at: dict[tuple[str, float], set[str]] = {}
        self.sent: dict[str, list[int]] = {}
        self.incarnations: dict[str, list[int]] = {}

    # ------------------------------------------------------------ set-up

    def start(self, node_id: str, seeds: tuple[str, ...]) -> SimNode:
        node = self.net.add_node(node_id, seeds=seeds)
        me = node.member(node_id)
        assert me is not None
        self.incarnations.setdefault(node_id, []).append(me.incarnation)
        self.install_handler(node)
        for topic, replay in READERS.get(node_id, ()):
            self.net.subscribe(node_id, topic, replay=replay)
        return node

    def install_handler(self, node: SimNode) -> None:
        net = self.net

        def handle(sender: str, payload: bytes) -> None:
            self.handled_at.setdefault((node.node_id, net.now), set()).add(sender)
            if payload.endswith(b"!"):
                raise ValueError("refused")

        node.handlers["h"] = handle

    def seeds(self, besides: str) -> tuple[str, ...]:
        return tuple(n.core.address for n in self.net.nodes.values() if n.node_id != besides)

    def converged(self) -> bool:
        net = self.net
        live = {n.node_id for n in net.live()}
        for node in net.live():
            view = node.view()
            if any(view.get(other) is not MemberStatus.UP for other in live):
                return False
        return net.views_agree()

    # ------------------------------------------------------------ traffic

    def burst(self, round_: int, guarantees: tuple[G, ...]) -> None:
        """Every sender sends to every receiver at this same instant; publishers publish."""
        net = self.net
        for i, sender in enumerate(SENDERS):
            if sender not in net.nodes or not net.nodes[sender].alive:
                continue
            for receiver in RECEIVERS:
                if not net.nodes[receiver].alive:
                    continue
                guarantee = guarantees[(round_ + i) % len(guarantees)]
                bang = "!" if (round_ * 7 + i) % 11 == 0 else ""
                payload = f"{sender}>{receiver}:{round_}{bang}".encode()
                number = net.send(sender, receiver, "h", payload, guarantee, ttl_s=6.0)
                self.sent.setdefault(sender, []).append(number)
        for j, publisher in enumerate(PUBLISHERS):
            for k, topic in enumerate(TOPICS):
                if (round_ + j + k) % 3 == 0:
                    continue
                guarantee = guarantees[(round_ + j + k) % len(guarantees)]
                net.publish(publisher, topic, f"{publisher}/{topic}/{round_}".encode(), guarantee)

    def rounds(self, first: int, count: int, pause_s: float, guarantees: tuple[G, ...]) -> None:
        for round_ in range(first, first + count):
            self.burst(round_, guarantees)
            self.net.run_for(pause_s)

    # ------------------------------------------------------------ the scenario

    def run(self) -> None:
        net = self.net
        first = self.start(NODE_IDS[0], ())
        for node_id in NODE_IDS[1:]:
            self.start(node_id, (first.core.address,))
        assert net.run_until(self.converged, 20), f"cluster did not form; seed={self.seed}"
        net.run_for(0.6)  # subscriptions confirmed by every publisher
        everything = (G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED)

        # Equal latency, no jitter: sends made at one instant arrive at one instant, so a
        # receiver owes several senders an acknowledgement at the end of the same turn.
        net.set_conditions(NetworkConditions(latency=0.002, packet_loss_rate=0.15))
        self.rounds(0, 30, 0.02, everything)

        # Loss, duplication and reordering: gaps on several (publisher, topic) streams.
        lossy = NetworkConditions(
            latency=0.002,
            jitter=0.004,
            packet_loss_rate=0.25,
            duplicate_rate=0.1,
            reorder_rate=0.2,
            reorder_delay=0.03,
        )
        net.set_conditions(lossy)
        self.rounds(30, 30, 0.01, everything)

        # A receiver and a subscriber crashes; traffic goes on; it restarts under its id.
        net.crash("delta")
        self.rounds(60, 20, 0.05, (G.ORDERED, G.EXACTLY_ONCE))
        self.start("delta", self.seeds("delta"))

        # A partition: publications and sends pile up on both sides, then are repaired.
        net.partition(["alpha", "charlie", "echo"], ["bravo", "delta", "foxtrot"])
        self.rounds(80, 20, 0.05, everything)
        net.heal()
        self.rounds(100, 10, 0.02, everything)

        # A one-way cut: publications lost at the tail, found through heartbeats.
        net.block("bravo", "foxtrot")
        self.rounds(110, 5, 0.01, (G.ORDERED,))
        net.run_for(0.3)
        net.heal()

        # More than the retransmit buffer goes missing: reported lost, with exact ranges.
        net.partition(["alpha", "bravo", "delta", "echo", "foxtrot"], ["charlie"])
        self.rounds(115, 25, 0.005, everything)
        net.heal()
        net.set_conditions(NetworkConditions(latency=0.002, jitter=0.001))
        self.rounds(140, 5, 0.02, everything)

        # A graceful stop, then settle.
        net.stop("echo")

        def settled() -> bool:
            return all(len(net.nodes[s].acks) == len(self.sent[s]) for s in ("alpha", "bravo"))

        assert net.run_until(settled, 30), f"acks still pending; seed={self.seed}"
        net.run_for(3)

    # ------------------------------------------------------------ outcomes

    def outcome_digest(self) -> str:
        """Everything the application saw, in the order it saw it."""
        h = hashlib.blake2b(digest_size=16)
        for node_id in sorted(self.net.nodes):
            node = self.net.nodes[node_id]
            h.update(f"node {node_id} {self.incarnations[node_id][-1]}\n".encode())
            for number in sorted(node.acks):
                status, reason = node.acks[number]
                h.update(f"ack {number} {status.value} {reason}\n".encode())
            for sender, name, payload in node.delivered:
                h.update(f"got {sender} {name} ".encode() + payload + b"\n")
            for loss in node.losses:
                h.update(f"lost {loss.publisher} {loss.topic} {loss.first} {loss.last}\n".encode())
            for member in node.members():
                h.update(f"member {member.node_id} {member.incarnation} {member.status}\n".encode())
        return h.hexdigest()

    def result(self) -> dict[str, str]:
        return {"trace": self.net.trace_digest(), "outcome": self.outcome_digest()}


def run_scenario(seed: int) -> dict[str, str]:
    scenario = Scenario(seed)
    scenario.run()
    return scenario.result()


def swarm_history(seed: int) -> str:
    """A swarm run's trace digest and what its oracle counted (also if it failed)."""
    swarm = Swarm(draw_config(seed))
    try:
        swarm.run()
        outcome = "passed"
    except AssertionError as exc:
        outcome = f"failed: {str(exc)[:200]}"
    counts = sorted({**swarm.stats, **swarm.known}.items())
    return f"{swarm.net.trace_digest()} {outcome} {counts}"


def run_all() -> dict[str, object]:
    """What each subprocess computes."""
    return {
        "scenario": run_scenario(SEED),
        "swarm": {str(seed): swarm_history(seed) for seed in SWARM_SEEDS},
    }


def counter_total(net: SimNetwork, name: str) -> int:
    return sum(node.stats().get(name, 0) for node in net.nodes.values())


@pytest.fixture(scope="module")
def scenario() -> Iterator[Scenario]:
    ran = Scenario(SEED)
    ran.run()
    yield ran


def test_the_scenario_exercises_what_hash_order_would_disturb(scenario: Scenario) -> None:
    net = scenario.net
    batched = [
        senders for (receiver, _), senders in scenario.handled_at.items() if len(senders) > 1
    ]
    assert len(batched) >= 10, "too few turns in which one receiver handled several senders"
    assert max(len(s) for s in batched) >= 3
    for counter in (
        "publication_fetches",
        "publications_repaired",
        "publications_lost",
        "publications_duplicate",
        "reliable_retransmits",
        "reliable_duplicates",
        "reliable_handler_failures",
        "gossip_sent",
        "heartbeats_personal",
        "suspicions_refuted",
    ):
        assert counter_total(net, counter) > 0, f"the scenario never exercised {counter}"
    assert len(scenario.incarnations["delta"]) == 2
    statuses = {status for node in net.nodes.values() for status, _ in node.acks.values()}
    assert {AckStatus.DELIVERED, AckStatus.FAILED} <= statuses
    readers_with_losses = {n.node_id for n in net.nodes.values() if n.losses}
    assert len(readers_with_losses) >= 2


def test_same_seed_same_history_in_one_process(scenario: Scenario) -> None:
    again = run_scenario(SEED)
    assert again == scenario.result()
    assert run_scenario(SEED + 1)["trace"] != scenario.result()["trace"]


def _run_in_subprocess(hash_seed: str) -> dict[str, object]:
    here = Path(__file__).parent  # not resolved: the tests package as this process sees it
    tests_root = here.parent.parent
    package_root = Path(zcluster.__file__).parent.parent
    env = dict(os.environ)
    env["PYTHONHASHSEED"] = hash_seed
    env["PYTHONPATH"] = os.pathsep.join([str(tests_root), str(package_root)])
    code = (
        "import json\n"
        "from tests.sim.test_reproducible import run_all\n"
        "print(json.dumps(run_all()))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tests_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, f"PYTHONHASHSEED={hash_seed}: {done.stderr[-3000:]}"
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.timeout(120)
def test_same_seed_same_history_whatever_the_string_hash_seed(scenario: Scenario) -> None:
    results = {hash_seed: _run_in_subprocess(hash_seed) for hash_seed in HASH_SEEDS}
    here = {
        "scenario": scenario.result(),
        "swarm": {str(seed): swarm_history(seed) for seed in SWARM_SEEDS},
    }
    differing = {h: r for h, r in results.items() if r != here}
    assert not differing, (
        f"scenario seed={SEED}, swarm seeds={SWARM_SEEDS}: the history depends on "
        f"PYTHONHASHSEED; this process: {here}, differing subprocesses: {differing}"
    )
