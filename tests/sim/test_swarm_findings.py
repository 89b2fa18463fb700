"""Protocol bugs found by the swarm (tests/sim/test_swarm.py), each reduced to a small,
deterministic scenario on the simulated network; kept as regression tests.

Each test states the promise (docs/delivery.md, docs/architecture.md), the bug the
swarm found, and checks the promise. A bug still open is marked
``xfail(strict=True, raises=KnownBug)``: its fix turns the test into an unexpected
pass, which fails the run until the mark is removed (and the matching tolerance in
test_swarm.KNOWN_BUGS with it). A broken precondition raises a plain AssertionError,
which that mark does not absorb.
"""

from __future__ import annotations

import dataclasses

import pytest

from tests.helpers import exactly_once_copy_after_forgetting, sim_cluster
from zcluster import AckStatus, MemberStatus, NodeConfig
from zcluster import DeliveryGuarantee as G
from zcluster.protocol.capabilities import FIELDS
from zcluster.testing import LinkConditions
from zcluster.testing.sim import SimNetwork, SimNode


class KnownBug(AssertionError):
    """The promise a known bug breaks (the precondition held)."""


def known_bug(reason: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, raises=KnownBug, reason=reason)


def cluster(size: int, seed: int, config: NodeConfig) -> SimNetwork:
    return sim_cluster(size, seed, config, jitter_s=0.0)


def heartbeat_cluster(size: int, seed: int, config: NodeConfig) -> SimNetwork:
    """Nodes of revision 1.1: they heartbeat to everyone, so a node that cannot hear another
    is still heard by it, and only one side declares the other down. (Between nodes that speak
    swim, a member that gets no answers declares down, and is declared down, both ways.)"""
    return sim_cluster(size, seed, config, capabilities=(FIELDS,), jitter_s=0.0)


def publications(node: SimNode, topic: str = "t") -> list[int]:
    return [int(payload) for _, name, payload in node.delivered if name == topic]


def losses(node: SimNode) -> list[tuple[int, int]]:
    return [(loss.first, loss.last) for loss in node.losses]


def test_a_holdback_overflow_reports_only_missing_publications_below_the_cut() -> None:
    """Promise: a loss report names exactly the publications that are lost for good.

    Found by the swarm: ``Subscriptions._give_up(first, last)`` asks ``SeqSet.gaps(last, budget,
    held)``, which filters the numbers present above the prefix by ``last`` but not the held
    ones: with an ORDERED publication held above ``last`` it walks past ``last``, and numbers
    above it, delivered ones included, are reported lost (and marked done).
    """
    net = cluster(2, 101, NodeConfig(topic_holdback_max_count=3))
    sub = net.nodes["n1"]
    net.subscribe("n1", "t")
    net.run_for(0.5)
    net.block("n1", "n0")  # fetches never reach the publisher: gaps stay open

    def lose(number: int) -> None:
        net.block("n0", "n1")
        net.publish("n0", "t", str(number).encode(), G.AT_LEAST_ONCE)
        net.heal()
        net.block("n1", "n0")

    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)
    lose(2)
    net.publish("n0", "t", b"3", G.AT_LEAST_ONCE)
    net.publish("n0", "t", b"4", G.AT_LEAST_ONCE)
    lose(5)
    net.run_for(0.01)
    assert publications(sub) == [1, 3, 4] and losses(sub) == []
    # 6 is held back behind 2 and 5: 6 - 1 > 3, so the oldest part of the gap, up to
    # 6 - 3 = 3, is given up: only 2 is missing there.
    net.publish("n0", "t", b"6", G.ORDERED)
    net.run_for(0.01)
    assert losses(sub) == [(2, 2)], f"delivered {publications(sub)}, lost {losses(sub)}"


