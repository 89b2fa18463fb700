"""Member records and their states."""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping


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

#: the largest version a record may carry (an unsigned 64-bit integer on the wire): a
#: node saturates its own version there rather than send one the wire cannot carry
MAX_VERSION = 2**64 - 1
#: versions above this are reserved for a member's own word: a record of a member heard
#: from anyone else at a higher version is refused. No node counts that far (one per
#: change), so a forged record can bring a member's version at most here, where the
#: member can still refute 2^32 times over (its refutations, in its own word, are taken)
MAX_SECOND_HAND_VERSION = MAX_VERSION - 2**32
#: a member's tags: at most this many, keys and values text of at most these lengths
MAX_TAGS_COUNT = 32
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 256
#: tags as a record holds them: ``(key, value)`` pairs sorted by key
Tags = tuple[tuple[str, str], ...]


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
    #: what the node says about itself (``role=worker``), fixed for its incarnation
    tags: Tags = ()

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
            "tags": dict(self.tags),
        }

    def has_tags(self, wanted: Mapping[str, str]) -> bool:
        """Whether the member carries every ``key=value`` of ``wanted``."""
        mine = dict(self.tags)
        return all(mine.get(key) == value for key, value in wanted.items())


def checked_tags(tags: Mapping[str, str] | None) -> Tags:
    """Tags as a record holds them; ValueError for tags a record cannot carry."""
    if not tags:
        return ()
    if len(tags) > MAX_TAGS_COUNT:
        raise ValueError(f"at most {MAX_TAGS_COUNT} tags, got {len(tags)}")
    for key, value in tags.items():
        if type(key) is not str or not 0 < len(key) <= MAX_TAG_KEY_CHARS:
            raise ValueError(f"a tag key must be text of 1 to {MAX_TAG_KEY_CHARS} characters")
        if type(value) is not str or len(value) > MAX_TAG_VALUE_CHARS:
            raise ValueError(
                f"tag {key!r}: a value must be text of at most {MAX_TAG_VALUE_CHARS} characters"
            )
    return tuple(sorted(tags.items()))
