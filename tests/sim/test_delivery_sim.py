"""Delivery guarantees on the deterministic simulated network.

Seeded fault schedules (loss, duplication, reordering, partitions) drive
guaranteed sends and publications; the DeliveryLog checkers of
``zcluster.testing`` assert nothing is lost, duplicated or reordered where
the guarantee forbids it. A failure names the seed that reproduces it.
"""

from __future__ import annotations

import random

import pytest

from zcluster import AckStatus, MemberStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.testing import DeliveryLog, NetworkConditions
from zcluster.testing.sim import SimNetwork, SimNode


def cluster(size: int, seed: int, config: NodeConfig | None = None) -> SimNetwork:
    net = SimNetwork(seed, config=config)
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])

    def joined() -> bool:
        return net.views_agree() and all(
            all(m.status is MemberStatus.UP for m in n.core.members())
            and len(n.core.members()) == size
            for n in net.live()
        )

    assert net.run_until(joined, 30), f"cluster did not form; seed={seed}"
    return net


def record_into(log: DeliveryLog, node: SimNode, name: str) -> None:
    def handle(sender: str, payload: bytes) -> None:
        log.delivered(node.node_id, sender, payload)

    node.handlers[name] = handle


def random_conditions(rng: random.Random) -> NetworkConditions:
    return NetworkConditions(
        latency=0.001,
        jitter=rng.choice([0.0, 0.002, 0.02]),
        packet_loss_rate=rng.choice([0.0, 0.1, 0.2, 0.3]),
        duplicate_rate=rng.choice([0.0, 0.1]),
        reorder_rate=rng.choice([0.0, 0.2]),
        reorder_delay=0.03,
    )


def run_direct_schedule(seed: int) -> None:
    """Two senders, one receiver each way, every reliable guarantee, random faults."""
    rng = random.Random(seed)
    net = cluster(3, seed)
    log = DeliveryLog(seed)
    for node in net.live():
        record_into(log, node, "h")
    net.set_conditions(random_conditions(rng))
    guarantees = {"n0": rng.choice([G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED]), "n1": G.ORDERED}
    numbers: dict[str, list[int]] = {"n0": [], "n1": []}
    partition_at = rng.randint(50, 250) if rng.random() < 0.5 else None
    for i in range(300):
        if i == partition_at:
            net.partition(["n0"], ["n1", "n2"])
            net.run_for(rng.choice([0.0, 3.0]))  # 3 s: n0 is down for the others
        if partition_at is not None and i == partition_at + 60:
            net.heal()
        for sender, target in (("n0", "n2"), ("n1", "n2")):
            payload = f"{sender}-{i}".encode()
            log.sent(sender, target, payload)
            numbers[sender].append(net.send(sender, target, "h", payload, guarantees[sender]))
        if rng.random() < 0.6:  # else the next sends join this turn's batches (DATA_BATCH)
            net.run_for(rng.choice([0.0, 0.001, 0.01]))
    net.heal()
    net.set_conditions(NetworkConditions(latency=0.001))

    def settled() -> bool:
        return all(len(net.nodes[s].acks) == len(numbers[s]) for s in numbers)

    assert net.run_until(settled, 120), f"acks still pending; seed={seed}"
    assert net.nodes["n1"].core.counters["reliable_batches_sent"] > 0, seed
    for sender, sent in numbers.items():
        statuses = {net.nodes[sender].acks[n][0] for n in sent}
        assert statuses == {AckStatus.DELIVERED}, (sender, statuses, seed)
    exact = all(g is not G.AT_LEAST_ONCE for g in guarantees.values())
    log.check(lost=True, duplicates=exact, fifo=False)
    # n1 always sends ORDERED: its messages arrive in order whatever the faults did
    ordered_only = DeliveryLog(seed)
    for i in range(300):
        ordered_only.sent("n1", "n2", f"n1-{i}".encode())
    for sender, _, payload in net.nodes["n2"].delivered:
        if sender == "n1":
            ordered_only.delivered("n2", "n1", payload)
    ordered_only.check(lost=True, duplicates=True, fifo=True)


@pytest.mark.parametrize("seed", range(25))
def test_seeded_direct_delivery_schedules(seed: int) -> None:
    run_direct_schedule(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(1000, 1500))
def test_long_sweep_of_direct_delivery_schedules(seed: int) -> None:
    run_direct_schedule(seed)


