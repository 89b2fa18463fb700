"""The durable store on the simulated network: nodes with a SimDisk crash and restart
at seeded random moments, with lost and torn writes. At-least-once survives a sender's
crash (every send is delivered, or ends expired); exactly-once survives a receiver's
(no handler runs twice; what a crash cut short is reported, never run again). A failure
names the seed that reproduces it."""

from __future__ import annotations

import collections
import random

import pytest

from tests.sim.test_delivery_sim import cluster
from zcluster import AckStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.core.inbound import INTERRUPTED
from zcluster.testing import NetworkConditions
from zcluster.testing.disk import SimDisk
from zcluster.testing.sim import SimNetwork

COUNT = 400


def with_disks(seed: int, torn_rate: float) -> tuple[SimNetwork, dict[str, SimDisk]]:
    """n0 and n1 with disks that take 0.5 to 5 ms a write, so that crashes find writes
    in flight (and handlers running: ``handler_delay_s``)."""
    net = cluster(2, seed, NodeConfig())
    net.handler_delay_s = 0.001
    disks = {}
    for node_id in ("n0", "n1"):
        disks[node_id] = SimDisk(write_delay_s=random.Random(seed).choice([0.0005, 0.005]))
        disks[node_id].torn_rate = torn_rate
        restart(net, node_id, disks[node_id])
    return net, disks


def restart(
    net: SimNetwork, node_id: str, disk: SimDisk, got: collections.Counter[bytes] | None = None
) -> None:
    """Crash ``node_id`` (if it runs) and start it again on ``disk``, counting what its
    handler is given in ``got``, until it has joined (as ``Node.start`` returns)."""
    other = "n1" if node_id == "n0" else "n0"
    if net.nodes[node_id].alive:
        net.crash(node_id)
    node = net.add_node(node_id, seeds=[net.nodes[other].core.address], disk=disk, start=False)
    if got is not None:
        node.handlers["h"] = lambda sender, payload: got.update([payload])
    net.start(node_id)
    assert net.run_until(lambda: node.core.accepts_guaranteed_send(other), 10)


def handled_by(net: SimNetwork, got: collections.Counter[bytes], node_id: str) -> None:
    net.nodes[node_id].handlers["h"] = lambda sender, payload: got.update([payload])


@pytest.mark.parametrize("seed", range(6))
def test_at_least_once_survives_the_senders_crash(seed: int) -> None:
    rng = random.Random(seed)
    net, disks = with_disks(seed, torn_rate=0.5)
    got: collections.Counter[bytes] = collections.Counter()
    handled_by(net, got, "n1")
    net.set_conditions(NetworkConditions(latency=0.001, packet_loss_rate=0.1))
    crash_at = rng.randrange(50, COUNT)
    kept_before_crash: set[bytes] = set()
    for i in range(COUNT):
        if i == crash_at:
            kept_before_crash = {k.payload for k in disks["n0"].sends.values()}
            restart(net, "n0", disks["n0"])
            net.run_for(rng.choice([0.0, 0.5]))
        net.send("n0", "n1", "h", str(i).encode(), G.AT_LEAST_ONCE, ttl_s=30.0)
        net.run_for(rng.choice([0.0, 0.0005, 0.002]))
    # what the crash cannot have lost: sends written before it, and every send after it
    must = kept_before_crash | {str(i).encode() for i in range(crash_at, COUNT)}
    net.set_conditions(NetworkConditions(latency=0.001))
    assert net.run_until(lambda: must <= set(got) and not disks["n0"].sends, 60), (
        f"missing {sorted(must - set(got))[:5]}; seed={seed}"
    )
    sender = net.nodes["n0"]
    # a torn write may have kept part of the batch in flight too
    assert sender.core.counters["state_sends_restored"] >= len(kept_before_crash), seed
    assert all(status is AckStatus.DELIVERED for status, _ in sender.acks.values()), seed


