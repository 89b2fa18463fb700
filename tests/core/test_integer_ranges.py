"""No received value may push a node's own values past what the wire carries: a record
of another member heard second-hand at a version in the top 2^32 (reserved for the
member's own word) is refused, so a forged record can never put a member where it cannot
refute; a record of this node at the largest version is counted, not answered with a
version the wire cannot carry."""

from __future__ import annotations

import dataclasses

import pytest

from tests.core.test_contract import core_in, envelope, peer
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.protocol import messages as msg
from zcluster.protocol.members import MAX_SECOND_HAND_VERSION, MAX_VERSION, MemberStatus
from zcluster.wire import Encoder, decode_header


def test_a_suspicion_at_the_largest_version_is_counted_and_every_message_still_encodes() -> None:
    a = peer("a")
    core = core_in(a)
    forged = dataclasses.replace(core.me, version=MAX_VERSION, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((forged,), False, a.address)), 0.1)
    assert core.counters["suspicions_unrefutable"] == 1
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


@pytest.mark.parametrize("told_by", ["a", "b"])
def test_a_record_of_another_member_in_the_reserved_versions_is_taken_only_from_itself(
    told_by: str,
) -> None:
    """Finding 1 of the hostile-input report: a record of a live member at 2^64-1, DOWN,
    given to a third node, marked it down everywhere for good."""
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    forged = dataclasses.replace(b, version=MAX_VERSION, status=MemberStatus.DOWN)
    teller = a if told_by == "a" else b
    core.handle(envelope(teller, msg.Sync((forged,), False, teller.address)), 0.1)
    held = core.table.get("b")
    assert held is not None
    if told_by == "a":
        assert core.counters["records_refused_reserved_version"] == 1
        assert held == b
    else:  # in a member's own name: forging that is for authentication to stop
        assert core.counters["records_refused_reserved_version"] == 0
        assert held.version == MAX_VERSION


@pytest.mark.parametrize("above", [0, 1])
def test_second_hand_records_above_the_reserve_are_refused_wherever_they_arrive(
    above: int,
) -> None:
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    version = MAX_SECOND_HAND_VERSION + above
    suspected = dataclasses.replace(b, version=version, status=MemberStatus.SUSPECT)
    core.handle(envelope(a, msg.Sync((suspected,), False, a.address)), 0.1)
    assert (core.table.get("b") == suspected) is (above == 0)
    unknown = dataclasses.replace(peer("c"), version=version)  # a heartbeat's updates
    core.handle(envelope(a, msg.Heartbeat(a, (unknown,), core.table.digest(), ())), 0.2)
    assert (core.table.get("c") is not None) is (above == 0)
    assert core.counters["records_refused_reserved_version"] == 2 * above


def test_forged_records_cannot_walk_a_member_past_what_it_can_refute() -> None:
    """Records that each step a little further (the reserve is absolute, not measured
    from what is held), and the member's refutation taken by a member far behind."""
    a, b = peer("a"), peer("b")
    core = core_in(a, b)
    step = dataclasses.replace(
        core.me, version=MAX_SECOND_HAND_VERSION, status=MemberStatus.SUSPECT
    )
    core.handle(envelope(a, msg.Sync((step,), False, a.address)), 0.1)
    assert core.counters["suspicions_refuted"] == 1
    assert core.me.version == MAX_SECOND_HAND_VERSION + 1 and core.me.status is MemberStatus.UP
    other = core_in(a, b)
    down = [
        dataclasses.replace(b, version=v, status=MemberStatus.DOWN)
        for v in (MAX_SECOND_HAND_VERSION, MAX_SECOND_HAND_VERSION + 2**20)
    ]
    for record in down:
        other.handle(envelope(a, msg.Sync((record,), False, a.address)), 0.1)
    assert other.counters["records_refused_reserved_version"] == 1
    # b refutes the one taken, in its own word: taken.
    refutation = dataclasses.replace(b, version=MAX_SECOND_HAND_VERSION + 1)
    other.handle(envelope(b, msg.Heartbeat(refutation, (), other.table.digest(), ())), 0.2)
    assert other.table.get("b") == refutation
