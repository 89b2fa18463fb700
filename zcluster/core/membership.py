"""The member table: merge rules, gossip queues, suspecters and the view digest.

Merge rule (see ``Member.supersedes``): a larger incarnation wins; at equal
incarnation a larger version wins; at equal version the later status in the
life cycle wins. Only a node itself bumps its own version (to go up, to
refute a suspicion, to leave); others may only move a record along the life
cycle at the version they saw. Every rule is a total order, so any two
nodes that have seen the same records hold the same table.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Iterable
from typing import Literal

from zcluster.core.rumors import Rumors
from zcluster.protocol.members import (
    MAX_SECOND_HAND_VERSION,
    MAX_VERSION,
    Member,
    MemberStatus,
)

MergeOutcome = Literal["applied", "stale", "refuted", "unrefutable", "conflict", "full", "reserved"]


class MembershipTable:
    """All members known to one node, itself included."""

    def __init__(
        self,
        me: Member,
        gossip_retransmit_count: int,
        max_count: int,
        suspecters_max_count: int = 1,
    ) -> None:
        self._gossip_budget = gossip_retransmit_count
        self._max_count = max_count
        self._suspecters_max = suspecters_max_count
        self._members: dict[str, Member] = {me.node_id: me}
        self._since: dict[str, float] = {me.node_id: 0.0}
        #: first-hand changes, for heartbeats: every member hears every heartbeat
        self.broadcast = Rumors()
        #: first-hand changes and what gossip brought, for probes and gossip (``swim``)
        self.relay = Rumors()
        #: who is known to suspect each SUSPECT member, at the version held
        self._suspecters: dict[str, list[str]] = {}
        #: members DOWN, LEFT or REMOVED: what expiry looks at, kept so it needs no scan
        self._dead: dict[str, None] = {}
        self._digest = _member_hash(me) if me.status.is_live else 0
        #: the last record of each purged member, oldest first
        self._forgotten: dict[str, Member] = {}
        self.me = me

    # ------------------------------------------------------------ queries

    def get(self, node_id: str) -> Member | None:
        return self._members.get(node_id)

    def __iter__(self) -> Iterable[Member]:
        return iter(self._members.values())

    def __len__(self) -> int:
        return len(self._members)

    def records(self) -> list[Member]:
        return list(self._members.values())

    def peers(self, *statuses: MemberStatus) -> list[Member]:
        """Other members, optionally only those in the given states."""
        me = self.me.node_id
        return [
            m
            for m in self._members.values()
            if m.node_id != me and (not statuses or m.status in statuses)
        ]

    @property
    def has_dead(self) -> bool:
        return bool(self._dead)

    def dead(self) -> list[Member]:
        """Other members DOWN, LEFT or REMOVED."""
        members = self._members
        return [members[node_id] for node_id in self._dead]

    def live_peers(self) -> list[Member]:
        me = self.me.node_id
        return [m for m in self._members.values() if m.node_id != me and m.status.is_live]

    def status_since(self, node_id: str) -> float:
        return self._since.get(node_id, 0.0)

    def suspecters(self, node_id: str) -> tuple[str, ...]:
        """The members known to suspect ``node_id`` at the SUSPECT record held."""
        return tuple(self._suspecters.get(node_id, ()))

    def digest(self) -> str:
        """A short hash of the live view; equal on nodes that agree on it.

        It covers members that are joining, up, suspect or leaving: which dead
        members a node still remembers is local housekeeping, not disagreement.
        It is the XOR of one hash per live member, so it does not depend on order
        and is kept up to date in O(1) per change.
        """
        return f"{self._digest:016x}"

    # ------------------------------------------------------------ changes

    def set_me(self, me: Member, now: float) -> Member:
        """Replace our own record (we own its version) and gossip it."""
        previous = self.me
        self.me = me
        self._store(me, now, previous, first_hand=True, relay=True)
        return previous

    def merge(
        self,
        record: Member,
        now: float,
        *,
        first_hand: bool = True,
        relay: bool = False,
        own_word: bool = True,
    ) -> tuple[MergeOutcome, Member | None]:
        """Merge one gossiped record. Returns the outcome and the record it replaced.

        Only ``first_hand`` news (a member telling us directly about itself, which
        nobody else may have heard) is queued for our heartbeats. Every member
        hears every heartbeat, so relaying what others broadcast would deliver each
        change n times to n nodes; a node that missed something finds out through
        the view digest in heartbeats and repairs it with a push-pull. Probes and
        gossip reach a few members each, so what they bring is passed on
        (``relay``), a bounded number of times; what a table exchange brings is
        not (each node repairs its own view), nor what a heartbeat brings (every
        member hears it).

        A record of another member not in its ``own_word`` at a version above
        MAX_SECOND_HAND_VERSION is refused ("reserved"): it was forged.
        """
        if record.node_id == self.me.node_id:
            return self._merge_about_me(record, now)
        if not own_word and record.version > MAX_SECOND_HAND_VERSION:
            return "reserved", None
        current = self._members.get(record.node_id)
        if current is None:
            forgotten = self._forgotten.get(record.node_id)
            if (
                forgotten is not None
                and not record.status.is_live
                and not record.supersedes(forgotten)
            ):
                # Stale news of a death we already processed and purged. (Live news of a
                # purged member is taken: it may be back after a long split; if it is
                # not, failure detection finds out again within seconds.)
                return "stale", None
            if len(self._members) >= self._max_count:
                return "full", None
        elif not record.supersedes(current):
            return "stale", None
        elif current.tags and not record.tags and record.incarnation == current.incarnation:
            # Tags are fixed for an incarnation: a record that passed through a node of an
            # earlier revision lost them, not the member.
            record = dataclasses.replace(record, tags=current.tags)
        self._store(record, now, current, first_hand=first_hand, relay=relay or first_hand)
        return "applied", current

    def merge_all(
        self,
        records: Iterable[Member],
        now: float,
        sender: str | None = None,
        *,
        relay: bool = False,
        queue_sender: bool = False,
    ) -> list[tuple[MergeOutcome, Member, Member | None]]:
        """Merge many records ``sender`` told us; returns only those that changed
        something (or were refused). What the sender says of itself is its own word,
        and with ``queue_sender`` first-hand news (a SYNC's, not a heartbeat's).

        Heartbeats repeat mostly known records, so the common "nothing new"
        case is checked inline before the full merge.
        """
        members, me = self._members, self.me.node_id
        changes: list[tuple[MergeOutcome, Member, Member | None]] = []
        for record in records:
            current = members.get(record.node_id)
            if (
                current is not None
                and record.incarnation == current.incarnation
                and record.version == current.version
                and record.status <= current.status
                and record.node_id != me
            ):
                continue
            own_word = record.node_id == sender
            outcome, previous = self.merge(
                record, now, first_hand=own_word and queue_sender, relay=relay, own_word=own_word
            )
            if outcome != "stale":
                changes.append((outcome, record, previous))
        return changes

    def mark(self, node_id: str, status: MemberStatus, now: float) -> Member | None:
        """Move another member along its life cycle at its current version.

        Returns the previous record, or None when nothing changed.
        """
        current = self._members.get(node_id)
        if current is None or node_id == self.me.node_id or status <= current.status:
            return None
        self._store(current.with_status(status), now, current, first_hand=True, relay=True)
        return current

    def add_suspecters(self, record: Member, names: Iterable[str]) -> None:
        """Note who suspects ``record``, if it is the SUSPECT record held; a new one queues
        the record again, so that the confirmations spread."""
        node_id = record.node_id
        if self._members.get(node_id) != record or record.status is not MemberStatus.SUSPECT:
            return
        known = self._suspecters.setdefault(node_id, [])
        added = False
        for name in names:
            if name not in known and len(known) < self._suspecters_max:
                known.append(name)
                added = True
        if added:
            self.relay.put(node_id, self._relay_budget())

    def purge(self, node_id: str) -> None:
        if node_id != self.me.node_id:
            gone = self._members.pop(node_id, None)
            if gone is not None:
                if gone.status.is_live:
                    self._digest ^= _member_hash(gone)
                # Remember what we purged, so stale gossip cannot bring it back (bounded).
                self._forgotten[node_id] = gone
                if len(self._forgotten) > self._max_count:
                    self._forgotten.pop(next(iter(self._forgotten)))
            self._since.pop(node_id, None)
            self._suspecters.pop(node_id, None)
            self._dead.pop(node_id, None)
            self.broadcast.discard(node_id)
            self.relay.discard(node_id)

    def take_broadcast(self, limit: int) -> list[Member]:
        """Records to piggyback on the next heartbeat, least-sent first."""
        return self._take(self.broadcast, limit)

    def take_relay(self, limit: int) -> list[Member]:
        """Records to piggyback on the next probe or gossip message, least-sent first."""
        return self._take(self.relay, limit)

    # ------------------------------------------------------------ internals

    def _merge_about_me(self, record: Member, now: float) -> tuple[MergeOutcome, Member | None]:
        me = self.me
        if record.incarnation > me.incarnation:
            return "conflict", None  # another live process claims our node id
        if record.incarnation < me.incarnation or not record.supersedes(me):
            return "stale", None
        if me.status in (MemberStatus.LEAVING, MemberStatus.LEFT):
            return "stale", None
        # Someone suspects us, or believes us down or removed: refute with a newer version.
        if record.version >= MAX_VERSION:
            # No newer version exists to refute it with (such a record is forged: no node
            # counts that far); told, and kept out of our own record, which stays sendable.
            return "unrefutable", None
        refuted = dataclasses.replace(me, version=record.version + 1)
        self.set_me(refuted, now)
        return "refuted", me

    def _store(
        self, record: Member, now: float, previous: Member | None, *, first_hand: bool, relay: bool
    ) -> None:
        node_id = record.node_id
        stored = self._members.get(node_id)
        if stored is not None and stored.status.is_live:
            self._digest ^= _member_hash(stored)
        if record.status.is_live:
            self._digest ^= _member_hash(record)
        self._members[node_id] = record
        self._forgotten.pop(node_id, None)
        self._suspecters.pop(node_id, None)
        if record.status.is_live or record is self.me:
            self._dead.pop(node_id, None)
        else:
            self._dead[node_id] = None
        if previous is None or previous.status != record.status:
            self._since[node_id] = now
        # What we queued earlier is outdated either way.
        if first_hand:
            self.broadcast.put(node_id, self._gossip_budget)
        else:
            self.broadcast.discard(node_id)
        if relay:
            self.relay.put(node_id, self._relay_budget())
        else:
            self.relay.discard(node_id)

    def _take(self, rumors: Rumors, limit: int) -> list[Member]:
        if not rumors:
            return []
        members = self._members
        return [members[node_id] for node_id in rumors.take(limit)]

    def _relay_budget(self) -> int:
        """Sends of each relayed record: enough for an epidemic to reach every member
        with high probability, ``gossip_retransmit_count * ceil(log10(members + 1))``."""
        return self._gossip_budget * max(1, math.ceil(math.log10(len(self._members) + 1)))


_STATUS_NAMES = {status: str(status) for status in MemberStatus}


def _member_hash(member: Member) -> int:
    """64-bit BLAKE2b of what the view digest covers: id, incarnation, status, address."""
    line = (
        f"{member.node_id}\x00{member.incarnation}\x00"
        f"{_STATUS_NAMES[member.status]}\x00{member.address}\n"
    )
    return int.from_bytes(hashlib.blake2b(line.encode(), digest_size=8).digest(), "big")
