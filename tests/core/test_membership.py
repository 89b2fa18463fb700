"""The member table's merge rules, as properties: order never matters."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from zcluster.core.membership import MembershipTable
from zcluster.core.peers import Peers
from zcluster.protocol.members import Member, MemberStatus

ME = Member("me", 100, 3, MemberStatus.UP, "10.0.0.1:1", "10.0.0.1:2")
STATUSES = list(MemberStatus)


def _record(node_id: str, incarnation: int, version: int, status: MemberStatus) -> Member:
    # One process run (node id + incarnation) has one address, as on a real network.
    host = f"10.{ord(node_id)}.{incarnation}.1"
    return Member(node_id, incarnation, version, status, f"{host}:7000", f"{host}:7001")


records = st.builds(
    _record,
    st.sampled_from(["a", "b", "c", "d"]),
    st.integers(1, 3),
    st.integers(0, 3),
    st.sampled_from(STATUSES),
)


def table_after(updates: list[Member]) -> MembershipTable:
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    for record in updates:
        table.merge(record, now=0.0)
    return table


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=12), st.randoms(use_true_random=False))
def test_any_order_of_the_same_records_gives_the_same_live_view(
    updates: list[Member], rng: object
) -> None:
    shuffled = list(updates)
    rng.shuffle(shuffled)  # type: ignore[attr-defined]
    first, second = table_after(updates), table_after(shuffled)

    def live(table: MembershipTable) -> dict[str, Member]:
        return {m.node_id: m for m in table.records() if m.status.is_live}

    assert live(first) == live(second)
    assert first.digest() == second.digest()


@settings(max_examples=300, deadline=None)
@given(st.lists(records, max_size=12))
def test_the_incrementally_kept_digest_equals_one_computed_from_scratch(
    updates: list[Member],
) -> None:
    table = table_after(updates)
    fresh = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    for record in table.records():
        if record.node_id != ME.node_id and record.status.is_live:
            fresh.merge(record, now=0.0)
    assert table.digest() == fresh.digest()


def test_hearing_a_suspicion_about_ourselves_is_refuted_with_a_newer_version() -> None:
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    outcome, previous = table.merge(ME.with_status(MemberStatus.SUSPECT), now=1.0)
    assert outcome == "refuted" and previous == ME
    assert table.me.status is MemberStatus.UP and table.me.version == ME.version + 1
    assert table.take_broadcast(10) == [table.me]


def test_a_larger_incarnation_of_our_id_is_a_conflict_not_an_update() -> None:
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    impostor = Member("me", ME.incarnation + 1, 0, MemberStatus.UP, "10.0.0.7:1", "10.0.0.7:2")
    assert table.merge(impostor, now=0.0) == ("conflict", None)
    assert table.me == ME


def test_purged_members_are_not_resurrected_by_stale_gossip() -> None:
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    x = Member("x", 1, 1, MemberStatus.UP, "10.0.0.5:1", "10.0.0.5:2")
    table.merge(x, now=0.0)
    table.mark("x", MemberStatus.REMOVED, now=1.0)
    table.purge("x")
    assert table.get("x") is None
    assert table.merge(x.with_status(MemberStatus.DOWN), now=2.0)[0] == "stale"
    restarted = Member("x", 2, 1, MemberStatus.JOINING, "10.0.0.5:1", "10.0.0.5:2")
    assert table.merge(restarted, now=3.0)[0] == "applied"


def test_the_table_is_bounded() -> None:
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=2)
    x = Member("x", 1, 1, MemberStatus.UP, "10.0.0.5:1", "10.0.0.5:2")
    assert table.merge(x, now=0.0)[0] == "applied"
    another = Member("y", 1, 1, MemberStatus.UP, "10.0.0.6:1", "10.0.0.6:2")
    assert table.merge(another, now=0.0)[0] == "full"


def test_only_first_hand_news_is_queued_for_gossip() -> None:
    table = MembershipTable(ME, gossip_retransmit_count=2, max_count=100)
    heard = Member("x", 1, 1, MemberStatus.UP, "10.0.0.5:1", "10.0.0.5:2")
    told = Member("y", 1, 1, MemberStatus.JOINING, "10.0.0.6:1", "10.0.0.6:2")
    table.merge_all([heard], now=0.0, sender="z", queue_sender=True)
    table.merge_all([told], now=0.0, sender="y", queue_sender=True)
    assert table.take_broadcast(10) == [told]
    assert table.take_broadcast(10) == [told]
    assert table.take_broadcast(10) == []
    assert table.mark("x", MemberStatus.SUSPECT, now=1.0) == heard  # our own verdict: gossiped
    assert [m.node_id for m in table.take_broadcast(10)] == ["x"]


def test_announcements_of_live_members_outlast_those_of_departed_ones() -> None:
    """Past the bound, what is forgotten first is what departed incarnations announced,
    however long ago live members last announced (swim members announce only on sync)."""
    table = MembershipTable(ME, gossip_retransmit_count=4, max_count=100)
    peers = Peers(table, ("fields", "swim"), max_count=3)
    live = _record("a", 1, 0, MemberStatus.UP)
    table.merge(live, now=0.0)
    peers.announced("a", 1, ("fields", "swim"))
    for n in range(10):  # one-off clients: they announce, then their records are purged
        peers.announced(f"client-{n}", 1, ("fields",))
    assert peers.capabilities_of("a") == ("fields", "swim")
    assert peers.speaks_swim("a")
    # every one announced is a live member: the oldest goes
    for node_id in ("b", "c", "d"):
        table.merge(_record(node_id, 1, 0, MemberStatus.UP), now=0.0)
        peers.announced(node_id, 1, ("fields",))
    assert peers.capabilities_of("a") is None
    assert [peers.capabilities_of(n) for n in "bcd"] == [("fields",)] * 3
