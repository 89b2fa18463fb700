"""The delivery bookkeeping of the core, without any network."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from zcluster import NodeConfig
from zcluster.core.guarantees import DeliveryGuarantee as G
from zcluster.core.inbound import DirectReceiver
from zcluster.core.outbox import DirectSender
from zcluster.core.topics import Publications, Subscriptions
from zcluster.errors import ConfigError


def sender(**options: object) -> DirectSender:
    return DirectSender(NodeConfig().replace(**options), random.Random(1))


def test_retries_back_off_exponentially_with_jitter_up_to_the_cap() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.8)
    out.add("b", 1, "h", b"x", G.AT_LEAST_ONCE, deadline=1000.0, now=0.0)
    times, now = [], 0.0
    while len(times) < 8:
        now += 0.01
        if out.due_retries(now, lambda _: True):
            times.append(now)
    gaps = [b - a for a, b in zip([0.0, *times], times, strict=False)]
    caps = [min(0.8, 0.1 * 2**i) for i in range(len(gaps))]
    for gap, cap in zip(gaps, caps, strict=True):
        assert cap / 2 - 0.011 <= gap <= cap + 0.011, (gaps, caps)
    assert max(gaps) <= 0.8 + 0.011


def test_unreachable_receiver_parks_retries_until_it_is_back() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.1)
    out.add("b", 1, "h", b"x", G.AT_LEAST_ONCE, deadline=1000.0, now=0.0)
    assert out.due_retries(1.0, lambda _: False) == []
    assert out.due_retries(2.0, lambda _: True) == []  # parked: no timer left
    out.resume("b", 2.0)
    assert [e.number for _, e in out.due_retries(2.0, lambda _: True)] == [1]


def test_acks_settle_cumulatively_and_selectively_and_low_follows() -> None:
    out = sender()
    for n in range(1, 7):
        out.add("b", n, "h", b"x", G.AT_LEAST_ONCE, deadline=10.0, now=0.0)
    assert out.low("b") == 1
    done = out.acknowledged("b", 2, [4, 6])
    assert sorted(e.seq for e in done) == [1, 2, 4, 6]
    assert out.low("b") == 3 and out.count("b") == 2
    expired = out.expired(10.0)
    assert sorted(e.seq for _, e in expired) == [3, 5]
    assert out.low("b") == 7 and len(out) == 0


def test_received_messages_are_not_resent() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.1)
    for n in range(1, 4):
        out.add("b", n, "h", b"x", G.ORDERED, deadline=10.0, now=0.0)
    out.acknowledged("b", 0, [], received_upto=1, held=[3])
    assert [e.seq for _, e in out.due_retries(1.0, lambda _: True)] == [2]
    out.resume("b", 1.0, restarted=True)  # a restarted receiver lost what it held
    assert sorted(e.seq for _, e in out.due_retries(1.0, lambda _: True)) == [1, 2, 3]


def test_numbering_survives_failing_everything() -> None:
    out = sender()
    out.add("b", 1, "h", b"x", G.AT_LEAST_ONCE, deadline=10.0, now=0.0)
    assert [e.seq for e in out.fail_all("b")] == [1]
    entry = out.add("b", 2, "h", b"x", G.AT_LEAST_ONCE, deadline=10.0, now=0.0)
    assert entry.seq == 2  # a receiver still holding the stream must not see 1 again


def receiver(**options: object) -> DirectReceiver:
    return DirectReceiver(NodeConfig().replace(**options), Counter())


def data(seq: int, guarantee: G = G.AT_LEAST_ONCE, low: int = 1) -> tuple[str, int, int, int, G]:
    return ("h", 100 + seq, seq, low, guarantee)


def test_receiver_delivers_once_and_acks_what_finished() -> None:
    rx = receiver()
    assert [a.seq for a in rx.receive("a", 7, data(1), b"", 0.0)] == [1]
    assert rx.receive("a", 7, data(1), b"", 0.0) == []  # duplicate while running
    rx.finished("a", 7, 1, None)
    rx.receive("a", 7, data(3), b"", 0.0)
    rx.finished("a", 7, 3, "handler raised ValueError: no")
    stream = rx.stream("a")
    assert stream is not None
    assert stream.ack_body(10) == [7, 1, [3], [[3, "handler raised ValueError: no"]], 1, []]
    assert rx.ack_due == {"a"}


def test_ordered_waits_for_the_gap_and_low_skips_what_the_sender_gave_up() -> None:
    rx = receiver()
    assert rx.receive("a", 7, data(2, G.ORDERED), b"", 0.0) == []
    assert rx.receive("a", 7, data(3, G.ORDERED), b"", 0.0) == []
    assert [a.seq for a in rx.receive("a", 7, data(1, G.ORDERED), b"", 0.0)] == [1, 2, 3]
    assert rx.receive("a", 7, data(5, G.ORDERED), b"", 0.0) == []
    # the sender expired 4 and 5 (low 6): 5 is dropped, 6 goes through
    assert [a.seq for a in rx.receive("a", 7, data(6, G.ORDERED, low=6), b"", 0.0)] == [6]


def test_stale_incarnations_are_ignored_and_new_ones_start_fresh() -> None:
    rx = receiver()
    rx.receive("a", 7, data(1), b"", 0.0)
    assert rx.receive("a", 6, data(2), b"", 0.0) == []
    assert [a.seq for a in rx.receive("a", 8, data(1), b"", 0.0)] == [1]


def test_exactly_once_window_covers_a_forgotten_stream() -> None:
    rx = receiver()
    assert len(rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 0.0)) == 1
    rx.forget("a")
    assert rx.receive("a", 7, data(1, G.EXACTLY_ONCE), b"", 1.0) == []
    assert len(rx.receive("a", 7, data(2, G.EXACTLY_ONCE), b"", 1.0)) == 1


def test_messages_beyond_the_window_are_dropped() -> None:
    rx = receiver(outbox_max_count=4)
    assert rx.receive("a", 7, data(6), b"", 0.0) == []
    assert len(rx.receive("a", 7, data(4), b"", 0.0)) == 1


def test_ttl_longer_than_the_dedup_window_is_refused() -> None:
    with pytest.raises(ConfigError, match="dedup_window_s"):
        NodeConfig(message_ttl_s=400.0, dedup_window_s=300.0)


def test_publisher_buffer_answers_what_it_holds_and_names_what_is_gone() -> None:
    pubs = Publications(NodeConfig(retransmit_buffer_count=3, fetch_max_count=10))
    for i in range(6):
        pubs.append("t", G.AT_LEAST_ONCE, bytes([i]))
    found, lost = pubs.lookup("t", [(2, 5)])
    assert [seq for seq, _, _ in found] == [4, 5]
    assert lost == [(2, 3)]
    assert pubs.positions() == [["t", 6]]
    assert pubs.lookup("other", [(1, 2)]) == ([], [(1, 2)])


def test_subscriber_reports_exact_lost_ranges_and_releases_held() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    out = subs.publication("p", 1, "t", (1, G.ORDERED, b"1"), start_after=0)
    assert [s for s, _, _ in out] == [1]
    assert subs.publication("p", 1, "t", (4, G.ORDERED, b"4"), start_after=0) == []
    assert subs.due_fetches(0.0) == [("p", "t", [(2, 3)])]
    assert subs.due_fetches(0.1) == []  # asked already; again after fetch_retry_s
    released = subs.lost("p", 1, "t", [(2, 3)])
    assert [s for s, _, _ in released] == [4]
    assert [(x.first, x.last) for x in subs.losses] == [(2, 3)]


def test_subscriber_gives_up_what_the_holdback_cannot_hold() -> None:
    subs = Subscriptions(NodeConfig(topic_holdback_max_count=5), Counter())
    subs.publication("p", 1, "t", (1, G.AT_LEAST_ONCE, b""), start_after=0)
    subs.position("p", 1, "t", latest=20, start_after=0)
    assert [(x.first, x.last) for x in subs.losses] == [(2, 15)]
    assert subs.due_fetches(0.0) == [("p", "t", [(16, 20)])]
