"""The subscribing side of repaired fan-out: loss ranges, publisher lives, where a stream starts.

Unit and contract versions of the swarm findings give-up-past-the-cut, inverted-loss-range,
new-life-stream-forgotten, gone-peer-stream-recreated (publisher side) and
ordered-before-confirmed-start (tests/sim/test_swarm_findings.py).
"""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.core.publications import Publication
from zcluster.core.sequences import SeqSet
from zcluster.core.topics import PROVISIONAL_START_LISTEN_ROUNDS, Subscriptions
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee as G
from zcluster.protocol.members import Member, MemberStatus

PROPERTY = settings(max_examples=300, deadline=None, database=None)
CONFIG = NodeConfig()
WAIT_S = PROVISIONAL_START_LISTEN_ROUNDS * CONFIG.listen_retry_s


def item(seq: int, guarantee: G = G.AT_LEAST_ONCE) -> Publication:
    return (seq, guarantee, str(seq).encode())


def seqs(ready: list[Publication]) -> list[int]:
    return [seq for seq, _, _ in ready]


def losses(subs: Subscriptions) -> list[tuple[int, int]]:
    out = [(loss.first, loss.last) for loss in subs.losses]
    subs.losses.clear()
    return out


# ---------------------------------------------------------------- SeqSet.gaps


@PROPERTY
@given(
    st.integers(0, 20),
    st.sets(st.integers(1, 60)),
    st.sets(st.integers(0, 70)),
    st.integers(0, 70),
    st.integers(0, 80),
)
def test_property_gaps_are_exactly_the_missing_numbers_up_to_through(
    upto: int, above: set[int], held: set[int], through: int, budget: int
) -> None:
    present = SeqSet(upto)
    for seq in sorted(above):
        present.add(seq)
    have = set(range(1, upto + 1)) | above | held
    missing = [n for n in range(present.upto + 1, through + 1) if n not in have][:budget]
    ranges = present.gaps(through, budget, held)
    assert [n for a, b in ranges for n in range(a, b + 1)] == missing
    assert all(a <= b for a, b in ranges)
    assert all(b <= through for _, b in ranges)


def test_gaps_stop_at_through_whatever_is_held_above_it() -> None:
    present = SeqSet(1)
    present.add(3)
    present.add(4)
    assert present.gaps(3, 2, also_present=[6]) == [(2, 2)]
    assert present.gaps(3, 0, also_present=[6]) == []
    assert present.gaps(1, 5, also_present=[2, 6]) == []


# ---------------------------------------------------------------- loss reports


def test_a_holdback_overflow_gives_up_only_what_is_missing_below_the_cut() -> None:
    subs = Subscriptions(NodeConfig(topic_holdback_max_count=3), Counter())
    for seq in (1, 3, 4):
        subs.publication("p", 1, "t", item(seq), start_after=0)
    assert subs.publication("p", 1, "t", item(6, G.ORDERED), start_after=0) == []
    assert losses(subs) == [(2, 2)]  # 6 - 3 = 3 is the cut; 5 stays a gap to fetch
    assert subs.due_fetches(0.0) == [("p", "t", [(5, 5)])]


def test_a_repeated_lost_answer_reports_nothing_more() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    subs.publication("p", 1, "t", item(2), start_after=0)
    assert subs.lost("p", 1, "t", [(1, 1)]) == []
    assert losses(subs) == [(1, 1)]
    subs.publication("p", 1, "t", item(4, G.ORDERED), start_after=0)  # held behind 3
    assert subs.lost("p", 1, "t", [(1, 1)]) == []  # the answer to a repeated fetch
    assert losses(subs) == []
    assert seqs(subs.lost("p", 1, "t", [(3, 3)])) == [4]
    assert losses(subs) == [(3, 3)]


# ---------------------------------------------------------------- publisher lives


def test_forgetting_a_publisher_s_old_life_keeps_the_stream_of_its_new_one() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    subs.publication("p", 1, "old", item(1), start_after=0)
    subs.position("p", 1, "old", latest=3, start_after=0)
    assert seqs(subs.publication("p", 2, "t", item(1), start_after=0)) == [1]
    subs.forget_publisher("p", before=2)  # the membership news of the new life comes later
    assert losses(subs) == [(2, 3)]
    assert subs.stream("p", "old") is None
    stream = subs.stream("p", "t")
    assert stream is not None and stream.incarnation == 2 and stream.delivered.upto == 1
    subs.forget_publisher("p", before=3)  # the new life left
    assert subs.stream("p", "t") is None


