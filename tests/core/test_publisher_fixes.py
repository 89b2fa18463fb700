"""Subscriptions as the publisher records them, and the LISTEN/LISTENING exchange.

A publisher keeps what a subscriber incarnation told it (its topics and their starts) for
as long as that incarnation, whatever it believes of it; it takes LISTENs in the order of
their header ``seq``; a subscriber says LISTEN again when a publisher wrote it off, and lists
its topics (no reset) to a publisher it removed that comes back in the same incarnation
(docs/protocol.md, sections 6.2 and 6.9.6).

Core tests feed one event at a time, as in test_contract.py; the last ones run the same
rules on the simulated network.
"""

from __future__ import annotations

import dataclasses
import random

from zcluster import DeliveryGuarantee as G
from zcluster import MemberStatus, NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.protocol import messages as msg
from zcluster.protocol.members import Member
from zcluster.testing.sim import SimNetwork, SimNode

CONFIG = NodeConfig()
ME = "me"


def peer(
    node_id: str, incarnation: int = 7, status: MemberStatus = MemberStatus.UP, version: int = 1
) -> Member:
    port = 7000 + 10 * (ord(node_id[-1]) - ord("a"))
    return Member(node_id, incarnation, version, status, f"10.0.0.2:{port}", f"10.0.0.2:{port + 1}")


def envelope(sender: Member, message: msg.Message, seq: int = 1) -> ev.EnvelopeReceived:
    return ev.EnvelopeReceived(msg.Envelope(sender.node_id, sender.incarnation, seq, message), b"")


