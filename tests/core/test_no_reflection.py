"""Answers go to the member that asked, at the address the membership table holds for
it, never to whatever address the message names (reflection); strangers' answers, table
answers and resends are bounded in rate (amplification)."""

from __future__ import annotations

import pytest

from tests.core.test_contract import CONFIG, core_in, envelope, peer, sends
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.limits import PeerBuckets, TokenBucket
from zcluster.protocol import messages as msg
from zcluster.protocol.guarantees import DeliveryGuarantee

VICTIM = "10.9.9.9:9999"


def publishing_core(count: int = 5, config=CONFIG):  # type: ignore[no-untyped-def]
    a = peer("a")
    core = core_in(a, config=config)
    for i in range(count):
        core.handle(ev.PublishRequested("t", str(i).encode(), DeliveryGuarantee.AT_LEAST_ONCE), 0.1)
    return core, a


def test_a_members_fetch_is_answered_to_its_own_address_not_the_one_it_names() -> None:
    core, a = publishing_core()
    effects = core.handle(envelope(a, msg.Fetch("t", ((1, 5),), VICTIM)), 0.2)
    answers = sends(effects, msg.Republish)
    assert len(answers) == 5
    assert {s.address for s in answers} == {a.address}


def test_a_stranger_s_fetch_is_not_answered() -> None:
    core, _ = publishing_core()
    stranger = peer("z")  # not in the table
    effects = core.handle(envelope(stranger, msg.Fetch("t", ((1, 5),), VICTIM)), 0.2)
    assert not sends(effects, msg.Republish) and not sends(effects, msg.Lost)
    assert core.counters["fetches_refused_not_a_member"] == 1


def test_resends_to_one_member_are_bounded_in_rate() -> None:
    config = CONFIG.replace(member_resends_per_s=10.0)
    core, a = publishing_core(30, config)
    first = core.handle(envelope(a, msg.Fetch("t", ((1, 30),), VICTIM)), 0.25)
    assert len(sends(first, msg.Republish)) == 10
    at_once = core.handle(envelope(a, msg.Fetch("t", ((11, 30),), VICTIM), 2), 0.25)
    assert not sends(at_once, msg.Republish)
    assert core.counters["resends_deferred_rate"] == 20 + 20
    later = core.handle(envelope(a, msg.Fetch("t", ((11, 30),), VICTIM), 3), 0.75)
    assert [s.message.seq for s in sends(later, msg.Republish)] == [11, 12, 13, 14, 15]


def test_a_members_ping_is_answered_at_its_table_address() -> None:
    a = peer("a")
    core = core_in(a)
    effects = core.handle(envelope(a, msg.Ping(5, VICTIM)), 0.1)
    assert [s.address for s in sends(effects, msg.Ack)] == [a.address]


def test_a_members_request_is_handled_and_answered_at_its_table_address() -> None:
    a = peer("a")
    core = core_in(a)
    effects = core.handle(envelope(a, msg.Request("h", 9, VICTIM)), 0.1)
    (deliver,) = [e for e in effects if isinstance(e, fx.Deliver)]
    assert deliver.reply_address == a.address


def test_a_members_sync_is_answered_at_its_table_address() -> None:
    a = peer("a")
    core = core_in(a)
    effects = core.handle(envelope(a, msg.Sync((a,), True, VICTIM)), 0.1)
    assert [s.address for s in sends(effects, msg.Sync)] == [a.address]


def test_strangers_answers_are_bounded_in_rate_together() -> None:
    config = CONFIG.replace(stranger_answers_per_s=5.0)
    core = core_in(peer("a"), config=config)
    answered = 0
    for i in range(20):  # a new name each time: strangers share one rate
        stranger = peer("z" * (i + 1))
        answered += len(sends(core.handle(envelope(stranger, msg.Ping(i, VICTIM)), 0.1), msg.Ack))
    assert answered == 5
    assert core.counters["answers_refused_stranger_rate"] == 15


def test_table_answers_are_bounded_in_rate() -> None:
    """Past the rate, a SYNC is answered with our record and the sender's only: a joining
    node is admitted all the same, and a small SYNC no longer brings a whole table."""
    config = CONFIG.replace(table_answers_per_s=3.0)
    a = peer("a")
    core = core_in(a, peer("b"), peer("c"), config=config)
    sizes = []
    for i in range(10):
        sync = envelope(a, msg.Sync((a,), True, a.address), i)
        sizes += [len(s.message.records) for s in sends(core.handle(sync, 0.1), msg.Sync)]
    assert sizes == [4] * 3 + [2] * 7
    assert core.counters["table_answers_withheld"] == 7
    later = sends(core.handle(envelope(a, msg.Sync((a,), True, a.address), 99), 0.5), msg.Sync)
    assert [len(s.message.records) for s in later] == [4]


@pytest.mark.parametrize("rate", [1.0, 50.0, 1000.0])
def test_a_token_bucket_gives_its_burst_then_its_rate(rate: float) -> None:
    bucket = TokenBucket(rate, burst=rate)
    assert bucket.take_up_to(0.0, 10**9) == int(rate)
    assert not bucket.take(0.0)
    assert bucket.take_up_to(2.0, 10**9) == int(rate)  # refilled only up to the burst
    assert not bucket.take(1.5)  # time going back gives nothing


def test_peer_buckets_forget_the_least_recently_used() -> None:
    buckets = PeerBuckets(1.0, 1.0, max_peers_count=2)
    assert buckets.of("a").take(0.0) and buckets.of("b").take(0.0)
    buckets.of("c")  # "a" is forgotten
    assert buckets.of("a").take(0.0)
    assert not buckets.of("a").take(0.0)


def test_a_rate_below_one_a_second_still_lets_one_through_now_and_then() -> None:
    bucket = TokenBucket(0.5, burst=0.5)
    assert bucket.take(0.0) and not bucket.take(1.0)
    assert bucket.take(2.0)
