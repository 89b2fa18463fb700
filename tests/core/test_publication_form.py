"""When a node may publish in one frame: only while every member it knows of, but those
gone for good, announced ``oneframe`` (docs/protocol.md 9.4: PUB is read by all)."""

from __future__ import annotations

import dataclasses
import random

from zcluster import MemberStatus
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import FIELDS, ONE_FRAME, SUPPORTED
from zcluster.protocol.members import Member


def member(node_id: str, port: int, status: MemberStatus = MemberStatus.UP) -> Member:
    return Member(node_id, 7, 1, status, f"10.0.0.2:{port}", f"10.0.0.2:{port + 1}")


def sync_from(sender: Member, records: tuple[Member, ...], caps: msg.Capabilities) -> ev.Event:
    message = msg.Sync(records, False, sender.address, caps)
    return ev.EnvelopeReceived(msg.Envelope(sender.node_id, sender.incarnation, 1, message), b"")


def alone() -> NodeCore:
    core = NodeCore("me", 1, "10.0.0.1:7000", "10.0.0.1:7001", rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    return core


def test_a_node_alone_publishes_in_one_frame() -> None:
    assert alone().one_frame_publications


def test_one_member_that_did_not_announce_it_keeps_three_frames() -> None:
    core = alone()
    a, b = member("a", 7010), member("b", 7020)
    core.handle(sync_from(a, (core.me, a, b), SUPPORTED), 0.1)
    assert not core.one_frame_publications, "b announced nothing yet"
    core.handle(sync_from(b, (core.me, a, b), (FIELDS,)), 0.2)
    assert not core.one_frame_publications, "b is revision 1.1"
    core.handle(sync_from(b, (core.me, a, b), SUPPORTED), 0.3)
    assert core.one_frame_publications


def test_a_new_member_or_a_new_incarnation_starts_without_it() -> None:
    core = alone()
    a = member("a", 7010)
    core.handle(sync_from(a, (core.me, a), SUPPORTED), 0.1)
    assert core.one_frame_publications
    restarted = dataclasses.replace(a, incarnation=8)
    core.handle(
        ev.EnvelopeReceived(
            msg.Envelope("a", 8, 1, msg.Sync((core.me, restarted), False, a.address, ())), b""
        ),
        0.3,
    )
    assert core.member("a") is not None and core.member("a").incarnation == 8  # type: ignore[union-attr]
    assert not core.one_frame_publications, "the new incarnation announced nothing"


def test_members_gone_for_good_do_not_count() -> None:
    core = alone()
    a, old = member("a", 7010), member("old", 7030)
    core.handle(sync_from(a, (core.me, a, old), SUPPORTED), 0.1)
    assert not core.one_frame_publications
    left = dataclasses.replace(old, status=MemberStatus.LEFT, version=2)
    core.handle(sync_from(a, (core.me, a, left), SUPPORTED), 0.2)
    assert core.member("old") == left
    assert core.one_frame_publications


def test_the_announcement_names_the_capability() -> None:
    assert ONE_FRAME == "oneframe" and ONE_FRAME in SUPPORTED


def test_an_announcement_other_members_relay_counts() -> None:
    """Capabilities live with the members' announcements (``Peers``): what a SYNC relays
    of a member's current incarnation counts as if it had announced it itself."""
    core = alone()
    a, b = member("a", 7010), member("b", 7020)
    message = msg.Sync((core.me, a, b), False, a.address, SUPPORTED, (("b", 7, SUPPORTED),))
    core.handle(ev.EnvelopeReceived(msg.Envelope("a", 7, 1, message), b""), 0.1)
    assert core.capabilities_of("b") == SUPPORTED
    assert core.one_frame_publications


def test_the_decision_is_taken_again_only_after_a_change() -> None:
    core = alone()
    a, b = member("a", 7010), member("b", 7020)
    core.handle(sync_from(a, (core.me, a, b), SUPPORTED), 0.1)
    core.handle(sync_from(b, (core.me, a, b), SUPPORTED), 0.2)
    table = core.table
    scans: list[int] = []
    records = table.records

    def counted() -> list[Member]:
        scans.append(1)
        return records()

    table.records = counted  # type: ignore[method-assign]
    assert core.one_frame_publications
    scans.clear()
    for step in range(5):  # the same records and the same announcements: nothing changed
        core.handle(sync_from(a, (core.me, a, b), SUPPORTED), 0.3 + step / 100)
        assert core.one_frame_publications
    assert not scans
    core.handle(sync_from(b, (core.me, a, b), (FIELDS,)), 0.4)  # b's announcement changed
    assert not core.one_frame_publications
    assert scans
