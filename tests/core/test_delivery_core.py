"""The delivery bookkeeping of the core, without any network."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from zcluster import NodeConfig
from zcluster.core.inbound import DirectReceiver
from zcluster.core.outbox import DirectSender
from zcluster.core.publications import Publications
from zcluster.core.topics import Subscriptions
from zcluster.errors import ConfigError
from zcluster.protocol.guarantees import DeliveryGuarantee as G
from zcluster.protocol.messages import Data, DataAck


def sender(**options: object) -> DirectSender:
    return DirectSender(NodeConfig().replace(**options), random.Random(1))


def ack(
    epoch: int,
    stream_id: int,
    upto: int,
    selective: tuple[int, ...] = (),
    delivered_upto: int = 0,
    pending: tuple[int, ...] = (),
    failures: tuple[tuple[int, str], ...] = (),
) -> DataAck:
    """A DATA_ACK from the receiver's state ``stream_id`` of our stream ``epoch``."""
    return DataAck(9, epoch, stream_id, upto, selective, failures, delivered_upto, pending)


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
    done = out.acknowledged("b", ack(1, 1, 2, (4, 6)), 0.0)
    assert sorted(e.seq for e in done) == [1, 2, 4, 6]
    assert out.low("b") == 3 and out.count("b") == 2
    expired = out.expired(10.0)
    assert sorted(e.seq for _, e in expired) == [3, 5]
    assert out.low("b") == 7 and len(out) == 0


def test_received_messages_are_not_resent_but_the_oldest_asks_for_an_ack() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.1)
    for n in range(1, 4):
        out.add("b", n, "h", b"x", G.ORDERED, deadline=10.0, now=0.0)
    out.acknowledged("b", ack(1, 1, 0, delivered_upto=1, pending=(3,)), 0.5)
    # 2 is missing; of those that arrived only the oldest goes again, to ask for an ack
    assert [e.seq for _, e in out.due_retries(1.0, lambda _: True)] == [1, 2]
    out.resume("b", 1.0, restarted=True)  # a restarted receiver lost what it held
    assert sorted(e.seq for _, e in out.due_retries(1.0, lambda _: True)) == [1, 2, 3]


def test_a_new_numbering_gets_a_new_epoch_and_old_timers_do_not_touch_it() -> None:
    out = sender()
    out.add("b", 1, "h", b"x", G.AT_LEAST_ONCE, deadline=5.0, now=0.0)
    assert [e.seq for e in out.fail_all("b")] == [1]
    entry = out.add("b", 2, "h", b"x", G.AT_LEAST_ONCE, deadline=50.0, now=1.0)
    assert (entry.seq, out.epoch("b")) == (1, 2)  # a receiver tells the streams apart
    assert out.expired(6.0) == []  # the first message's expiry timer is stale
    assert (
        out.acknowledged("b", ack(1, 1, 1, delivered_upto=1), 6.0) == []
    )  # an ack of the old epoch


def test_a_receiver_that_forgot_the_stream_gets_what_it_held_again() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.1)
    for n in range(1, 3):
        out.add("b", n, "h", b"x", G.ORDERED, deadline=10.0, now=0.0)
    out.acknowledged("b", ack(1, 7, 0, pending=(1, 2)), 0.0)
    assert [e.seq for _, e in out.due_retries(1.0, lambda _: True)] == [1]  # the ack probe
    out.acknowledged("b", ack(1, 8, 0), 1.0)  # a new state of the stream: 8
    assert sorted(e.seq for _, e in out.due_retries(1.0, lambda _: True)) == [1, 2]


def test_expiry_resends_the_oldest_left_so_the_receiver_learns_the_new_low() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=0.1)
    out.add("b", 1, "h", b"x", G.ORDERED, deadline=1.0, now=0.0)
    out.add("b", 2, "h", b"x", G.ORDERED, deadline=9.0, now=0.0)
    out.acknowledged("b", ack(1, 1, 0, pending=(2,)), 0.0)  # 2 is held behind 1
    assert [e.seq for _, e in out.expired(1.0)] == [1]
    assert [(e.seq, out.low("b")) for _, e in out.due_retries(1.0, lambda _: True)] == [(2, 2)]


def receiver(**options: object) -> DirectReceiver:
    return DirectReceiver(NodeConfig().replace(**options), Counter(), first_stream_id=0)


def data(seq: int, guarantee: G = G.AT_LEAST_ONCE, low: int = 1, epoch: int = 1) -> Data:
    return Data("h", 100 + seq, seq, low, guarantee, epoch)