def test_a_stream_replaced_by_a_new_life_hands_over_what_it_held() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    subs.publication("p", 1, "t", item(1, G.ORDERED), start_after=0)
    subs.publication("p", 1, "t", item(3, G.ORDERED), start_after=0)
    assert seqs(subs.publication("p", 2, "t", item(1), start_after=0)) == [1]
    assert losses(subs) == [(2, 2)]
    assert [(p, t, seqs(ready)) for p, _, t, ready in subs.released] == [("p", "t", [3])]


def peer(node_id: str, incarnation: int = 7, status: MemberStatus = MemberStatus.UP) -> Member:
    return Member(node_id, incarnation, 1, status, "10.0.0.2:7000", "10.0.0.2:7001")


def envelope(
    sender: Member, message: msg.Message, seq: int = 1, topic: str | None = None
) -> ev.EnvelopeReceived:
    envelope = msg.Envelope(sender.node_id, sender.incarnation, seq, message)
    return ev.EnvelopeReceived(envelope, str(message).encode(), topic)


def subscriber_of(publisher: Member, topic: str = "t", replay: bool = False) -> NodeCore:
    core = NodeCore("me", 1, "10.0.0.1:7000", "10.0.0.1:7001", config=CONFIG, rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    core.handle(envelope(publisher, msg.Sync((core.me, publisher), False, publisher.address)), 0.0)
    core.handle(ev.TopicSubscribed(topic, replay), 0.0)
    return core


def delivered(effects: list[fx.Effect]) -> list[bytes]:
    return [p for e in effects if isinstance(e, fx.DeliverPublications) for p in e.payloads]


def lost(effects: list[fx.Effect]) -> list[tuple[int, int]]:
    return [(e.first, e.last) for e in effects if isinstance(e, fx.PublicationsLost)]


def fetches(effects: list[fx.Effect]) -> list[tuple[tuple[int, int], ...]]:
    return [
        e.message.ranges
        for e in effects
        if isinstance(e, fx.Send) and isinstance(e.message, msg.Fetch)
    ]


def publish(seq: int, guarantee: G) -> msg.Publish:
    return msg.Publish(seq, guarantee)


def test_a_gone_publisher_life_starts_no_stream_again() -> None:
    a = peer("a")
    core = subscriber_of(a, replay=True)
    core.handle(envelope(a, publish(1, G.AT_LEAST_ONCE), seq=2, topic="t"), 0.1)
    left = Member("a", a.incarnation, 2, MemberStatus.LEFT, a.address, a.pub_address)
    effects = core.handle(envelope(left, msg.Heartbeat(left, (), "0" * 16, (("t", 1),)), 3), 0.2)
    effects += core.handle(ev.TurnEnded(), 0.2)
    assert core.subscriber.subscriptions.stream("a", "t") is None
    late = msg.Republish("t", 2, G.AT_LEAST_ONCE)
    effects += core.handle(envelope(a, late, seq=4), 0.3)
    effects += core.handle(envelope(a, msg.Listening((("t", 0),)), seq=5), 0.3)
    effects += core.handle(ev.TurnEnded(), 0.3)
    assert core.subscriber.subscriptions.stream("a", "t") is None
    assert delivered(effects) == [] and lost(effects) == [] and fetches(effects) == []
    assert core.counters["publications_stale_incarnation"] == 1


def test_a_late_publication_of_an_older_life_starts_no_stream() -> None:
    old = peer("a", incarnation=7)
    core = subscriber_of(old, replay=True)
    new = peer("a", incarnation=9)
    core.handle(envelope(new, msg.Heartbeat(new, (), "0" * 16, ()), seq=1), 0.1)
    effects = core.handle(envelope(old, publish(3, G.AT_LEAST_ONCE), seq=9, topic="t"), 0.2)
    effects += core.handle(ev.TurnEnded(), 0.2)
    assert delivered(effects) == [] and fetches(effects) == []
    assert core.subscriber.subscriptions.stream("a", "t") is None


def test_a_new_life_s_first_publication_is_kept_when_the_news_of_it_comes_later() -> None:
    old = peer("a", incarnation=7)
    core = subscriber_of(old, replay=True)
    new = peer("a", incarnation=9)
    effects = core.handle(envelope(new, publish(1, G.EXACTLY_ONCE), seq=5, topic="t"), 0.1)
    assert delivered(effects) == [str(publish(1, G.EXACTLY_ONCE)).encode()]
    heartbeat = msg.Heartbeat(new, (), "0" * 16, (("t", 1),))
    effects = core.handle(envelope(new, heartbeat, seq=6), 0.2)
    effects += core.handle(ev.TurnEnded(), 0.2)
    assert core.member("a") == new
    assert delivered(effects) == [] and fetches(effects) == [] and lost(effects) == []


# ---------------------------------------------------------------- where a stream starts


def test_an_ordered_publication_waits_for_the_confirmed_start() -> None:
    a = peer("a")
    core = subscriber_of(a)
    two = envelope(a, publish(2, G.ORDERED), seq=3, topic="t")
    assert delivered(core.handle(two, 0.1)) == []  # the start is only assumed (after 1)
    effects = core.handle(envelope(a, msg.Listening((("t", 0),)), seq=2), 0.15)
    effects += core.handle(ev.TurnEnded(), 0.15)
    assert delivered(effects) == [] and fetches(effects) == [((1, 1),)]
    effects = core.handle(envelope(a, msg.Republish("t", 1, G.AT_LEAST_ONCE), seq=4), 0.2)
    assert delivered(effects) == [
        str(msg.Republish("t", 1, G.AT_LEAST_ONCE)).encode(),
        str(publish(2, G.ORDERED)).encode(),
    ]


def test_a_confirmation_at_the_assumed_start_releases_what_waited() -> None:
    a = peer("a")
    core = subscriber_of(a)
    for seq in (2, 3):
        core.handle(envelope(a, publish(seq, G.ORDERED), seq=seq, topic="t"), 0.1)
    effects = core.handle(envelope(a, msg.Listening((("t", 1),)), seq=4), 0.2)
    assert len(delivered(effects)) == 2 and lost(effects) == []


def test_without_an_answer_the_assumed_start_becomes_final_after_the_wait() -> None:
    a = peer("a")
    core = subscriber_of(a)
    core.handle(envelope(a, publish(2, G.ORDERED), seq=3, topic="t"), 0.1)
    assert delivered(core.handle(ev.TimerFired(), 0.1 + WAIT_S - 0.01)) == []
    assert len(delivered(core.handle(ev.TimerFired(), 0.1 + WAIT_S + 0.01))) == 1
    three = envelope(a, publish(3, G.ORDERED), seq=4, topic="t")
    assert len(delivered(core.handle(three, 2.5))) == 1  # in order now, without waiting
    # A late answer adds 1, below ORDERED 2 and 3 that were delivered: lost for good.
    effects = core.handle(envelope(a, msg.Listening((("t", 0),)), seq=2), 3.0)
    effects += core.handle(ev.TurnEnded(), 3.0)
    assert lost(effects) == [(1, 1)] and fetches(effects) == [] and delivered(effects) == []


def test_a_late_answer_still_repairs_a_stream_that_delivered_no_ordered_publication() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    assert seqs(subs.publication("p", 1, "t", item(3), start_after=2, now=0.0)) == [3]
    assert subs.settle_starts(WAIT_S) == [("p", "t", [])]
    subs.subscription_began("p", 1, "t", 0)
    assert losses(subs) == []
    assert subs.due_fetches(10.0) == [("p", "t", [(1, 2)])]
    assert seqs(subs.publication("p", 1, "t", item(4, G.ORDERED), start_after=2)) == []
    subs.publication("p", 1, "t", item(1), start_after=2)
    assert seqs(subs.publication("p", 1, "t", item(2), start_after=2)) == [2, 4]


def test_a_stream_starting_at_zero_or_replayed_does_not_wait() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    assert seqs(subs.publication("p", 1, "t", item(1, G.ORDERED), start_after=0)) == [1]
    subs.replay_topics.add("r")
    assert seqs(subs.publication("p", 1, "r", item(1, G.ORDERED), start_after=4)) == [1]
    assert subs.settle_starts(100.0) == []