def core_in(*peers: Member, config: NodeConfig = CONFIG) -> NodeCore:
    """A core that formed a cluster at time 0 and then heard of ``peers``."""
    core = NodeCore(ME, 1, "10.0.0.1:7000", "10.0.0.1:7001", config=config, rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    core.handle(envelope(peers[0], msg.Sync((core.me, *peers), False, peers[0].address)), 0.0)
    return core


def settle(core: NodeCore, now: float) -> None:
    """Let LISTENs heard ``listen_settle_s`` or more before ``now`` count (a tick)."""
    core.handle(ev.TimerFired(), now)


def heartbeat(sender: Member, *updates: Member) -> msg.Heartbeat:
    return msg.Heartbeat(sender, updates, "0" * 16, (), ())


def listenings(effects: list[fx.Effect]) -> list[tuple[str, tuple[msg.Position, ...]]]:
    return [
        (e.address, e.message.positions)
        for e in effects
        if isinstance(e, fx.Send) and isinstance(e.message, msg.Listening)
    ]


def listens(effects: list[fx.Effect]) -> list[tuple[str, ...]]:
    return [
        e.message.topics
        for e in effects
        if isinstance(e, fx.Send) and isinstance(e.message, msg.Listen)
    ]


def publish(core: NodeCore, topic: str, count: int, now: float) -> None:
    for _ in range(count):
        core.handle(ev.PublishRequested(topic, b"x", G.AT_LEAST_ONCE), now)


# ---------------------------------------------------------------- the publisher


def test_a_subscriber_held_down_keeps_its_topics_and_starts() -> None:
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    assert listenings(core.handle(envelope(a, msg.Listen(("t",)), seq=5), 0.1)) == [
        (a.address, (("t", 0),))
    ]
    publish(core, "t", 2, 0.2)
    settle(core, 0.2)
    down = dataclasses.replace(a, status=MemberStatus.DOWN)
    core.handle(envelope(b, msg.Sync((down,), False, b.address), seq=2), 0.3)
    assert core.member("a") == down
    assert core.subscribers("t") == frozenset()  # not live: not listed meanwhile
    refuted = dataclasses.replace(a, version=2)
    core.handle(envelope(a, heartbeat(refuted), seq=6), 0.4)
    assert core.subscribers("t") == {"a"}, "listed again without a new LISTEN"
    # The answer to the first LISTEN was lost: the repeated one gets the same start.
    assert listenings(core.handle(envelope(a, msg.Listen(("t",)), seq=7), 0.5)) == [
        (a.address, (("t", 0),))
    ]


def test_a_removed_and_purged_subscriber_that_comes_back_keeps_its_starts() -> None:
    config = NodeConfig(removed_tombstone_s=1.0)
    a, b = peer("a"), peer("b")
    core = core_in(a, b, config=config)
    core.handle(envelope(a, msg.Listen(("t",)), seq=5), 0.1)
    publish(core, "t", 3, 0.2)
    removed = dataclasses.replace(a, status=MemberStatus.REMOVED)
    core.handle(envelope(b, msg.Sync((removed,), False, b.address), seq=2), 0.3)
    core.handle(ev.TimerFired(), 1.5)
    assert core.member("a") is None, "the tombstone was not purged"
    # Taken back (a live record of a purged member), in the same incarnation.
    core.handle(envelope(a, heartbeat(dataclasses.replace(a, version=2)), seq=9), 1.6)
    assert core.subscribers("t") == {"a"}
    assert listenings(core.handle(envelope(a, msg.Listen(("t",)), seq=10), 1.7)) == [
        (a.address, (("t", 0),))
    ]


def test_a_new_incarnation_of_the_subscriber_starts_afresh() -> None:
    a = peer("a")
    core = core_in(a)
    core.handle(envelope(a, msg.Listen(("t",)), seq=5), 0.1)
    publish(core, "t", 2, 0.2)
    restarted = peer("a", incarnation=8, version=0, status=MemberStatus.JOINING)
    core.handle(envelope(restarted, msg.Sync((restarted,), True, restarted.address)), 0.3)
    assert core.subscribers("t") == frozenset()
    assert not listenings(core.handle(envelope(a, msg.Listen(("t",)), seq=6), 0.4)), "old life"
    assert listenings(core.handle(envelope(restarted, msg.Listen(("t",)), seq=2), 0.5)) == [
        (a.address, (("t", 2),))
    ]


def test_an_older_listen_arriving_late_is_ignored() -> None:
    a = peer("a")
    core = core_in(a)
    answered = core.handle(envelope(a, msg.Listen(("a", "b")), seq=12), 0.1)
    assert listenings(answered) == [(a.address, (("a", 0), ("b", 0)))]
    late = core.handle(envelope(a, msg.Listen(("a",)), seq=11), 0.2)
    assert listenings(late) == [], "an older LISTEN is not answered"
    settle(core, 0.2)
    assert core.subscribers("b") == {"a"}
    assert core.counters["listens_out_of_order"] == 1
    # A copy of the last one (or a peer that does not number its messages) is taken.
    assert listenings(core.handle(envelope(a, msg.Listen(("a", "b")), seq=12), 0.3))
    newer = core.handle(envelope(a, msg.Listen(("a",)), seq=13), 0.4)
    assert listenings(newer) == [(a.address, (("a", 0),))]
    assert core.subscribers("b") == frozenset()


def test_an_empty_listen_ends_every_subscription_and_the_next_one_starts_afresh() -> None:
    a = peer("a")
    core = core_in(a)
    core.handle(envelope(a, msg.Listen(("t",)), seq=5), 0.1)
    publish(core, "t", 4, 0.2)
    settle(core, 0.2)
    assert listenings(core.handle(envelope(a, msg.Listen(()), seq=8), 0.3)) == [(a.address, ())]
    assert core.subscribers("t") == frozenset() and core.listeners() == {"a"}
    assert listenings(core.handle(envelope(a, msg.Listen(("t",)), seq=9), 0.4)) == [
        (a.address, (("t", 4),))
    ]


# ---------------------------------------------------------------- the subscriber


def subscribed_to(a: Member, *others: Member) -> NodeCore:
    """A core reading topic ``t`` whose LISTEN ``a`` has answered."""
    core = core_in(a, *others)
    core.handle(ev.TopicSubscribed("t"), 0.0)
    assert listens(core.handle(envelope(a, heartbeat(a), seq=2), 0.1)) == [("t",)]
    core.handle(envelope(a, msg.Listening((("t", 0),)), seq=3), 0.11)
    return core


def test_a_subscriber_listens_again_when_the_publisher_holds_it_down() -> None:
    a = peer("a")
    core = subscribed_to(a)
    assert listens(core.handle(envelope(a, heartbeat(a), seq=4), 0.3)) == []
    me_down = dataclasses.replace(core.me, status=MemberStatus.DOWN)
    again = core.handle(envelope(a, heartbeat(a, me_down), seq=5), 0.5)
    assert listens(again) == [("t",)]
    retried = core.handle(ev.TimerFired(), 0.5 + CONFIG.listen_retry_s + 0.01)
    assert listens(retried) == [("t",)], "repeated until answered"
    suspect = dataclasses.replace(core.me, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Listening((("t", 0),)), seq=6), 1.1)
    assert listens(core.handle(envelope(a, heartbeat(a, suspect), seq=7), 1.2)) == []


