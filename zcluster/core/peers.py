"""What each member announced it understands, and which live peers speak ``swim`` with us.

A member's capabilities are those its current incarnation announced: in the
payload of its own HEARTBEATs and SYNCs (first-hand, authoritative), or as
relayed by other members in gossip and SYNC (taken only while nothing is known
of that incarnation). Live peers fall in two groups, kept current in O(1) per
change: those known to speak ``swim`` (probed at random, in rounds) and the
others, for whom the node heartbeats on its PUB and whose silence it watches.
Whether every member reads publications sent in one frame is decided here too,
again only after a change.
"""

from __future__ import annotations

import random

from zcluster.core.membership import MembershipTable
from zcluster.protocol.capabilities import BATCH, FIELDS, ONE_FRAME, SWIM
from zcluster.protocol.members import Member
from zcluster.protocol.messages import Announcement, Capabilities


class Peers:
    def __init__(self, table: MembershipTable, own: Capabilities, max_count: int) -> None:
        self._table = table
        self._max_count = max_count
        #: what this node announces; one that does not speak swim treats every peer as such
        self._own = own
        self._swim_here = SWIM in own
        #: each member's capabilities, with the incarnation that announced them
        self._announced: dict[str, tuple[int, Capabilities]] = {}
        #: live peers known to speak swim, in a list for random choices (swap-removed)
        self._swim: list[str] = []
        self._swim_index: dict[str, int] = {}
        #: live peers not known to speak swim
        self._others: dict[str, None] = {}
        #: whether every member reads one-frame publications (recomputed after changes)
        self._one_frame = False
        self._tags = False
        self._one_frame_stale = True

    # ------------------------------------------------------------ queries

    def capabilities_of(self, node_id: str) -> Capabilities | None:
        """What the member's current incarnation announced (None: nothing heard yet)."""
        member = self._table.get(node_id)
        if member is None:
            return None
        if member is self._table.me:
            return self._own
        return self._of(member)

    def speaks_swim(self, node_id: str) -> bool:
        """A live peer whose current incarnation announced ``swim``."""
        return node_id in self._swim_index

    def announced_swim(self, node_id: str) -> bool:
        """Both speak swim: this node, and the member's current incarnation (live or not)."""
        if not self._swim_here:
            return False
        # A live peer's answer is at hand (every probe message asks it)
        return node_id in self._swim_index or SWIM in (self.capabilities_of(node_id) or ())

    def reads_batches(self, node_id: str) -> bool:
        """The member's current incarnation announced ``batch`` (DATA_BATCH)."""
        return BATCH in (self.capabilities_of(node_id) or ())

    def lacks(self, node_id: str, capability: str) -> bool:
        """The member's current incarnation announced its set, without ``capability``
        (one not heard from yet may have it: it is not said to lack it)."""
        known = self.capabilities_of(node_id)
        return known is not None and capability not in known

    def reads_extra_fields(self, node_id: str) -> bool:
        """The member's current incarnation announced ``fields`` (optional fields)."""
        return FIELDS in (self.capabilities_of(node_id) or ())

    @property
    def one_frame_publications(self) -> bool:
        """Whether publications may go out in one frame: every member we know of, but
        those gone for good, announced ONE_FRAME (docs/protocol.md 9.4: PUB is read by
        all). Computed again only after a membership or capability change."""
        if self._one_frame_stale:
            self._recompute()
        return self._one_frame

    @property
    def records_carry_tags(self) -> bool:
        """Whether member records may carry their tags (a seventh field, revision 1.4):
        every member we know of, but those gone for good, announced ``fields`` (reads
        extra record fields). Computed again only after a change, as above."""
        if self._one_frame_stale:
            self._recompute()
        return self._tags

    def _recompute(self) -> None:
        self._one_frame_stale = False
        me, of = self._table.me.node_id, self._of
        known = [
            of(member) or ()
            for member in self._table.records()
            if member.node_id != me and not member.status.is_gone
        ]
        self._one_frame = all(ONE_FRAME in caps for caps in known)
        self._tags = all(FIELDS in caps for caps in known)

    @property
    def swim(self) -> list[str]:
        """Live peers that speak swim (do not change the list)."""
        return self._swim

    @property
    def others(self) -> dict[str, None]:
        """Live peers not known to speak swim: they need heartbeats (do not change it)."""
        return self._others

    def sample_swim(self, rng: random.Random, count: int, *, besides: str = "") -> list[str]:
        """Up to ``count`` random live peers that speak swim, other than ``besides``."""
        pool = self._swim
        drawn = rng.sample(pool, min(count + 1, len(pool)))  # one spare, in case of besides
        return [n for n in drawn if n != besides][:count]

    def record_capabilities(self, member: Member) -> Capabilities:
        """What the incarnation of ``member`` announced, as gossip carries it (empty: not
        known)."""
        if member.node_id == self._table.me.node_id:
            return self._own
        return self._of(member) or ()

    def announcements(self) -> tuple[Announcement, ...]:
        """Every member's known capabilities, for a SYNC."""
        out: list[Announcement] = []
        for member in self._table.records():
            caps = self.record_capabilities(member)
            if caps:
                out.append((member.node_id, member.incarnation, caps))
        return tuple(out)

    # ------------------------------------------------------------ changes

    def announced(self, node_id: str, incarnation: int, capabilities: Capabilities) -> None:
        """The member itself announced its set (empty: it has none)."""
        known = self._announced.get(node_id)
        if known is None or known[0] <= incarnation:  # a late message of an earlier life
            self._set(node_id, incarnation, capabilities)

    def relayed(self, node_id: str, incarnation: int, capabilities: Capabilities) -> None:
        """Another member says what ``node_id``'s incarnation announced."""
        known = self._announced.get(node_id)
        if capabilities and (known is None or known[0] < incarnation):
            self._set(node_id, incarnation, capabilities)

    def member_changed(self, member: Member) -> None:
        """Keep the groups current: call on every change of a record."""
        self._one_frame_stale = True
        self._regroup(member)

    def forget(self, node_id: str) -> None:
        """The member's record was purged. (What it announced is kept, as the table keeps
        its last record: the same incarnation may be back, and will not announce again.)"""
        self._one_frame_stale = True
        self._drop_swim(node_id)
        self._others.pop(node_id, None)

    # ------------------------------------------------------------ internals

    def _regroup(self, member: Member) -> None:
        node_id = member.node_id
        if node_id == self._table.me.node_id:
            return
        swim = self._swim_here and SWIM in (self._of(member) or ())
        live = member.status.is_live
        if live and swim:
            self._others.pop(node_id, None)
            if node_id not in self._swim_index:
                self._swim_index[node_id] = len(self._swim)
                self._swim.append(node_id)
            return
        self._drop_swim(node_id)
        if live:
            self._others[node_id] = None
        else:
            self._others.pop(node_id, None)

    def _of(self, member: Member) -> Capabilities | None:
        known = self._announced.get(member.node_id)
        if known is None or known[0] != member.incarnation:
            return None
        return known[1]

    def _set(self, node_id: str, incarnation: int, capabilities: Capabilities) -> None:
        announced = self._announced
        known = announced.pop(node_id, None)
        announced[node_id] = (incarnation, capabilities)
        if known != (incarnation, capabilities):  # heartbeats repeat the same set
            self._one_frame_stale = True
        if len(announced) > self._max_count:
            self._forget_one()
        member = self._table.get(node_id)
        if member is not None:
            self._regroup(member)

    def _forget_one(self) -> None:
        """Forget the announcement heard longest ago of an incarnation the table no longer
        holds (purged, restarted since), else the one heard longest ago. Members that speak
        swim announce only when they sync, so age alone would pick live members first
        once short-lived ones (one-off clients) filled the map: they would look like
        members that announced nothing (heartbeats, three-frame publications)."""
        announced, table = self._announced, self._table
        for node_id, (incarnation, _) in announced.items():
            member = table.get(node_id)
            if member is None or member.incarnation != incarnation:
                del announced[node_id]
                return
        del announced[next(iter(announced))]

    def _drop_swim(self, node_id: str) -> None:
        index = self._swim_index.pop(node_id, None)
        if index is None:
            return
        last = self._swim.pop()
        if last != node_id:
            self._swim[index] = last
            self._swim_index[last] = index