def test_receiver_delivers_once_and_acks_what_finished() -> None:
    rx = receiver()
    assert [a.seq for a in rx.receive("a", 7, data(1), b"", 0.0)] == [1]
    assert rx.receive("a", 7, data(1), b"", 0.0) == []  # duplicate while running
    rx.finished("a", (7, 1, 1), None)
    rx.receive("a", 7, data(3), b"", 0.0)
    rx.finished("a", (7, 1, 3), "handler raised ValueError: no")
    stream = rx.stream("a")
    assert stream is not None
    rx.receive("a", 7, data(5), b"", 0.0)  # arrived, its handler still running
    assert stream.ack(10) == DataAck(
        7,
        1,
        stream.stream_id,
        1,
        (3,),
        ((3, "handler raised ValueError: no"),),
        1,
        (5,),
    )
    assert list(rx.ack_due) == ["a"]


def test_acknowledgements_are_owed_in_the_order_first_owed() -> None:
    rx = receiver()
    for sender_id in ("b", "a", "c"):
        rx.receive(sender_id, 1, data(1), b"", 0.0)
    rx.receive("b", 1, data(2), b"", 0.0)  # owed again: keeps its place
    rx.finished("a", (1, 1, 1), None)
    assert list(rx.ack_due) == ["b", "a", "c"]
    rx.forget("a")
    assert list(rx.ack_due) == ["b", "c"]
    rx.finished("a", (1, 1, 1), None)  # a forgotten stream owes nothing
    assert list(rx.ack_due) == ["b", "c"]


def test_ordered_waits_for_the_gap_and_low_skips_what_the_sender_gave_up() -> None:
    rx = receiver()
    assert rx.receive("a", 7, data(2, G.ORDERED), b"", 0.0) == []
    assert rx.receive("a", 7, data(3, G.ORDERED), b"", 0.0) == []
    assert [a.seq for a in rx.receive("a", 7, data(1, G.ORDERED), b"", 0.0)] == [1, 2, 3]
    assert rx.receive("a", 7, data(5, G.ORDERED), b"", 0.0) == []
    # the sender expired 4 and 5 (low 6): 5 is dropped, 6 goes through
    assert [a.seq for a in rx.receive("a", 7, data(6, G.ORDERED, low=6), b"", 0.0)] == [6]
    # 4 expired while 5 and 6 wait behind it: any message carrying low 5 releases them
    assert rx.receive("a", 7, data(9, G.ORDERED, low=7), b"", 0.0) == []
    assert rx.receive("a", 7, data(10, G.ORDERED, low=7), b"", 0.0) == []
    released = rx.receive("a", 7, data(9, G.ORDERED, low=9), b"", 0.0)
    assert [a.seq for a in released] == [9, 10]


def test_stale_incarnations_are_ignored_and_new_ones_start_fresh() -> None:
    rx = receiver()
    rx.receive("a", 7, data(1), b"", 0.0)
    assert rx.receive("a", 6, data(2), b"", 0.0) == []
    assert [a.seq for a in rx.receive("a", 8, data(1), b"", 0.0)] == [1]
    assert [a.seq for a in rx.receive("a", 8, data(1, epoch=2), b"", 0.0)] == [1]
    assert rx.receive("a", 8, data(2, epoch=1), b"", 0.0) == []  # the older numbering


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
    assert pubs.positions() == (("t", 6),)
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


def test_messages_queued_behind_reported_progress_are_not_resent() -> None:
    out = sender(retry_initial_s=0.1, retry_max_s=1.0)
    for n in range(1, 6):
        out.add("b", n, "h", b"x", G.AT_LEAST_ONCE, deadline=10.0, now=0.0)
    # 1 and 2 arrived, 4 too: 3 is a hole, 5 is sent after all of them
    out.acknowledged("b", ack(1, 1, 0, delivered_upto=2, pending=(4,)), 0.08)
    assert [e.seq for _, e in out.due_retries(0.1, lambda _: True)] == [3]
    # no progress for a whole timeout: 5 is resent too
    assert 5 in [e.seq for _, e in out.due_retries(0.5, lambda _: True)]


def test_a_confirmed_start_before_the_assumed_one_turns_into_a_gap() -> None:
    subs = Subscriptions(NodeConfig(), Counter())
    # 3 arrived first: assumed to be where the subscription began
    assert [s for s, _, _ in subs.publication("p", 1, "t", (3, G.AT_LEAST_ONCE, b""), 2)] == [3]
    subs.publication("p", 1, "t", (5, G.AT_LEAST_ONCE, b""), 2)
    subs.subscription_began("p", 1, "t", 0)  # the publisher confirmed it at 0
    assert subs.due_fetches(0.0) == [("p", "t", [(1, 2), (4, 4)])]
    subs.subscription_began("p", 1, "t", 4)  # a later confirmation changes nothing
    assert subs.due_fetches(1.0) == [("p", "t", [(1, 2), (4, 4)])]
