"""The core's contract between members that speak swim (protocol revision 1.2), event in,
effects out: probes in rounds, indirect probes and NACKs, suspicion and its confirmations,
gossip on probes, local health, heartbeats only for members that need them, beacons."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster import NodeConfig
from zcluster.core import effects as fx
from zcluster.core import events as ev
from zcluster.core.node import NodeCore
from zcluster.core.prober import RoundRobin
from zcluster.core.rumors import Rumors
from zcluster.core.suspicion import Suspicions
from zcluster.protocol import messages as msg
from zcluster.protocol.capabilities import FIELDS, SUPPORTED
from zcluster.protocol.members import Member, MemberStatus

CONFIG = NodeConfig()
TICK = CONFIG.tick_interval_s
DIGEST = "0" * 16


def peer(node_id: str, incarnation: int = 7, status: MemberStatus = MemberStatus.UP) -> Member:
    port = 7000 + 10 * (ord(node_id[-1]) - ord("a"))
    return Member(node_id, incarnation, 1, status, f"10.0.0.2:{port}", f"10.0.0.2:{port + 1}")


def envelope(sender: Member, message: msg.Message, seq: int = 1) -> ev.EnvelopeReceived:
    return ev.EnvelopeReceived(msg.Envelope(sender.node_id, sender.incarnation, seq, message), b"")


def core_in(*peers: Member, capabilities: msg.Capabilities = SUPPORTED) -> NodeCore:
    """A core that formed a cluster at time 0, then heard of ``peers``, all UP and all
    announcing ``capabilities`` (as a seed's SYNC answer would tell)."""
    core = NodeCore("me", 1, "10.0.0.1:7000", "10.0.0.1:7001", config=CONFIG, rng=random.Random(3))
    core.handle(ev.Started(), 0.0)
    known = tuple((p.node_id, p.incarnation, capabilities) for p in peers)
    sync = msg.Sync((core.me, *peers), False, peers[0].address, capabilities, known)
    core.handle(envelope(peers[0], sync), 0.0)
    return core


def sends(effects: list[fx.Effect], kind: type[msg.Message]) -> list[fx.Send]:
    return [e for e in effects if isinstance(e, fx.Send) and isinstance(e.message, kind)]


PEERS = tuple(peer(name) for name in "abcdef")
BY_ADDRESS = {p.address: p for p in PEERS}


def run(core: NodeCore, start: float, end: float, *, answer: bool = True) -> list[fx.Effect]:
    """Tick from ``start`` to ``end``; every effect in order. With ``answer``, every peer
    answers every PING at once, as live members do."""
    out: list[fx.Effect] = []
    now, seq = start, 100
    while now <= end + 1e-9:
        effects = core.handle(ev.TimerFired(), now)
        out += effects
        for ping in sends(effects, msg.Ping) if answer else ():
            target = BY_ADDRESS.get(ping.address)
            if target is not None:
                seq += 1
                probe_id = ping.message.probe_id  # type: ignore[union-attr]
                out += core.handle(envelope(target, msg.Ack(probe_id, target.node_id), seq), now)
        now += CONFIG.tick_interval_s
    return out


def test_no_heartbeat_while_every_member_speaks_swim() -> None:
    core = core_in(*PEERS)
    effects = run(core, 0.05, 2.0)
    heartbeats = [e for e in effects if isinstance(e, fx.Publish) and e.topic is None]
    assert heartbeats, "no personal heartbeats: the peers never listened"
    assert all(e.message.to is not None for e in heartbeats), "a heartbeat went to everyone"  # type: ignore[union-attr]
    assert not [e for e in effects if isinstance(e, fx.MemberChanged)]
    # A member of an earlier revision appears: heartbeats to everyone, as before.
    old = peer("g")
    core.handle(envelope(old, msg.Sync((old,), False, old.address, (FIELDS,))), 2.0)
    effects = run(core, 2.05, 2.5)
    everyone = [e for e in effects if isinstance(e, fx.Publish) and e.topic is None]
    assert everyone and all(e.message.to is None for e in everyone)  # type: ignore[union-attr]


def test_each_member_is_probed_once_per_round() -> None:
    core = core_in(*PEERS)
    effects = run(core, 0.05, CONFIG.probe_interval_s * len(PEERS) - 0.01)
    targets = [e.address for e in sends(effects, msg.Ping)]
    assert sorted(targets) == sorted(p.address for p in PEERS)
    assert core.counters["probes_sent"] == len(PEERS)


def test_an_unanswered_probe_goes_indirect_then_suspects_and_nacks_spare_health() -> None:
    core = core_in(*PEERS)
    first = sends(core.handle(ev.TimerFired(), 0.05), msg.Ping)[0]
    ping = first.message
    assert isinstance(ping, msg.Ping) and ping.view is not None  # the swim form, with gossip
    target = next(p for p in PEERS if p.address == first.address)
    later = run(core, 0.1, 0.05 + CONFIG.direct_probe_timeout_s + TICK)
    requests = sends(later, msg.PingReq)
    assert len(requests) == CONFIG.indirect_probe_count
    assert {r.message.target for r in requests} == {target.node_id}  # type: ignore[union-attr]
    for request in requests:  # every helper says it got no answer either
        helper = next(p for p in PEERS if p.address == request.address)
        core.handle(envelope(helper, msg.Nack(ping.probe_id, target.node_id), seq=9), 0.3)
    changes = [
        e
        for e in run(core, 0.3, 0.05 + CONFIG.probe_timeout_s + TICK)
        if isinstance(e, fx.MemberChanged) and e.member.node_id == target.node_id
    ]
    assert [c.member.status for c in changes] == [MemberStatus.SUSPECT]
    assert core.table.suspecters(target.node_id) == ("me",)
    assert core.detection.health.score == 0, "helpers answered: the target is the silent one"


def test_missing_nacks_make_the_prober_slower() -> None:
    core = core_in(*PEERS)
    core.handle(ev.TimerFired(), 0.05)
    run(core, 0.1, 0.05 + CONFIG.probe_timeout_s + TICK, answer=False)  # no answer at all
    score = core.detection.health.score
    assert score >= CONFIG.indirect_probe_count  # a probe and its helpers went unanswered
    pings = sends(run(core, 0.55, 2.05), msg.Ping)
    # Probes now go out every (1 + score) intervals at most ...
    assert len(pings) <= 1 + 1.5 / (CONFIG.probe_interval_s * (1 + score))
    # ... and each answered one lowers the score, back to normal.
    run(core, 2.1, 30.0)
    assert core.detection.health.score == 0


def test_hearing_the_member_answers_a_probe_whose_ack_was_lost() -> None:
    core = core_in(*PEERS)
    first = sends(core.handle(ev.TimerFired(), 0.05), msg.Ping)[0]
    target = next(p for p in PEERS if p.address == first.address)
    core.handle(envelope(target, msg.Ping(5, target.address, (), DIGEST)), 0.2)
    effects = run(core, 0.25, 1.0)
    assert not [e for e in effects if isinstance(e, fx.MemberChanged)]


def test_a_suspect_hears_of_its_suspicion_first_and_refutes() -> None:
    core = core_in(*PEERS)
    a = PEERS[0]
    suspected = Member(
        a.node_id, a.incarnation, a.version, MemberStatus.SUSPECT, a.address, a.pub_address
    )
    news = (msg.News(suspected, SUPPORTED, ("b",)),)
    core.handle(envelope(PEERS[1], msg.Gossip(news, DIGEST)), 0.1)
    assert core.member("a") == suspected
    # Whatever goes to "a" next carries its own record first: it can refute at once.
    answer = sends(
        core.handle(envelope(a, msg.Ping(3, a.address, (), DIGEST), seq=2), 0.2), msg.Ack
    )
    assert answer[0].message.news[0].member == suspected  # type: ignore[union-attr]
    # And this node, hearing itself suspected, refutes with a newer version and feels slower.
    me = core.me
    about_me = Member(
        "me", me.incarnation, me.version, MemberStatus.SUSPECT, me.address, me.pub_address
    )
    core.handle(envelope(PEERS[2], msg.Gossip((msg.News(about_me, (), ("c",)),), DIGEST)), 0.3)
    assert core.me.version == me.version + 1 and core.me.status is MemberStatus.UP
    assert core.detection.health.score == 1


def test_confirmations_shorten_the_suspicion() -> None:
    suspicions = Suspicions(CONFIG)
    lo, hi = CONFIG.suspect_timeout_s, CONFIG.suspect_timeout_max_s
    assert suspicions.timeout_s(100, 1) == pytest.approx(hi)
    assert suspicions.timeout_s(100, 1 + CONFIG.suspect_confirmations_count) == pytest.approx(lo)
    assert lo < suspicions.timeout_s(100, 2) < hi
    # Too few members to confirm: the shortest at once (two members), or sooner (three).
    assert suspicions.timeout_s(2, 1) == pytest.approx(lo)
    assert suspicions.timeout_s(3, 2) == pytest.approx(lo)


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 5000), st.integers(1, 10), st.integers(0, 5))
def test_more_confirmations_never_lengthen_a_suspicion(members: int, known: int, more: int) -> None:
    suspicions = Suspicions(CONFIG)
    lo, hi = CONFIG.suspect_timeout_s, CONFIG.suspect_timeout_max_s
    shorter = suspicions.timeout_s(members, known + more)
    assert lo <= shorter <= suspicions.timeout_s(members, known) <= hi