def test_a_repeated_lost_answer_reports_nothing_more() -> None:
    """Promise: a loss report is a range of lost publications (PublicationLoss.count >= 1).

    Found by the swarm: A fetch sent again before the first answer came back gets a second LOST
    answer for numbers already given up; ``_give_up`` then calls ``SeqSet.gaps`` with a budget
    of 0, which, with a publication held back, returns ``(upto + 1, upto)``: the subscriber is
    told ``PublicationsLost(first=upto + 1, last=upto)``.
    """
    net = cluster(2, 108, NodeConfig(retransmit_buffer_count=2, fetch_retry_s=0.05))
    sub = net.nodes["n1"]
    net.subscribe("n1", "t")
    net.run_for(0.5)
    slow_fetches = {(net.index_of["n1"], net.index_of["n0"]): LinkConditions(latency=0.1)}
    net.set_conditions(dataclasses.replace(net.conditions, links=slow_fetches))
    net.block("n0", "n1")
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)
    net.heal()
    net.publish("n0", "t", b"2", G.AT_LEAST_ONCE)
    net.publish("n0", "t", b"3", G.AT_LEAST_ONCE)  # 1 is fetched, again at the next tick
    assert net.run_until(lambda: losses(sub) == [(1, 1)], 0.2)  # the first answer: LOST
    net.block("n0", "n1")
    net.publish("n0", "t", b"4", G.AT_LEAST_ONCE)
    net.heal()
    net.publish("n0", "t", b"5", G.ORDERED)  # held back behind 4 while 4 is fetched
    net.run_for(0.5)
    assert publications(sub) == [2, 3, 4, 5]
    assert losses(sub) == [(1, 1)], f"reported lost {losses(sub)}"


def test_a_restarted_publisher_s_first_publications_are_delivered_once() -> None:
    """Promise: a guaranteed publication reaches a subscriber at most once.

    Found by the swarm: When a subscriber merges a publisher's new incarnation it forgets every
    stream of that publisher (``Subscriber.member_changed`` -> ``forget_publisher``), also the
    one it had already started for the new incarnation from a publication that arrived before
    the membership news. The stream then starts again (here from 0, with replay) and what was
    delivered is fetched and delivered again.
    """
    net = cluster(2, 102, NodeConfig())
    sub = net.nodes["n1"]
    net.subscribe("n1", "t", replay=True)
    net.run_for(0.5)
    net.publish("n0", "t", b"1", G.EXACTLY_ONCE)
    net.run_for(0.1)
    before = net.nodes["n0"].member("n0")
    assert before is not None
    old = before.incarnation
    net.crash("n0")
    net.block("n0", "n1")  # n1 hears nothing of the new incarnation (still joining) ...
    net.add_node("n0", seeds=[sub.core.address])
    net.run_for(0.3)
    net.heal()  # ... until its first publication, which overtakes its next heartbeat
    net.publish("n0", "t", b"101", G.EXACTLY_ONCE)
    net.run_for(0.002)
    seen = sub.member("n0")
    assert seen is not None and seen.incarnation == old, "n1 learnt of the restart first"
    assert publications(sub) == [1, 101]
    net.run_for(3)
    assert publications(sub) == [1, 101], f"delivered {publications(sub)}"


def test_a_retransmission_from_a_sender_that_left_does_not_run_again() -> None:
    """Promise: ORDERED handlers run in sending order, without duplicates (within one receiver
    incarnation).

    Found by the swarm: The receiver forgets a sender's stream when the sender is LEFT or
    REMOVED (``Reliable.member_changed`` -> ``DirectReceiver.forget``), but DATA of that same
    incarnation still arriving afterwards (here the retransmission sent in the same tick as the
    LEFT announcement) is accepted and starts a new stream, which runs the message again.
    """
    config = NodeConfig(retry_initial_s=0.02, retry_max_s=0.05, drain_timeout_s=0.05)
    net = cluster(2, 103, config)
    runs: list[bytes] = []
    net.nodes["n1"].handlers["h"] = lambda sender, payload: runs.append(payload)
    net.block("n1", "n0")  # acknowledgements are lost: n0 resends every tick
    net.send("n0", "n1", "h", b"m1", G.ORDERED, ttl_s=30)
    net.run_for(0.3)
    assert runs == [b"m1"]
    net.stop("n0")  # its LEFT, then a retransmission in the same tick
    net.run_for(0.1)
    assert net.nodes["n1"].view()["n0"] is MemberStatus.LEFT
    assert runs == [b"m1"], f"the handler ran {runs}"


