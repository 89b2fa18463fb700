"""Numbered publications read on the driver's fast path (``PublicationsReceived``) are
taken in runs; whatever the batches, the subscriber decides exactly as it does for
one envelope per publication: the same deliveries in the same order, the same losses
and the same fetches."""

from __future__ import annotations

import itertools
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee as G
from zcluster.protocol.members import Member, MemberStatus

CONFIG = NodeConfig(topic_holdback_max_count=16)
TOPICS = ("t", "u")
PUBLISHERS = (
    Member("a", 7, 1, MemberStatus.UP, "10.0.0.2:7000", "10.0.0.2:7001"),
    Member("b", 3, 1, MemberStatus.UP, "10.0.0.3:7000", "10.0.0.3:7001"),
)

Arrival = tuple[int, str, int, G]  # (publisher index, topic, number, guarantee)


def subscriber(replay: bool) -> NodeCore:
    core = NodeCore("me", 1, "10.0.0.1:7000", "10.0.0.1:7001", config=CONFIG, rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    for publisher in PUBLISHERS:
        sync = msg.Sync((core.me, publisher), False, publisher.address)
        core.handle(ev.EnvelopeReceived(msg.Envelope(publisher.node_id, 7, 1, sync), b""), 0.0)
    core.handle(ev.TopicSubscribed("t", replay), 0.0)
    core.handle(ev.TopicSubscribed("u", replay), 0.0)
    return core


def outcome(effects: list[fx.Effect]) -> list[tuple[object, ...]]:
    """What the application and the publishers see, publication by publication."""
    out: list[tuple[object, ...]] = []
    for effect in effects:
        if isinstance(effect, fx.DeliverPublications):
            out.extend(("deliver", effect.sender, effect.topic, p) for p in effect.payloads)
        elif isinstance(effect, fx.PublicationsLost):
            out.append(("lost", effect.publisher, effect.topic, effect.first, effect.last))
        elif isinstance(effect, fx.Send) and isinstance(effect.message, msg.Fetch):
            out.append(("fetch", effect.address, effect.message.topic, effect.message.ranges))
    return out


def payload(arrival: Arrival) -> bytes:
    index, topic, seq, _ = arrival
    return f"{index}/{topic}/{seq}".encode()


def batches(arrivals: list[Arrival], cuts: list[int]) -> list[tuple[int, int]]:
    bounds = sorted({0, len(arrivals), *(c for c in cuts if c < len(arrivals))})
    return list(itertools.pairwise(bounds))


def one_by_one(arrivals: list[Arrival], cuts: list[int], replay: bool) -> list[tuple[object, ...]]:
    """One envelope per publication; the loop's turn ends where a batch would."""
    core = subscriber(replay)
    out: list[tuple[object, ...]] = []
    for start, stop in batches(arrivals, cuts):
        for n, arrival in enumerate(arrivals[start:stop], start):
            index, topic, seq, guarantee = arrival
            publisher = PUBLISHERS[index]
            publish = msg.Publish(seq, guarantee)
            envelope = msg.Envelope(publisher.node_id, publisher.incarnation, 100 + n, publish)
            received = ev.EnvelopeReceived(envelope, payload(arrival), topic)
            out += outcome(core.handle(received, 1.0))
        out += outcome(core.handle(ev.TurnEnded(), 1.0))
    return out


def in_batches(arrivals: list[Arrival], cuts: list[int], replay: bool) -> list[tuple[object, ...]]:
    core = subscriber(replay)
    out: list[tuple[object, ...]] = []
    for start, stop in batches(arrivals, cuts):
        numbered = [
            (PUBLISHERS[i].node_id, PUBLISHERS[i].incarnation, topic, seq, guarantee, payload(a))
            for a in arrivals[start:stop]
            for i, topic, seq, guarantee in (a,)
        ]
        senders = tuple(dict.fromkeys((p[0], p[1]) for p in numbered).items())
        out += outcome(core.handle(ev.PublicationsReceived(senders, 0, numbered), 1.0))
        out += outcome(core.handle(ev.TurnEnded(), 1.0))
    return out


@st.composite
def _arrivals(draw: st.DrawFn) -> list[Arrival]:
    """Mostly each stream's next number (runs), with repeats, gaps and reordering."""
    out: list[Arrival] = []
    latest: dict[tuple[int, str], int] = {}
    for _ in range(draw(st.integers(0, 60))):
        index, topic = draw(st.integers(0, 1)), draw(st.sampled_from(TOPICS))
        step = draw(st.sampled_from([1, 1, 1, 1, 1, 0, 2, 3, -2, -5]))
        seq = max(1, latest.get((index, topic), 0) + step)
        latest[index, topic] = max(seq, latest.get((index, topic), 0))
        guarantee = draw(st.sampled_from([G.AT_LEAST_ONCE, G.ORDERED, G.EXACTLY_ONCE]))
        out.append((index, topic, seq, guarantee))
    return out


@settings(max_examples=500, deadline=None, database=None)
@given(_arrivals(), st.lists(st.integers(1, 60), max_size=8), st.booleans())
def test_batches_decide_as_one_publication_at_a_time(
    arrivals: list[Arrival], cuts: list[int], replay: bool
) -> None:
    assert in_batches(arrivals, cuts, replay) == one_by_one(arrivals, cuts, replay)


def test_a_run_of_next_numbers_is_delivered_in_one_effect() -> None:
    core = subscriber(replay=True)
    numbered = [("a", 7, "t", seq, G.AT_LEAST_ONCE, b"%d" % seq) for seq in range(1, 6)]
    core.handle(ev.PublicationsReceived((("a", 7),), 0, numbered[:1]), 1.0)  # starts the stream
    effects = core.handle(ev.PublicationsReceived((("a", 7),), 0, numbered[1:]), 1.0)
    runs = [e for e in effects if isinstance(e, fx.DeliverPublications)]
    assert [(e.sender, e.topic, e.payloads) for e in runs] == [("a", "t", [b"2", b"3", b"4", b"5"])]