def test_a_subscriber_lists_its_topics_to_a_publisher_it_removed_that_comes_back() -> None:
    # No LISTEN [] first: the publisher keeps the starts it gave (and counted us a subscriber
    # since), so a stream we never had must start there, not at a new start.
    a, b = peer("a"), peer("b")
    core = subscribed_to(a, b)
    removed = dataclasses.replace(a, status=MemberStatus.REMOVED)
    core.handle(envelope(b, msg.Sync((removed,), False, b.address), seq=2), 0.2)
    back = dataclasses.replace(a, version=2)  # it refuted: same incarnation
    assert listens(core.handle(envelope(a, heartbeat(back), seq=10), 0.3)) == [("t",)]
    core.handle(envelope(a, msg.Listening((("t", 0),)), seq=11), 0.31)
    later = core.handle(ev.TimerFired(), 0.3 + 2 * CONFIG.listen_retry_s)
    assert listens(later) == [], "answered: nothing more"


def test_no_reset_for_a_publisher_that_left_or_restarted() -> None:
    a, b = peer("a"), peer("b")
    core = subscribed_to(a, b)
    left = dataclasses.replace(a, version=2, status=MemberStatus.LEFT)
    core.handle(envelope(a, msg.Sync((left,), False, a.address), seq=4), 0.2)
    gone = dataclasses.replace(left, status=MemberStatus.REMOVED)
    core.handle(envelope(b, msg.Sync((gone,), False, b.address), seq=2), 0.3)
    restarted = peer("a", incarnation=8)
    assert listens(core.handle(envelope(restarted, heartbeat(restarted), seq=1), 0.4)) == [("t",)]
    c = peer("c")
    core = subscribed_to(c, b)
    removed = dataclasses.replace(c, status=MemberStatus.REMOVED)
    core.handle(envelope(b, msg.Sync((removed,), False, b.address), seq=2), 0.2)
    restarted = peer("c", incarnation=8)  # a new life holds nothing of ours
    assert listens(core.handle(envelope(restarted, heartbeat(restarted), seq=1), 0.3)) == [("t",)]


# ---------------------------------------------------------------- on the simulated network


def cluster(size: int, seed: int, config: NodeConfig) -> SimNetwork:
    net = SimNetwork(seed, config=config, jitter_s=0.0)
    first = net.add_node("n0")
    for i in range(1, size):
        net.add_node(f"n{i}", seeds=[first.core.address])
    assert net.run_until(
        lambda: (
            net.views_agree()
            and all(
                len(n.members()) == size and all(m.status is MemberStatus.UP for m in n.members())
                for n in net.live()
            )
        ),
        10,
    )
    return net


def delivered(node: SimNode, topic: str = "t") -> list[int]:
    return [int(payload) for _, name, payload in node.delivered if name == topic]


def test_a_publisher_that_removed_and_purged_a_live_subscriber_lists_it_again() -> None:
    config = NodeConfig(down_member_expiry_s=1.0, removed_tombstone_s=1.0)
    net = cluster(2, 201, config)
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 2)
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)
    net.block("n1", "n0")  # n0 no longer hears n1, which still hears n0
    assert net.run_until(lambda: publisher.member("n1") is None, 15), "never purged"
    net.publish("n0", "t", b"2", G.AT_LEAST_ONCE)
    net.heal()
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 10)
    net.publish("n0", "t", b"3", G.AT_LEAST_ONCE)
    net.run_for(2)
    assert delivered(sub) == [1, 2, 3] and not sub.losses


def test_a_subscriber_that_removed_its_publisher_starts_a_new_subscription_there() -> None:
    config = NodeConfig(down_member_expiry_s=1.0)
    net = cluster(2, 202, config)
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 2)
    for i in (1, 2):
        net.publish("n0", "t", str(i).encode(), G.EXACTLY_ONCE)
    net.run_for(0.1)
    net.block("n0", "n1")  # n1 no longer hears n0
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.REMOVED, 10)
    net.heal()
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.UP, 10)
    net.run_for(1)
    assert "n1" in publisher.core.subscribers("t")
    net.publish("n0", "t", b"3", G.EXACTLY_ONCE)
    net.run_for(2)
    assert delivered(sub) == [1, 2, 3] and not sub.losses