def run_pubsub_schedule(seed: int) -> None:
    """One publisher, two subscribers, guaranteed publications under random faults."""
    rng = random.Random(seed)
    net = cluster(3, seed)
    for sub in ("n1", "n2"):
        net.subscribe(sub, "t")
    net.run_for(0.5)  # one heartbeat after subscribing: the streams start at 0
    net.set_conditions(random_conditions(rng))
    guarantee = rng.choice([G.AT_LEAST_ONCE, G.EXACTLY_ONCE, G.ORDERED])
    count = 400
    for i in range(count):
        net.publish("n0", "t", str(i).encode(), guarantee)
        if i % 20 == 0:
            net.run_for(rng.choice([0.0, 0.005, 0.05]))
    net.set_conditions(NetworkConditions(latency=0.001))
    expected = [str(i).encode() for i in range(count)]

    def received(node: str) -> list[bytes]:
        return [p for s, t, p in net.nodes[node].delivered if t == "t" and s == "n0"]

    done = net.run_until(lambda: all(len(received(n)) >= count for n in ("n1", "n2")), 60)
    for node in ("n1", "n2"):
        got = received(node)
        assert net.nodes[node].losses == [], (node, seed)
        assert done and sorted(got, key=int) == expected, (node, len(got), seed)
        if guarantee is G.ORDERED:
            assert got == expected, (node, seed)


@pytest.mark.parametrize("seed", range(20))
def test_seeded_pubsub_schedules(seed: int) -> None:
    run_pubsub_schedule(seed)


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2000, 2500))
def test_long_sweep_of_pubsub_schedules(seed: int) -> None:
    run_pubsub_schedule(seed)


def test_send_to_a_node_that_never_returns_expires_after_its_ttl() -> None:
    net = cluster(2, seed=3)
    net.crash("n1")
    number = net.send("n0", "n1", "h", b"x", ttl_s=3.0)
    start = net.now
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 10)
    status, reason = net.nodes["n0"].acks[number]
    assert status is AckStatus.EXPIRED and "ttl" in reason
    assert 3.0 <= net.now - start <= 3.0 + 2 * net.config.tick_interval_s


def test_send_to_a_removed_node_fails_and_says_why() -> None:
    config = NodeConfig(down_member_expiry_s=3.0)
    net = cluster(2, seed=4, config=config)
    net.partition(["n0"], ["n1"])
    number = net.send("n0", "n1", "h", b"x", ttl_s=50.0)
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 20)
    status, reason = net.nodes["n0"].acks[number]
    assert status is AckStatus.FAILED and "removed" in reason


def test_handler_failures_come_back_as_failed_with_the_reason() -> None:
    net = cluster(2, seed=5)

    def broken(sender: str, payload: bytes) -> None:
        raise ValueError("bad input")

    net.nodes["n1"].handlers["broken"] = broken
    failing = net.send("n0", "n1", "broken", b"x")
    missing = net.send("n0", "n1", "nobody", b"x")
    assert net.run_until(lambda: len(net.nodes["n0"].acks) == 2, 5)
    assert net.nodes["n0"].acks[failing] == (
        AckStatus.FAILED,
        "handler raised ValueError: bad input",
    )
    status, reason = net.nodes["n0"].acks[missing]
    assert status is AckStatus.FAILED and "nobody" in reason


def test_send_to_a_non_member_fails_at_once() -> None:
    net = cluster(2, seed=6)
    number = net.send("n0", "ghost", "h", b"x")
    assert net.nodes["n0"].acks[number][0] is AckStatus.FAILED


def test_shrunk_retransmit_buffer_reports_exactly_what_is_missing() -> None:
    config = NodeConfig(retransmit_buffer_count=20)
    net = cluster(2, seed=7, config=config)
    net.subscribe("n1", "t")
    net.run_for(0.5)
    for i in range(1, 31):
        net.publish("n0", "t", str(i).encode(), G.ORDERED)
    net.run_for(0.1)
    net.partition(["n0"], ["n1"])
    for i in range(31, 131):  # 100 publications the subscriber never sees
        net.publish("n0", "t", str(i).encode(), G.ORDERED)
    net.heal()
    for i in range(131, 141):
        net.publish("n0", "t", str(i).encode(), G.ORDERED)
    net.run_for(3)
    sub = net.nodes["n1"]
    got = [int(p) for s, t, p in sub.delivered if t == "t"]
    # the buffer held 121..140 when the gap was fetched: 31..120 are gone
    assert [(x.first, x.last) for x in sub.losses] == [(31, 120)]
    assert got == [*range(1, 31), *range(121, 141)]
    assert sub.core.counters["publications_lost"] == 90