def test_news_is_relayed_a_bounded_number_of_times_then_stops() -> None:
    core = core_in(*PEERS)
    run(core, 0.05, 3.0)  # what the join taught this node has been passed on
    c = PEERS[2]
    refuted = Member(c.node_id, c.incarnation, 2, c.status, c.address, c.pub_address)
    core.handle(envelope(PEERS[1], msg.Gossip((msg.News(refuted, SUPPORTED, ()),), DIGEST)), 3.0)
    effects = run(core, 3.05, 5.0)
    carried = [
        e
        for e in effects
        if isinstance(e, fx.Send) and refuted in [n.member for n in getattr(e.message, "news", ())]
    ]
    # gossip_retransmit_count * ceil(log10(8 members + 1))
    assert len(carried) == CONFIG.gossip_retransmit_count
    assert not sends(run(core, 5.05, 6.0), msg.Gossip), "gossip goes on with nothing new"


def test_a_new_member_gets_personal_heartbeats_until_it_listens() -> None:
    core = core_in(*PEERS)
    newcomer = peer("x")
    core.handle(envelope(newcomer, msg.Sync((newcomer,), True, newcomer.address, SUPPORTED)), 1.0)

    def to_newcomer(effects: list[fx.Effect]) -> list[fx.Publish]:
        return [
            e
            for e in effects
            if isinstance(e, fx.Publish)
            and isinstance(e.message, msg.Heartbeat)
            and e.message.to == "x"
        ]

    assert len(to_newcomer(run(core, 1.05, 1.05 + 3 * CONFIG.listen_retry_s))) == 3
    core.handle(envelope(newcomer, msg.Listen(()), seq=2), 2.6)
    assert to_newcomer(run(core, 2.65, 4.0)) == []


