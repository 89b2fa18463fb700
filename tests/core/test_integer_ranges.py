"""No received value may push a node's own values past what the wire carries: a record
whose version leaps far ahead of the one held is refused (a node counts its own version
up by one per change: it was forged), and a record of this node at the largest version
cannot be refuted: counted, not answered with a version the wire cannot carry."""

from __future__ import annotations

import dataclasses

import pytest

from tests.core.test_contract import core_in, envelope, peer
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.protocol import messages as msg
from zcluster.protocol.members import MAX_VERSION, MAX_VERSION_LEAP, MemberStatus
from zcluster.wire import Encoder, decode_header


def test_a_suspicion_at_the_largest_version_is_refused_and_every_message_still_encodes() -> None:
    a = peer("a")
    core = core_in(a)
    forged = dataclasses.replace(core.me, version=MAX_VERSION, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((forged,), False, a.address)), 0.1)
    assert core.counters["records_refused_version_leap"] == 1
    assert core.counters["suspicions_refuted"] == 0
    assert core.me.version < MAX_VERSION and core.me.status is MemberStatus.UP
    encoder = Encoder(core.node_id, core.incarnation)
    for now in (0.2, 0.4, 0.6, 1.2):  # heartbeats, probes, gossip: all still encode
        for effect in core.handle(ev.TimerFired(), now):
            if isinstance(effect, fx.Send | fx.Publish):
                decode_header(encoder.header(effect.message), 1 << 20)


def test_a_node_at_the_largest_version_changes_state_without_passing_it() -> None:
    a = peer("a")
    core = core_in(a)
    core.table.set_me(dataclasses.replace(core.me, version=MAX_VERSION), 0.1)
    core.handle(ev.LeaveRequested(), 0.2)
    assert core.me.status is MemberStatus.LEAVING
    assert core.me.version == MAX_VERSION


def test_a_suspicion_a_node_cannot_outcount_is_counted_not_refuted() -> None:
    a = peer("a")
    core = core_in(a)
    core.table.set_me(dataclasses.replace(core.me, version=MAX_VERSION - 3), 0.1)
    forged = dataclasses.replace(core.me, version=MAX_VERSION, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((forged,), False, a.address)), 0.2)
    assert core.counters["suspicions_unrefutable"] == 1
    assert core.me.version == MAX_VERSION - 3 and core.me.status is MemberStatus.UP


@pytest.mark.parametrize("told_by", ["a", "b"])
def test_a_record_of_another_member_leaping_ahead_is_refused_unless_in_its_own_word(
    told_by: str,
) -> None:
    """Finding 1 of the hostile-input report: a record of a live member at 2^64-1, DOWN,
    given to a third node, marked it down everywhere for good. Only the member itself may
    speak of a version that far ahead of what is held (its own heartbeat or SYNC)."""
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    forged = dataclasses.replace(b, version=MAX_VERSION, status=MemberStatus.DOWN)
    teller = a if told_by == "a" else b
    core.handle(envelope(teller, msg.Sync((forged,), False, teller.address)), 0.1)
    held = core.table.get("b")
    assert held is not None
    if told_by == "a":
        assert core.counters["records_refused_version_leap"] == 1
        assert held == b
    else:
        assert core.counters["records_refused_version_leap"] == 0
        assert held.version == MAX_VERSION


@pytest.mark.parametrize("leap", [MAX_VERSION_LEAP, MAX_VERSION_LEAP + 1])
def test_the_leap_is_measured_from_the_version_held(leap: int) -> None:
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    suspected = dataclasses.replace(b, version=b.version + leap, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((suspected,), False, a.address)), 0.1)
    held = core.table.get("b")
    assert held is not None
    assert (held == suspected) is (leap <= MAX_VERSION_LEAP)
    # A news item, a heartbeat's updates: the same rule wherever records arrive.
    unknown = dataclasses.replace(peer("c"), version=leap)
    heartbeat = msg.Heartbeat(a, (unknown,), core.table.digest(), ())
    core.handle(envelope(a, heartbeat), 0.2)
    assert (core.table.get("c") is not None) is (leap <= MAX_VERSION_LEAP)


def test_a_suspicion_within_the_leap_is_refuted_and_the_refutation_is_taken_everywhere() -> None:
    """The forged leap others may take is one the node can still answer: its refutation
    is in its own word, so every member takes it, however far behind it was."""
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    forged = dataclasses.replace(core.me, version=MAX_VERSION_LEAP, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((forged,), False, a.address)), 0.1)
    assert core.counters["suspicions_refuted"] == 1
    assert core.me.version == MAX_VERSION_LEAP + 1 and core.me.status is MemberStatus.UP
    # b, far behind (it holds "a" at version 1), takes a's refutation from a itself.
    behind = core_in(a, b)
    refutation = dataclasses.replace(a, version=MAX_VERSION_LEAP + 10)
    heartbeat = msg.Heartbeat(refutation, (), behind.table.digest(), ())
    behind.handle(envelope(a, heartbeat), 0.1)
    assert behind.table.get("a") == refutation
    assert behind.counters["records_refused_version_leap"] == 0