def test_tail_loss_is_found_through_heartbeats() -> None:
    net = cluster(2, seed=8)
    net.subscribe("n1", "t")
    net.run_for(0.5)
    net.block("n0", "n1")
    for i in range(5):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.run_for(0.05)
    net.heal()  # nothing more is published: only heartbeats tell n1 it missed 1..5
    assert net.run_until(lambda: len(net.nodes["n1"].delivered) == 5, 3)


def test_late_subscriber_starts_at_the_current_position_unless_it_asks_for_replay() -> None:
    net = cluster(3, seed=9)
    for i in range(10):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.run_for(0.5)
    net.subscribe("n1", "t")
    net.subscribe("n2", "t", replay=True)
    net.run_for(0.5)
    net.publish("n0", "t", b"10", G.AT_LEAST_ONCE)
    net.run_for(1)
    late = [p for _, t, p in net.nodes["n1"].delivered if t == "t"]
    replayed = [p for _, t, p in net.nodes["n2"].delivered if t == "t"]
    assert late == [b"10"]
    assert sorted(replayed, key=int) == [str(i).encode() for i in range(11)]
    assert net.nodes["n1"].losses == net.nodes["n2"].losses == []


def test_restarted_publisher_reports_the_gap_its_old_life_left() -> None:
    net = cluster(2, seed=10)
    net.subscribe("n1", "t")
    net.run_for(0.5)
    net.publish("n0", "t", b"1", G.ORDERED)
    net.run_for(0.1)
    net.block("n0", "n1")
    net.publish("n0", "t", b"2", G.ORDERED)
    net.publish("n0", "t", b"3", G.ORDERED)
    net.heal()
    net.block("n1", "n0")  # heartbeats announce 3, but fetches never reach the publisher
    net.run_for(0.5)
    stream = net.nodes["n1"].core.subscriber.subscriptions.stream("n0", "t")
    assert stream is not None and stream.has_gap
    net.crash("n0")
    net.heal()
    net.add_node("n0", seeds=[net.nodes["n1"].core.address])
    assert net.run_until(lambda: bool(net.nodes["n1"].losses), 10)
    loss = net.nodes["n1"].losses[0]
    assert (loss.publisher, loss.topic, loss.first, loss.last) == ("n0", "t", 2, 3)


def recorder(node: SimNode, name: str = "h") -> list[bytes]:
    got: list[bytes] = []
    node.handlers[name] = lambda sender, payload: got.append(payload)
    return got


def test_an_expired_message_does_not_block_the_ordered_ones_behind_it() -> None:
    net = cluster(2, seed=11)
    got = recorder(net.nodes["n1"])
    for payload in (b"1", b"2"):
        net.send("n0", "n1", "h", payload, G.ORDERED)
    net.run_for(0.5)
    net.loss_rate = 1.0  # 3 is lost and expires before any retry
    lost = net.send("n0", "n1", "h", b"3", G.ORDERED, ttl_s=0.01)
    net.loss_rate = 0.0
    later = [net.send("n0", "n1", "h", p, G.ORDERED) for p in (b"4", b"5")]
    assert net.run_until(lambda: all(n in net.nodes["n0"].acks for n in later), 5)
    assert got == [b"1", b"2", b"4", b"5"]
    assert net.nodes["n0"].acks[lost][0] is AckStatus.EXPIRED


def test_a_receiver_that_forgets_a_stream_gets_its_held_messages_again() -> None:
    net = cluster(3, seed=12, config=NodeConfig(inbound_streams_max_count=1))
    got = recorder(net.nodes["n1"])
    net.loss_rate = 1.0
    first = net.send("n0", "n1", "h", b"a1", G.ORDERED, ttl_s=5)  # lost, retried later
    net.loss_rate = 0.0
    second = net.send("n0", "n1", "h", b"a2", G.ORDERED, ttl_s=5)  # held behind a1
    net.run_for(0.005)
    net.send("n2", "n1", "h", b"c1", G.ORDERED)  # evicts n0's stream, and what it held
    assert net.run_until(lambda: {first, second} <= set(net.nodes["n0"].acks), 10)
    assert {net.nodes["n0"].acks[n][0] for n in (first, second)} == {AckStatus.DELIVERED}
    assert got == [b"c1", b"a1", b"a2"]