def test_numbered_topics_are_beaconed_under_their_own_frames() -> None:
    core = core_in(*PEERS)
    core.handle(ev.PublishRequested("prices", b"1", msg.DeliveryGuarantee.AT_LEAST_ONCE), 0.1)
    core.handle(ev.PublishRequested("news", b"x", msg.DeliveryGuarantee.AT_MOST_ONCE), 0.1)
    beacons = [
        (e.topic, e.message.seq)
        for e in run(core, 0.15, 0.3)
        if isinstance(e, fx.Publish) and isinstance(e.message, msg.Beacon)
    ]
    assert beacons == [("prices", 1)]


def test_rumors_take_the_least_sent_first() -> None:
    rumors = Rumors()
    rumors.put("a", 3)
    rumors.put("b", 1)
    rumors.put("c", 3)
    assert rumors.take(2) == ["a", "c"]
    assert rumors.take(10) == ["a", "c", "b"]  # all at 2 or 1 left now
    assert rumors.take(10) == ["a", "c"]
    assert rumors.take(10) == []
    assert len(rumors) == 0 and rumors.take(0) == []


@pytest.mark.parametrize("seed", range(20))
def test_a_member_that_flaps_before_its_turn_is_probed_once_in_the_round(seed: int) -> None:
    """A member that goes and comes back (or is announced twice) while its turn is still
    to come keeps its one place in the round: never probed twice in one round."""
    rounds, members = RoundRobin(random.Random(seed)), ["a", "b", "c"]
    first = rounds.next(members, lambda _: True)
    pending = set(members) - {first}
    for node_id in sorted(pending):
        rounds.added(node_id)  # down and up again before its turn
        rounds.added(node_id)
    rest = [rounds.next(members, lambda _: True) for _ in range(2)]
    assert set(rest) == pending
    next_round = [rounds.next(members, lambda _: True) for _ in range(3)]
    assert sorted(next_round) == members  # (a second copy would have come first)
