"""The core's contract, event in, effects out: no network, no clock, no simulator.

Each test builds a NodeCore that is already a member of a small cluster
(fed the SYNC a seed would send), then feeds one event at a chosen time and
reads the effects it returns.
"""

from __future__ import annotations

import random

import pytest

from zcluster import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.errors import ConfigError, UnsupportedGuarantee
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import SUPPORTED
from zcluster.protocol.guarantees import AckStatus, DeliveryGuarantee
from zcluster.protocol.members import Member, MemberStatus

CONFIG = NodeConfig()
HB = CONFIG.heartbeat_interval_s


def peer(node_id: str, incarnation: int = 7, status: MemberStatus = MemberStatus.UP) -> Member:
    port = 7000 + 10 * (ord(node_id[-1]) - ord("a"))
    return Member(node_id, incarnation, 1, status, f"10.0.0.2:{port}", f"10.0.0.2:{port + 1}")


def envelope(sender: Member, message: msg.Message, seq: int = 1) -> ev.EnvelopeReceived:
    return ev.EnvelopeReceived(msg.Envelope(sender.node_id, sender.incarnation, seq, message), b"")


def core_in(*peers: Member, config: NodeConfig = CONFIG) -> NodeCore:
    """A core that formed a cluster at time 0 and then heard of ``peers`` (all UP)."""
    core = NodeCore("me", 1, "10.0.0.1:7000", "10.0.0.1:7001", config=config, rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    records = (core.me, *peers)
    core.handle(envelope(peers[0], msg.Sync(records, False, peers[0].address)), 0.0)
    return core


def sends(effects: list[fx.Effect], kind: type[msg.Message]) -> list[fx.Send]:
    return [e for e in effects if isinstance(e, fx.Send) and isinstance(e.message, kind)]


def test_silence_past_the_heartbeat_timeout_sends_a_probe_and_indirect_probes() -> None:
    a, b, c = peer("a"), peer("b"), peer("c")
    core = core_in(a, b, c)
    quiet = core.handle(ev.TimerFired(), CONFIG.heartbeat_timeout_s * 0.9)
    assert not sends(quiet, msg.Ping), "probed before the timeout"
    for heard in (b, c):  # b and c keep talking; a falls silent
        core.handle(envelope(heard, msg.Ping(1, heard.address)), CONFIG.heartbeat_timeout_s)
    effects = core.handle(ev.TimerFired(), CONFIG.heartbeat_timeout_s + 0.01)
    pings = sends(effects, msg.Ping)
    assert [p.address for p in pings] == [a.address]
    indirect = sends(effects, msg.PingReq)
    assert sorted(p.address for p in indirect) == sorted([b.address, c.address])
    assert {p.message.target for p in indirect if isinstance(p.message, msg.PingReq)} == {"a"}
    assert core.counters["probes_sent"] == 1


def test_an_unanswered_probe_makes_the_member_suspect_and_an_ack_clears_it() -> None:
    a = peer("a")
    core = core_in(a)
    start = CONFIG.heartbeat_timeout_s + 0.01
    ping = sends(core.handle(ev.TimerFired(), start), msg.Ping)[0].message
    assert isinstance(ping, msg.Ping)
    later = core.handle(ev.TimerFired(), start + CONFIG.probe_timeout_s + 0.01)
    changes = [e for e in later if isinstance(e, fx.MemberChanged)]
    assert [c.member.status for c in changes] == [MemberStatus.SUSPECT]
    core.handle(envelope(a, msg.Ack(ping.probe_id, "a")), start + CONFIG.probe_timeout_s + 0.02)
    member = core.member("a")
    assert member is not None and member.status is MemberStatus.SUSPECT  # until it refutes


def test_an_unanswered_listen_is_sent_again_until_listening_arrives() -> None:
    a = peer("a")
    core = core_in(a)
    core.handle(ev.TopicSubscribed("prices"), 0.0)
    heartbeat = msg.Heartbeat(a, (), "0" * 16, (), ())
    first = sends(core.handle(envelope(a, heartbeat), 0.1), msg.Listen)
    assert [s.message for s in first] == [msg.Listen(("prices",))]
    retried = sends(core.handle(ev.TimerFired(), 0.1 + CONFIG.listen_retry_s + 0.01), msg.Listen)
    assert [s.address for s in retried] == [a.address]
    core.handle(envelope(a, msg.Listening((("prices", 0),)), seq=2), 0.7)
    after = core.handle(ev.TimerFired(), 0.7 + 2 * CONFIG.listen_retry_s)
    assert not sends(after, msg.Listen)


@pytest.mark.parametrize("guarantee", [DeliveryGuarantee.TRANSACTIONAL])
def test_an_unsupported_guarantee_is_refused_at_the_door(guarantee: DeliveryGuarantee) -> None:
    core = core_in(peer("a"))
    before = dict(core.counters)
    with pytest.raises(UnsupportedGuarantee, match=guarantee.name) as raised:
        core.handle(ev.SendRequested("a", "h", b"x", guarantee, 1, 5.0), 0.1)
    assert isinstance(raised.value, ConfigError)
    with pytest.raises(UnsupportedGuarantee):
        core.handle(ev.PublishRequested("t", b"x", guarantee), 0.1)
    assert dict(core.counters) == before
    assert core.outbox_count("a") == 0
    assert core.handle(ev.TurnEnded(), 0.2) == []


def test_heartbeats_announce_capabilities_and_peers_are_remembered_per_incarnation() -> None:
    a = peer("a")
    core = core_in(a)
    beats = [e for e in core.handle(ev.TimerFired(), HB + 0.01) if isinstance(e, fx.Publish)]
    assert [b.message.capabilities for b in beats if isinstance(b.message, msg.Heartbeat)] == [
        SUPPORTED
    ]
    assert core.capabilities_of("a") == ()  # its SYNC announced nothing
    future = ("fields", "zz-unknown-future-thing")
    core.handle(envelope(a, msg.Heartbeat(a, (), "0" * 16, (), future), seq=2), 0.3)
    assert core.capabilities_of("a") == future
    older = peer("a", incarnation=3)
    core.handle(envelope(older, msg.Sync((older,), False, older.address, ())), 0.4)
    assert core.capabilities_of("a") == future, "a late message of an earlier life counted"
    assert core.capabilities_of("me") == SUPPORTED


def test_graceful_leave_waits_for_running_handlers_and_refuses_new_messages() -> None:
    a = peer("a")
    core = core_in(a)
    data = msg.Data("work", 1, 1, 1, DeliveryGuarantee.AT_LEAST_ONCE, 1)
    delivered = core.handle(envelope(a, data), 0.1)
    (deliver,) = [e for e in delivered if isinstance(e, fx.Deliver)]
    assert deliver.receipt is not None
    core.handle(ev.LeaveRequested(), 0.2)
    still_up = core.handle(ev.TimerFired(), 0.3)
    assert not [e for e in still_up if isinstance(e, fx.MemberChanged)], "left a handler behind"
    late = msg.Data("work", 2, 2, 1, DeliveryGuarantee.AT_LEAST_ONCE, 1)
    assert not [e for e in core.handle(envelope(a, late, 2), 0.3) if isinstance(e, fx.Deliver)]
    assert core.counters["reliable_refused_leaving"] == 1
    request = msg.Request("work", 9, a.address)
    refused = sends(core.handle(envelope(a, request, 3), 0.3), msg.Reply)
    assert [r.message for r in refused] == [msg.Reply(9, False)]
    core.handle(ev.DeliveryFinished("a", deliver.receipt, None), 0.35)
    acks = sends(core.handle(ev.TurnEnded(), 0.35), msg.DataAck)
    # the first handled; the late one refused, and its sender told at once, with why
    assert [
        (s.message.upto, s.message.failures) for s in acks if isinstance(s.message, msg.DataAck)
    ] == [(2, ((2, "receiver was leaving the cluster; not handled"),))]
    leaving = core.handle(ev.TimerFired(), 0.4)
    assert [e.member.status for e in leaving if isinstance(e, fx.MemberChanged)] == [
        MemberStatus.LEAVING
    ]
    left = core.handle(ev.TimerFired(), 0.4 + HB)
    assert [e.member.status for e in left if isinstance(e, fx.MemberChanged)] == [MemberStatus.LEFT]
    assert core.counters["leave_handlers_unfinished"] == 0


def test_a_leave_gives_up_on_handlers_after_leave_timeout() -> None:
    a = peer("a")
    core = core_in(a)
    data = msg.Data("work", 1, 1, 1, DeliveryGuarantee.AT_LEAST_ONCE, 1)
    core.handle(envelope(a, data), 0.1)
    core.handle(ev.LeaveRequested(), 0.2)
    expired = core.handle(ev.TimerFired(), 0.2 + CONFIG.leave_timeout_s)
    assert [e.member.status for e in expired if isinstance(e, fx.MemberChanged)] == [
        MemberStatus.LEAVING
    ]
    assert core.counters["leave_handlers_unfinished"] == 1


def test_a_guaranteed_send_to_an_unknown_node_fails_with_a_reason() -> None:
    core = core_in(peer("a"))
    effects = core.handle(
        ev.SendRequested("ghost", "h", b"", DeliveryGuarantee.AT_LEAST_ONCE, 5, 1.0), 0.1
    )
    assert effects == [
        fx.Acknowledged(
            "ghost",
            ((5, AckStatus.FAILED, "'ghost' is not a member (unknown, left or removed)"),),
        )
    ]