def test_a_publisher_that_left_causes_no_loss_report_for_delivered_publications() -> None:
    """Promise: a loss report never names a publication that was delivered.

    Found by the swarm: On LEFT the subscriber forgets the publisher's streams, but the same
    heartbeat (or a later one of the same incarnation) carries topic positions, and
    ``Subscriber._rx_heartbeat`` starts a new stream from them without looking at the sender's
    status; with replay it starts at 0, so when the member is removed every publication, all
    delivered, is reported lost.
    """
    net = cluster(2, 104, NodeConfig(left_member_expiry_s=1.0))
    sub = net.nodes["n1"]
    net.subscribe("n1", "t", replay=True)
    net.run_for(0.5)
    for i in range(1, 5):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    net.run_for(0.1)
    assert publications(sub) == [1, 2, 3, 4]
    net.stop("n0")
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.REMOVED, 5)
    net.run_for(0.1)
    assert not losses(sub), f"delivered {publications(sub)}, lost {losses(sub)}"


def test_a_publisher_removed_by_its_subscriber_alone_is_not_replayed_to_it() -> None:
    """Promise: a guaranteed publication reaches a subscriber at most once.

    Found by the swarm: A subscriber that cannot hear a publisher removes it and forgets its
    streams. The publisher, which still hears the subscriber, keeps the start it confirmed, and
    answers the next LISTEN with it: the new stream starts there, so everything since the
    subscription began is fetched and delivered a second time (or, beyond the buffer, reported
    lost although delivered; and what was published while the subscriber was cut off and it
    never heard of is skipped silently).
    """
    config = NodeConfig(down_member_expiry_s=2.0)
    net = heartbeat_cluster(2, 105, config)
    sub = net.nodes["n1"]
    net.subscribe("n1", "t")
    net.run_for(0.5)
    for i in range(1, 4):
        net.publish("n0", "t", str(i).encode(), G.EXACTLY_ONCE)
    net.run_for(0.1)
    assert publications(sub) == [1, 2, 3]
    net.block("n0", "n1")  # n1 no longer hears n0; n0 still hears n1
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.REMOVED, 10)
    assert net.nodes["n0"].view()["n1"] is MemberStatus.UP
    net.heal()
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.UP, 10)
    net.run_for(3)
    assert publications(sub) == [1, 2, 3], f"delivered {publications(sub)}, lost {losses(sub)}"


def test_publications_sent_into_a_long_partition_are_delivered_or_reported_lost() -> None:
    """Promise: a subscription covers everything published after the publisher confirmed it;
    each such publication is delivered or reported lost ("nothing is dropped silently").

    Found by the swarm: Publications made during a partition, while the subscriber is still
    confirmed (the publisher has not noticed yet), reach neither side's view of the gap: the
    subscriber removes the publisher (down_member_expiry_s) and forgets its stream, which knew
    nothing of them; after the heal the publisher answers the new LISTEN with its current
    position, so they are skipped silently, although they are still in the publisher's buffer.
    Fixed: a stream closed on REMOVED leaves where it stopped, and a stream of the same
    publisher incarnation resumes there (topics.Subscriptions).
    """
    config = NodeConfig(down_member_expiry_s=2.0, seed_contact_interval_s=5.0)
    net = cluster(2, 113, config)
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 2)
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)
    net.run_for(0.1)
    net.partition(["n0"], ["n1"])
    for i in (2, 3):
        assert "n1" in publisher.core.subscribers("t")  # still a confirmed subscriber
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)
    assert net.run_until(lambda: sub.view().get("n0") in (None, MemberStatus.REMOVED), 10)
    net.heal()

    def back() -> bool:
        return sub.view().get("n0") is MemberStatus.UP and "n1" in publisher.core.subscribers("t")

    assert net.run_until(back, 20)
    net.publish("n0", "t", b"4", G.AT_LEAST_ONCE)
    net.run_for(3)
    assert 4 in publications(sub)
    missing = [i for i in (2, 3) if i not in publications(sub)]
    if any(not any(a <= i <= b for a, b in losses(sub)) for i in missing):
        raise AssertionError(f"delivered {publications(sub)}, reported lost {losses(sub)}")