@pytest.mark.parametrize("seed", range(6))
def test_exactly_once_survives_the_receivers_crash(seed: int) -> None:
    rng = random.Random(seed)
    net, disks = with_disks(seed, torn_rate=0.5)
    got: collections.Counter[bytes] = collections.Counter()
    handled_by(net, got, "n1")
    net.set_conditions(NetworkConditions(latency=0.001, packet_loss_rate=0.1, duplicate_rate=0.1))
    crashes = sorted(rng.sample(range(20, COUNT), 3))
    numbers = {}
    for i in range(COUNT):
        if i in crashes:
            restart(net, "n1", disks["n1"], got)
            net.run_for(rng.choice([0.0, 0.5]))
        numbers[net.send("n0", "n1", "h", str(i).encode(), G.EXACTLY_ONCE, ttl_s=60.0)] = i
        net.run_for(rng.choice([0.0, 0.0005, 0.002]))
    net.set_conditions(NetworkConditions(latency=0.001))
    acks = net.nodes["n0"].acks
    assert net.run_until(lambda: len(acks) == COUNT, 120), f"{len(acks)} settled; seed={seed}"
    assert max(got.values()) == 1, f"a handler ran twice: {got.most_common(3)}; seed={seed}"
    for number, (status, reason) in acks.items():
        payload = str(numbers[number]).encode()
        if status is AckStatus.DELIVERED:
            assert got[payload] == 1, (payload, seed)
        else:  # cut short by a crash: reported, and never run again
            assert (status, reason) == (AckStatus.FAILED, INTERRUPTED), (payload, reason, seed)
    assert sum(got.values()) >= COUNT - 3 * 20, seed


@pytest.mark.parametrize("seed", range(6))
def test_exactly_once_survives_the_senders_crash(seed: int) -> None:
    """Restored sends go out again under their first id (DATA's origin): a message the
    receiver handled before the sender crashed is not handled again."""
    rng = random.Random(seed)
    net, disks = with_disks(seed, torn_rate=0.5)
    got: collections.Counter[bytes] = collections.Counter()
    handled_by(net, got, "n1")
    net.set_conditions(NetworkConditions(latency=0.001, packet_loss_rate=0.2))
    crash_at = rng.randrange(50, COUNT)
    for i in range(COUNT):
        if i == crash_at:
            restart(net, "n0", disks["n0"])
        net.send("n0", "n1", "h", str(i).encode(), G.EXACTLY_ONCE, ttl_s=30.0)
        net.run_for(rng.choice([0.0, 0.0005, 0.002]))
    net.set_conditions(NetworkConditions(latency=0.001))
    assert net.run_until(lambda: not disks["n0"].sends, 60), seed
    assert got and max(got.values()) == 1, f"handled twice: {got.most_common(3)}; seed={seed}"
    assert set(got) >= {str(i).encode() for i in range(crash_at, COUNT)}, seed
    assert net.nodes["n0"].core.counters["state_sends_restored"] > 0, seed


def test_a_restored_copy_arriving_while_its_handler_runs_is_acknowledged_when_it_returns() -> None:
    """The receiver's handler takes 2 s; the sender crashes meanwhile and, restarted,
    sends the message again under its first id: the copy is not run, and the sender
    hears DELIVERED once the first run returns (not EXPIRED at its ttl)."""
    net, disks = with_disks(1, torn_rate=0.0)
    got: collections.Counter[bytes] = collections.Counter()
    handled_by(net, got, "n1")
    net.handler_delay_s = 2.0
    number = net.send("n0", "n1", "h", b"pay-once", G.EXACTLY_ONCE, ttl_s=20.0)
    net.run_for(0.05)  # n1's handler runs
    restart(net, "n0", disks["n0"])
    sender = net.nodes["n0"]
    assert net.run_until(lambda: number in sender.acks, 10)
    assert sender.acks[number] == (AckStatus.DELIVERED, "")
    assert got[b"pay-once"] == 1