def test_a_forgotten_outbox_starts_a_new_numbering_the_receiver_follows() -> None:
    config = NodeConfig(members_max_count=3, left_member_expiry_s=0.5, removed_tombstone_s=0.5)
    net = cluster(3, seed=13, config=config)
    got = recorder(net.nodes["n1"])
    sender = net.nodes["n0"]
    for target in ("n1", "n2"):
        net.send("n0", target, "h", f"first-to-{target}".encode())
    net.run_for(1)
    for old, new in (("n2", "n3"), ("n3", "n4")):  # churn forgets n0's idle outbox to n1
        net.stop(old)
        assert net.run_until(lambda old=old: sender.core.member(old) is None, 30)
        net.add_node(new, seeds=[sender.core.address])
        assert net.run_until(lambda new=new: sender.core.member(new) is not None, 30)
        net.send("n0", new, "h", b"x")
        net.run_for(1)
    number = net.send("n0", "n1", "h", b"second-to-n1")
    assert net.run_until(lambda: number in sender.acks, 5)
    assert sender.acks[number][0] is AckStatus.DELIVERED
    assert got == [b"first-to-n1", b"second-to-n1"]


def test_a_subscription_covers_everything_after_the_publisher_confirmed_it() -> None:
    net = cluster(2, seed=14)
    net.run_for(0.5)
    net.subscribe("n1", "t")  # the publisher is already known: no heartbeat in between
    publisher = net.nodes["n0"]
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 1)
    net.block("n0", "n1")
    for i in (1, 2):  # lost, before any later publication or heartbeat reaches n1
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.heal()
    for i in range(3, 11):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.run_for(1)
    got = sorted(int(p) for _, t, p in net.nodes["n1"].delivered if t == "t")
    assert got == list(range(1, 11))
    assert net.nodes["n1"].losses == []


def test_a_lost_confirmation_is_asked_for_again_and_still_says_where_it_began() -> None:
    net = cluster(2, seed=15)
    net.run_for(0.5)
    net.block("n0", "n1")  # the publisher's answer to LISTEN is lost, and so are 1 and 2
    net.subscribe("n1", "t")
    publisher = net.nodes["n0"]
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 1)
    for i in (1, 2):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.heal()
    for i in range(3, 11):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.run_for(2)
    got = sorted(int(p) for _, t, p in net.nodes["n1"].delivered if t == "t")
    assert got == list(range(1, 11))
    assert net.nodes["n1"].losses == []


def test_a_graceful_stop_lets_running_handlers_finish_and_acknowledge() -> None:
    """Leaving is protocol in the core: the simulated network covers it like real sockets."""
    net = cluster(3, seed=21)
    net.handler_delay_s = 0.3  # each handler takes this long to return
    ran: list[bytes] = []
    net.nodes["n1"].handlers["work"] = lambda sender, payload: ran.append(payload)
    number = net.send("n0", "n1", "work", b"job", G.AT_LEAST_ONCE)
    assert net.run_until(lambda: ran == [b"job"], 2)
    net.stop("n1")  # while the handler has not returned yet
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 5)
    assert net.nodes["n0"].acks[number] == (AckStatus.DELIVERED, "")
    late = net.send("n0", "n1", "work", b"late", G.AT_LEAST_ONCE)
    assert net.run_until(lambda: late in net.nodes["n0"].acks, 5)
    assert net.nodes["n0"].acks[late][0] is AckStatus.FAILED
    assert ran == [b"job"]


@pytest.mark.parametrize("seed", range(5))
def test_a_prefix_subscriber_gets_each_matching_topic_repaired_and_no_other(seed: int) -> None:
    net = cluster(2, seed)
    net.subscribe_prefix("n1", "prices.")
    net.run_for(0.5)
    topics = ("prices.eur", "prices.usd", "news")
    for topic in topics:  # each topic's stream starts where the subscriber first sees it
        net.publish("n0", topic, f"{topic}:1".encode(), G.AT_LEAST_ONCE)
    net.run_for(0.2)
    net.loss_rate = 0.3
    for i in range(2, 61):
        for topic in topics:
            net.publish("n0", topic, f"{topic}:{i}".encode(), G.AT_LEAST_ONCE)
    net.stop("n0")  # its subscriber confirms holding every one it reads
    sub = net.nodes["n1"]
    for topic in ("prices.eur", "prices.usd"):
        got = {int(p.decode().split(":")[1]) for _, t, p in sub.delivered if t == topic}
        assert got == set(range(1, 61)), f"{topic}: seed={seed}"
    assert not [t for _, t, _ in sub.delivered if t == "news"]
    assert sub.losses == []
    report = net.nodes["n0"].app.drained
    assert report is not None and report.subscribers_confirmed == ("n1",), f"seed={seed}"