def test_a_subscriber_is_listed_again_after_a_false_down_at_its_publisher() -> None:
    """Promise (docs/architecture.md, "Who receives my publications?"): ``subscribers(topic)``
    lists the live members that receive our publications on ``topic``.

    ``Publisher.member_changed`` forgets a subscriber's topics when it is not live, but
    the subscriber says LISTEN only on the first heartbeat of a publisher incarnation or
    after it saw the publisher not live; one that never saw the publisher down never
    says it again.
    """
    net = heartbeat_cluster(2, 106, NodeConfig())
    publisher = net.nodes["n0"]
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 2)
    net.block("n1", "n0")  # n0 no longer hears n1: it declares it down
    assert net.run_until(lambda: publisher.view()["n1"] is MemberStatus.DOWN, 10)
    assert net.nodes["n1"].view()["n0"] is MemberStatus.UP
    net.heal()
    assert net.run_until(lambda: publisher.view()["n1"] is MemberStatus.UP, 5)
    net.run_for(10)
    assert "n1" in publisher.core.subscribers("t"), set(publisher.core.subscribers("t"))


def test_publications_to_a_confirmed_subscriber_are_not_skipped_after_a_partition() -> None:
    """Promise: a subscription covers everything published after the publisher confirmed it;
    each such publication is delivered or reported lost.

    Found by the swarm: The publisher forgets where the subscription began when it declares the
    subscriber down; when the subscriber, which never got the first LISTENING answer, asks
    again, the answer is the current position, and what was published to the confirmed
    subscriber in between is neither delivered nor reported lost.
    """
    net = cluster(2, 109, NodeConfig())
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    net.run_for(0.5)
    net.block("n0", "n1")  # the answer to LISTEN is lost
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 1)
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)  # n1 is a confirmed subscriber
    net.partition(["n0"], ["n1"])
    assert net.run_until(lambda: publisher.view()["n1"] is MemberStatus.DOWN, 10)
    assert net.run_until(lambda: sub.view()["n0"] is MemberStatus.DOWN, 10)
    net.heal()
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 10)
    net.publish("n0", "t", b"2", G.AT_LEAST_ONCE)
    net.run_for(3)
    assert 2 in publications(sub)
    delivered_or_lost = 1 in publications(sub) or (1, 1) in losses(sub)
    assert delivered_or_lost, f"delivered {publications(sub)}, lost {losses(sub)}"


def test_publications_to_a_confirmed_subscriber_are_not_skipped_after_it_removed_them() -> None:
    """Promise: a subscription covers everything published after the publisher confirmed it;
    each such publication is delivered or reported lost.

    Found by the swarm (seeds 11265, 12131, 12216, 12903): a subscriber that removed a live
    publisher before it ever got the LISTENING answer had no stream of it to resume; it reset
    the subscription (LISTEN []) when the publisher came back, so the new start was the current
    position, and what was published to it in between was neither delivered nor reported lost.
    """
    net = heartbeat_cluster(2, 110, NodeConfig(down_member_expiry_s=1.0))
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    net.run_for(0.5)
    net.block("n0", "n1")  # the answer to LISTEN is lost, and n1 no longer hears n0
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 1)
    for i in (1, 2):
        net.publish("n0", "t", str(i).encode(), G.AT_LEAST_ONCE)  # n1 is confirmed
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.REMOVED, 10)
    assert publisher.core.subscribers("t") == {"n1"}, "n0 held n1 up all along"
    net.heal()
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.UP, 10)
    net.publish("n0", "t", b"3", G.AT_LEAST_ONCE)
    net.run_for(3)
    got = sorted(set(publications(sub)))
    assert got == [1, 2, 3] and not losses(sub), f"delivered {got}, lost {losses(sub)}"


