"""Member records and their states."""

from __future__ import annotations

import dataclasses
import enum


class MemberStatus(enum.IntEnum):
    """Life cycle of a member. The order is the precedence of gossip at equal version."""

    JOINING = 0
    UP = 1
    SUSPECT = 2
    LEAVING = 3
    DOWN = 4
    LEFT = 5
    REMOVED = 6

    def __str__(self) -> str:
        return self.name.lower()

    @property
    def is_live(self) -> bool:
        """A live member is connected to and expected to answer."""
        return self in _LIVE

    @property
    def is_gone(self) -> bool:
        """Gone for good: it left, or its record was removed (a restart is a new life)."""
        return self in _GONE


_LIVE = frozenset(
    {MemberStatus.JOINING, MemberStatus.UP, MemberStatus.SUSPECT, MemberStatus.LEAVING}
)
_GONE = frozenset({MemberStatus.LEFT, MemberStatus.REMOVED})


@dataclasses.dataclass(frozen=True, slots=True)
class Member:
    """One node as seen in the membership view.

    ``incarnation`` identifies one process run of ``node_id`` (a restart gets a
    larger one); ``version`` is bumped by the node itself when it changes its
    own state or refutes a suspicion.
    """

    node_id: str
    incarnation: int
    version: int
    status: MemberStatus
    address: str
    pub_address: str

    def supersedes(self, other: Member) -> bool:
        """Whether this record replaces ``other`` (same node) when gossip merges."""
        if self.incarnation != other.incarnation:
            return self.incarnation > other.incarnation
        if self.version != other.version:
            return self.version > other.version
        return self.status > other.status

    def with_status(self, status: MemberStatus) -> Member:
        return dataclasses.replace(self, status=status)

    def as_dict(self) -> dict[str, object]:
        return {
            "node_id": self.node_id,
            "address": self.address,
            "pub_address": self.pub_address,
            "status": str(self.status),
            "incarnation": self.incarnation,
            "version": self.version,
        }