def test_a_late_older_listen_does_not_undo_a_newer_one() -> None:
    """Promise: ``subscribers(topic)`` lists the live members that receive ``topic``.

    Found by the swarm: LISTEN carries no order: ``Publisher._rx_listen`` replaces the
    subscriber's topics with whatever LISTEN arrives last. An older LISTEN (fewer topics)
    arriving after a newer one undoes it, and the newer one was already answered, so it is not
    repeated.
    """
    net = cluster(2, 110, NodeConfig())
    publisher = net.nodes["n0"]
    assert net.run_until(lambda: "n1" in publisher.core.listeners(), 2)  # LISTEN answered
    slow = {(net.index_of["n1"], net.index_of["n0"]): LinkConditions(latency=0.2)}
    net.set_conditions(dataclasses.replace(net.conditions, links=slow))
    net.subscribe("n1", "a")  # LISTEN [a], slowly
    net.set_conditions(dataclasses.replace(net.conditions, links={}))
    net.subscribe("n1", "b")  # LISTEN [a, b], answered before LISTEN [a] arrives
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("b"), 0.2)
    net.run_for(3)
    assert "n1" in publisher.core.subscribers("a")
    assert "n1" in publisher.core.subscribers("b"), "n1 is no longer listed for 'b'"


def test_an_ordered_publication_waits_for_the_confirmed_start() -> None:
    """Promise: ORDERED publications are delivered in publishing order per publisher and topic.

    Found by the swarm: A stream starts provisionally at the first publication (or heartbeat
    position) seen, until the LISTENING answer says where the subscription began. An ORDERED
    publication is delivered on the provisional start; the earlier ones the answer then adds
    (``TopicStream.start_earlier``) are fetched and delivered after it.
    """
    net = cluster(2, 111, NodeConfig())
    sub = net.nodes["n1"]
    net.run_for(0.5)
    slow = {(net.index_of["n0"], net.index_of["n1"]): LinkConditions(latency=0.2)}
    net.set_conditions(dataclasses.replace(net.conditions, links=slow))
    net.subscribe("n1", "t")
    net.run_for(0.12)  # the publisher confirmed the subscription; its answer is slow
    assert "n1" in net.nodes["n0"].core.subscribers("t")
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)  # slow too
    net.set_conditions(dataclasses.replace(net.conditions, links={}))
    net.publish("n0", "t", b"2", G.ORDERED)  # overtakes both
    net.run_for(1)
    assert sorted(publications(sub)) == [1, 2] and losses(sub) == []
    assert publications(sub) == [1, 2], f"delivered {publications(sub)}"


def test_exactly_once_holds_when_a_late_copy_outlives_the_duplicate_window() -> None:
    """Promise: EXACTLY_ONCE runs the handler at most once per message, even when the receiver
    forgot the stream (docs/delivery.md); ``message_ttl_s <= dedup_window_s`` is enforced for
    that.

    Found by the swarm: The window counts from the first copy's arrival, but a copy sent just
    before the ttl arrives up to one network delay later (and ``Reliable.tick`` sends due
    retries before it expires messages, so a copy can even leave up to one tick after the ttl).
    A receiver that forgot the stream then runs the handler again.
    """
    # The last copies, sent before the ttl, arrive after the window.
    net, runs, number = exactly_once_copy_after_forgetting(112, transit_s=0.3)
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 1)
    net.run_for(0.5)
    assert runs == [b"x"], f"the handler ran {runs}"


def test_an_exactly_once_failure_stays_failed_after_the_receiver_forgot_the_stream() -> None:
    """Promise: DELIVERED means the handler returned; a handler that raised gives FAILED with
    its reason.

    Found by the swarm: When the receiver forgot the stream, a retransmission is recognised by
    the duplicate window, which keeps ids, not outcomes: ``DirectReceiver.receive`` acknowledges
    it as finished without error.
    """
    config = NodeConfig(inbound_streams_max_count=1)
    net = cluster(3, 107, config)
    receiver = net.nodes["n1"]

    def refuse(sender: str, payload: bytes) -> None:
        raise ValueError("refused")

    receiver.handlers["h"] = refuse
    receiver.handlers["ok"] = lambda sender, payload: None
    net.block("n1", "n0")  # the FAILED outcome never reaches n0: it resends
    number = net.send("n0", "n1", "h", b"x", G.EXACTLY_ONCE, ttl_s=20)
    net.run_for(0.05)
    assert receiver.stats().get("reliable_handler_failures") == 1
    net.send("n2", "n1", "ok", b"y", G.AT_LEAST_ONCE)  # n1 forgets n0's stream
    net.run_for(0.05)
    assert receiver.stats().get("reliable_streams_evicted") == 1
    net.heal()
    assert net.run_until(lambda: number in net.nodes["n0"].acks, 10)
    status, reason = net.nodes["n0"].acks[number]
    assert receiver.stats().get("reliable_handler_failures") == 1  # it did not run again
    assert status is AckStatus.FAILED, f"ended {status.name} {reason!r}; its handler raised"


def test_a_resumed_stream_takes_the_start_its_publisher_never_got_to_confirm() -> None:
    """Promise: a subscription covers everything published after the publisher confirmed it;
    each such publication is delivered or reported lost.

    Found by the swarm (seed 12308): the answer to LISTEN was lost, and the subscriber's
    stream started provisionally at the number a position beacon announced, after the first
    publication it had missed. It removed the publisher before any repeated LISTEN got
    through; the stream that resumed when the publisher came back was settled where the old
    one stopped, and took the confirmed, earlier start as nothing: the first publication was
    neither delivered nor reported lost. Fixed: only a confirmed start is final for a
    resumed stream (topics.Subscriptions).
    """
    net = cluster(2, 112, NodeConfig(down_member_expiry_s=1.0, removed_tombstone_s=1.0))
    publisher, sub = net.nodes["n0"], net.nodes["n1"]
    assert net.run_until(lambda: "n1" in publisher.core.listeners(), 2)
    net.block("n0", "n1")  # the answer to LISTEN is lost, and so is the first publication
    net.subscribe("n1", "t")
    assert net.run_until(lambda: "n1" in publisher.core.subscribers("t"), 1)
    net.publish("n0", "t", b"1", G.AT_LEAST_ONCE)  # n1 is a confirmed subscriber
    net.run_for(0.05)
    net.heal()
    net.block("n1", "n0")  # no LISTEN gets through again; beacons and publications do
    stream = sub.core.subscriber.subscriptions.stream
    assert net.run_until(lambda: stream("n0", "t") is not None, 1)  # from a beacon: at 1
    net.publish("n0", "t", b"2", G.AT_LEAST_ONCE)
    assert net.run_until(lambda: publications(sub) == [2], 1), publications(sub)
    net.partition(["n0"], ["n1"])
    assert net.run_until(lambda: sub.view().get("n0") in (MemberStatus.REMOVED, None), 10)
    net.heal()
    assert net.run_until(lambda: sub.view().get("n0") is MemberStatus.UP, 10)
    net.run_for(3)
    got = sorted(set(publications(sub)))
    assert got == [1, 2] or (1, 1) in losses(sub), f"delivered {got}, lost {losses(sub)}"
